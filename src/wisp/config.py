"""Configuration: ``wisp.toml`` plus ``WISP_*`` environment variables.

The ``[wisp]`` table configures the kernel; every other table belongs to the
plugin that declares it through ``wisp_config_sections`` and is structured with
cattrs into that plugin's attrs class.  The environment wins over the file:
``WISP_KEY`` for a kernel key, ``WISP_SECTION__KEY`` for a plugin's (a further
``__`` descends into a nested table).  Every bad key is reported at once with
its path, the expected type, the given value and where it came from.
"""

from __future__ import annotations

import enum
import json
import os
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

import attrs
import cattrs

from wisp.errors import ConfigError

__all__ = [
    "CONFIG_FILE",
    "Config",
    "ConfigSource",
    "CoreConfig",
    "find_rootdir",
    "not_negative",
    "positive",
    "redact",
]

CONFIG_FILE = "wisp.toml"
CORE_SECTION = "wisp"
T = TypeVar("T")

_SECRET_NAME = re.compile(r"(token|password|passwd|secret|api_key|apikey|credential)", re.I)
_URL_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][\w+.-]*://[^:/@\s]*:)(?P<pw>[^@\s]+)(?P<at>@)")
REDACTED = "***"


def positive(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    """attrs validator for sizes, counts and durations: greater than 0, or ``None``
    (unset).  The message names the field for classes built in code; the config
    loader names ``section.key`` itself and drops that name."""
    if value is not None and not value > 0:
        raise ValueError(f"{attribute.name} must be greater than 0")


def not_negative(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    """attrs validator for margins, reserves and retry counts: 0 or more, or ``None``
    (written so that NaN fails too)."""
    if value is not None and not value >= 0:
        raise ValueError(f"{attribute.name} must be 0 or more")


def _log_level(_: Any, attribute: attrs.Attribute[str], value: str) -> None:
    levels = ("TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR", "CRITICAL")
    if value.upper() not in levels:
        raise ValueError(f"must be one of {', '.join(levels)}")


def _requirements(_: Any, attribute: attrs.Attribute[list[str]], value: list[str]) -> None:
    from wisp.metadata import parse_requirement

    for item in value:
        parse_requirement(item, "")


@attrs.frozen
class CoreConfig:
    """The ``[wisp]`` table: how the kernel loads plugins and logs."""

    #: Plugin names to block, like ``-p no:NAME``.
    disable: list[str] = attrs.field(
        factory=list, metadata={"env": "WISP_DISABLE_PLUGINS", "merge": True}
    )
    #: Extra plugins to load (entry-point names or dotted modules), like ``-p``.
    plugins: list[str] = attrs.field(factory=list, metadata={"env": "WISP_PLUGINS", "merge": True})
    #: Load every installed ``wisp`` entry point.
    autoload: bool = attrs.field(
        default=True, metadata={"env": "WISP_DISABLE_PLUGIN_AUTOLOAD", "env_invert": True}
    )
    #: Make any plugin failure fatal at start-up.
    strict_plugins: bool = False
    #: Plugins the bot needs, with version ranges: ``["wisp-foo>=1.2", "jobs"]``.
    required_plugins: list[str] = attrs.field(factory=list, validator=_requirements)
    #: Folders (relative to the project directory) holding command files.
    command_paths: list[str] = attrs.field(factory=list)
    log_level: str = attrs.field(default="INFO", validator=_log_level)
    log_format: Literal["text", "json"] = "text"
    #: Log every hook call and middleware step with its duration.
    trace: bool = False
    #: The cyclic GC's first threshold while the app serves (unset: Python's 700).
    #: A busy worker frees most per-event objects by refcount; collecting every
    #: 700 allocations still walks every event in flight.
    gc_threshold: int | None = attrs.field(default=None, validator=positive)


def redact(value: Any, key: str = "") -> Any:
    """Return ``value`` with secrets hidden: secret-named keys, URL passwords."""
    if isinstance(value, Mapping):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v, key) for v in value]
    if key and _SECRET_NAME.search(key) and value not in (None, ""):
        return REDACTED
    if isinstance(value, str):
        return _URL_PASSWORD.sub(lambda m: f"{m['head']}{REDACTED}{m['at']}", value)
    return value


def find_rootdir(start: Path | None = None) -> Path:
    """The nearest directory at or above ``start`` holding ``wisp.toml``, else ``start``."""
    here = (start or Path.cwd()).resolve()
    for d in (here, *here.parents):
        if (d / CONFIG_FILE).is_file():
            return d
    return here


def _make_converter() -> cattrs.Converter:
    conv = cattrs.Converter(forbid_extra_keys=True)

    def to_str(v: Any, _: Any) -> str:
        if not isinstance(v, str):
            raise TypeError("expected a string")
        return v

    def to_int(v: Any, _: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int | str):
            raise TypeError("expected an integer")
        return int(v)

    def to_float(v: Any, _: Any) -> float:
        if isinstance(v, bool) or not isinstance(v, int | float | str):
            raise TypeError("expected a number")
        return float(v)

    def to_bool(v: Any, _: Any) -> bool:
        if isinstance(v, bool):
            return v
        if isinstance(v, str) and v.strip().lower() in _BOOLS:
            return _BOOLS[v.strip().lower()]
        raise TypeError("expected true or false")

    conv.register_structure_hook(str, to_str)
    conv.register_structure_hook(int, to_int)
    conv.register_structure_hook(float, to_float)
    conv.register_structure_hook(bool, to_bool)
    return conv


_BOOLS = {
    "1": True,
    "true": True,
    "yes": True,
    "on": True,
    "0": False,
    "false": False,
    "no": False,
    "off": False,
}


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " or ".join(repr(a) for a in typing.get_args(tp))
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return " or ".join(repr(m.value) for m in tp)
    if isinstance(tp, type) and origin is None:
        return tp.__name__
    return str(tp).replace("typing.", "")


def env_list(text: str) -> list[Any]:
    """A list from one variable: a JSON array, or comma-separated items."""
    stripped = text.strip()
    if stripped.startswith("["):
        value = json.loads(stripped)
        if not isinstance(value, list):
            raise ValueError("expected a JSON array")
        return value
    return [part.strip() for part in stripped.split(",") if part.strip()]


def _from_env_text(text: str, tp: Any) -> Any:
    """Turn an environment string into the shape ``tp`` expects (lists, tables)."""
    origin = typing.get_origin(tp) or tp
    if origin in (typing.Union, types.UnionType):
        # ``list[int] | None``: the variable gives a value, so shape it as the non-None part.
        options = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(options) == 1:
            return _from_env_text(text, options[0])
    if origin in (list, tuple, set, frozenset):
        return env_list(text)
    if origin in (dict, Mapping) or attrs.has(tp):
        return json.loads(text)
    return text


def _toml_lines(text: str) -> dict[tuple[str, ...], int]:
    """Map table and key paths to their line numbers (a light scan, no parser)."""
    out: dict[tuple[str, ...], int] = {}
    table: tuple[str, ...] = ()
    header = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
    keyline = re.compile(r"^\s*([A-Za-z0-9_.\"' -]+?)\s*=")
    arrays: dict[tuple[str, ...], int] = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        if m := header.match(line):
            table = tuple(p.strip().strip("\"'") for p in m.group(2).split("."))
            out.setdefault(table, lineno)
            if m.group(1) == "[[":  # the n-th table of an array: "name[n]"
                n = arrays[table] = arrays.get(table, -1) + 1
                table = (*table[:-1], f"{table[-1]}[{n}]")
                out.setdefault(table, lineno)
        elif m := keyline.match(line):
            key = tuple(p.strip().strip("\"'") for p in m.group(1).split("."))
            out.setdefault(table + key, lineno)
    return out


@attrs.define
class ConfigSource:
    """The raw inputs: the parsed file with line numbers, and the environment."""

    path: Path | None
    data: dict[str, Any]
    lines: dict[tuple[str, ...], int]
    env: Mapping[str, str]

    @classmethod
    def load(cls, path: Path | None, env: Mapping[str, str] | None = None) -> ConfigSource:
        """Read ``path`` (if it exists); a TOML syntax error is a :class:`ConfigError`."""
        env = dict(os.environ if env is None else env)
        if path is None or not path.is_file():
            return cls(None, {}, {}, env)
        text = path.read_text(encoding="utf-8")
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError([f"{path}: not valid TOML: {exc}"]) from None
        return cls(path, data, _toml_lines(text), env)

    def where(self, path: tuple[str, ...]) -> str:
        for n in range(len(path), 0, -1):
            if path[:n] in self.lines:
                return f"{self.path}:{self.lines[path[:n]]}"
        return str(self.path)

    def env_name(self, section: str, keys: tuple[str, ...]) -> str:
        if section == CORE_SECTION:
            return "WISP_" + "__".join(k.upper() for k in keys)
        return f"WISP_{section.upper()}__" + "__".join(k.upper() for k in keys)

    def structure(self, section: str, cls: type[T]) -> tuple[T | None, list[str]]:
        """Build ``cls`` from the file table and the environment, collecting problems."""
        raw = self.data.get(section, {})
        if not isinstance(raw, dict):
            return None, [
                f"[{section}] must be a table, got {type(raw).__name__} "
                f"(at {self.where((section,))})"
            ]
        return _Structurer(self, section).structure(cls, raw, ())

    def env_sections(self) -> set[str]:
        """Sections named by ``WISP_SECTION__KEY`` variables."""
        out = set()
        for name in self.env:
            if name.startswith("WISP_") and "__" in name[5:]:
                out.add(name[5:].split("__", 1)[0].lower())
        return out


class _Structurer:
    def __init__(self, source: ConfigSource, section: str) -> None:
        self.source = source
        self.section = section
        self.conv = _make_converter()

    def structure(
        self, cls: type[T], raw: Mapping[str, Any], keys: tuple[str, ...]
    ) -> tuple[T | None, list[str]]:
        attrs.resolve_types(cls)  # type: ignore[type-var]
        problems: list[str] = []
        values: dict[str, Any] = {}
        fields = {f.name: f for f in attrs.fields(cls)}  # type: ignore[arg-type]
        dotted = ".".join((self.section, *keys))
        for key in raw:
            if key not in fields:
                where = self.source.where((self.section, *keys, key))
                problems.append(
                    f"{dotted}.{key}: unknown key (at {where});"
                    f" known keys: {', '.join(fields) or 'none'}"
                )
        prefix = (
            self.source.env_name(self.section, keys) + "__"
            if keys
            else None
            if self.section == CORE_SECTION
            else f"WISP_{self.section.upper()}__"
        )
        for var in sorted(self.source.env) if prefix else ():
            if (
                var.startswith(prefix or "")
                and var[len(prefix or "") :].split("__")[0].lower() not in fields
            ):
                key = var[len(prefix or "") :].split("__")[0].lower()
                problems.append(
                    f"{dotted}.{key}: unknown key (from environment variable {var});"
                    f" known keys: {', '.join(fields) or 'none'}"
                )
        for name, field in fields.items():
            path = (*keys, name)
            tp = field.type
            nested_env = self.source.env_name(self.section, path) + "__"
            if (
                attrs.has(tp)
                and name not in raw
                and any(v.startswith(nested_env) for v in self.source.env)
            ):
                value, sub = self.structure(tp, {}, path)
                problems.extend(sub)
                if value is not None:
                    values[field.alias or name] = value
                continue
            # A documented alias (WISP_DATABASE_URL) wins over the generic name.
            alias = field.metadata.get("env") if not keys else None
            generic = self.source.env_name(self.section, path)
            env_name = alias if alias and alias in self.source.env else generic
            origin: str
            if env_name in self.source.env:
                text = self.source.env[env_name]
                origin = f"from environment variable {env_name}"
                try:
                    given: Any = _from_env_text(text, tp)
                except ValueError as exc:
                    problems.append(
                        f"{dotted}.{name}: expected {_type_name(tp)}, got {text!r}"
                        f" ({exc}) ({origin})"
                    )
                    continue
                if field.metadata.get("env_invert"):
                    try:
                        given = not self.conv.structure(given, bool)
                    except Exception:
                        problems.append(
                            f"{dotted}.{name}: expected true or false, got {text!r} ({origin})"
                        )
                        continue
                if field.metadata.get("merge") and isinstance(raw.get(name), list):
                    # Both add up: the file's entries, then the environment's.
                    given = [*raw[name], *given]
                    origin += f" and at {self.source.where((self.section, *path))}"
            elif name in raw:
                given = raw[name]
                origin = f"at {self.source.where((self.section, *path))}"
            else:
                continue
            shown: Any = given
            if _is_secret(field):
                shown = Hidden(type(given).__name__)
            if field.converter is not None:
                # The field converts its own input (import strings, say): the
                # class's constructor runs converter and validator, and its
                # error names the field.
                values[field.alias or name] = given
                continue
            if attrs.has(tp) and isinstance(given, Mapping):
                value, sub = self.structure(tp, given, path)
                problems.extend(sub)
                if value is None:
                    continue
            else:
                try:
                    value = self.conv.structure(given, tp)
                except Exception as exc:
                    problems.append(
                        f"{dotted}.{name}: expected {_type_name(tp)}, got "
                        f"{shown!r} ({origin}){_why(exc)}"
                    )
                    continue
            if field.validator is not None:
                try:
                    field.validator(None, field, value)
                except (ValueError, TypeError) as exc:
                    why = str(exc).removeprefix(f"{name} ")  # the line names the key
                    problems.append(f"{dotted}.{name}: {why}; got {shown!r} ({origin})")
                    continue
                except AttributeError:
                    pass  # it compares with other fields: the constructor runs it
            values[field.alias or name] = value
        for name, field in fields.items():
            missing = field.default is attrs.NOTHING and (field.alias or name) not in values
            if missing and not any(p.startswith(f"{dotted}.{name}:") for p in problems):
                problems.append(
                    f"{dotted}.{name}: required ({_type_name(field.type)}), "
                    f"not given (in [{'.'.join((self.section, *keys))}] or "
                    f"{self.source.env_name(self.section, (*keys, name))})"
                )
        if problems:
            return None, problems
        try:
            return cls(**values), []
        except (ValueError, TypeError) as exc:
            return None, [f"{dotted}: {exc}"]


class Hidden:
    """A secret's stand-in in error messages: its type, never its value."""

    def __init__(self, type_name: str) -> None:
        self.type_name = type_name

    def __repr__(self) -> str:
        return f"{REDACTED} (a {self.type_name})"


def _why(exc: BaseException) -> str:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]  # cattrs groups: the first leaf says what went wrong
    msg = str(exc)
    if not msg or "expected" in msg:
        return ""
    return f": {msg.splitlines()[0]}"


def _is_secret(field: attrs.Attribute[Any]) -> bool:
    return bool(field.metadata.get("secret")) or bool(_SECRET_NAME.search(field.name))


@attrs.define
class Config:
    """The loaded configuration: the kernel's table and each plugin's section."""

    rootdir: Path
    source: ConfigSource
    core: CoreConfig
    sections: dict[str, Any] = attrs.field(factory=dict)

    @property
    def path(self) -> Path | None:
        return self.source.path

    def section(self, key: str | type[T]) -> Any:
        """Return a plugin's section by name, or the one instance of an attrs class."""
        if isinstance(key, str):
            return self.sections[key]
        for value in self.sections.values():
            if isinstance(value, key):
                return value
        raise KeyError(f"no configuration section of type {key.__name__}")

    def structure_part(
        self, section: str, keys: tuple[str, ...], cls: type[T], raw: Mapping[str, Any]
    ) -> tuple[T | None, list[str]]:
        """Build ``cls`` from ``raw``, a table found at ``[section.keys...]``.

        For sections whose sub-tables take a type chosen at run time (a
        resilience step's pattern): problems name the full dotted path and
        the file line, as for the section itself.
        """
        return _Structurer(self.source, section).structure(cls, raw, keys)

    def as_dict(self) -> dict[str, Any]:
        """Every section as plain data, secrets redacted: safe to print or log."""
        out: dict[str, Any] = {CORE_SECTION: _unstructure(self.core)}
        for name, value in sorted(self.sections.items()):
            out[name] = _unstructure(value)
        return typing.cast(dict[str, Any], redact(out))


def _unstructure(value: Any) -> Any:
    if attrs.has(type(value)):
        out = {}
        for f in attrs.fields(type(value)):
            v = getattr(value, f.name)
            out[f.name] = REDACTED if _is_secret(f) and v not in (None, "") else _unstructure(v)
        return out
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, list | tuple | set | frozenset):
        return [_unstructure(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _unstructure(v) for k, v in value.items()}
    if isinstance(value, Path):
        return str(value)
    return value
