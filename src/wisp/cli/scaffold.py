"""``wisp plugin new NAME [--dir DIR]``: a new ``wisp-NAME`` distribution from a template.

The template (``wisp/cli/templates/plugin``, shipped in the wheel) is text:
files ending in ``.tmpl`` with ``{{ var }}`` placeholders, and path parts
``__module__`` and ``__revision__`` (a leading ``dot-`` becomes ``.``: dotfiles
do not survive every packaging step).  Every check runs, and every file is
rendered, before anything is written, so a refused name leaves no trace.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import re
import shutil
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import TYPE_CHECKING

import attrs
from packaging.version import Version

from wisp.cli.commands import CliCommand

if TYPE_CHECKING:
    from wisp.app import Wisp

__all__ = [
    "PLUGIN_COMMAND",
    "PluginNames",
    "ScaffoldError",
    "api_range",
    "framework_requirement",
    "parse_name",
    "render",
    "scaffold",
]

#: Lower-case words joined by single ``-`` or ``_``: valid as a distribution
#: name, a module name (after ``wisp_``), a slash command name and a config key.
NAME_RE = re.compile(r"[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*")
#: Discord's limit on a slash command name, which is the plugin name.
MAX_NAME = 32
PLACEHOLDER = re.compile(r"\{\{ *(\w+) *\}\}")


class ScaffoldError(ValueError):
    """A name or a target directory the scaffold refuses (nothing was written)."""


@attrs.frozen
class PluginNames:
    """Every name derived from what the author typed."""

    #: As typed, without a ``wisp-`` prefix: ``foo-bar``.
    name: str
    #: Entry-point name, config section, Alembic branch: ``foo_bar``.
    plugin: str
    #: ``wisp-foo-bar``.
    distribution: str
    #: ``wisp_foo_bar``.
    module: str
    #: The sample slash command: ``foo-bar``.
    command: str
    #: Class-name prefix: ``FooBar``.
    title: str


def parse_name(raw: str) -> PluginNames:
    """The names for ``raw``; a :class:`ScaffoldError` says what is wrong with it."""
    name = raw.strip()
    for prefix in ("wisp-", "wisp_"):
        if name.lower().startswith(prefix):
            name = name[len(prefix) :]
    if not NAME_RE.fullmatch(name):
        raise ScaffoldError(
            f"{raw!r} is not a valid plugin name: use lower-case letters and digits, "
            "starting with a letter, words joined by single '-' or '_' (e.g. 'foo-bar'); "
            "it becomes the distribution 'wisp-NAME' and the module 'wisp_NAME'"
        )
    if len(name) > MAX_NAME:
        raise ScaffoldError(
            f"{raw!r} is too long: a plugin name has at most {MAX_NAME} characters "
            "(it is also the name of the sample slash command)"
        )
    plugin = name.replace("-", "_")
    return PluginNames(
        name=name,
        plugin=plugin,
        distribution="wisp-" + name.replace("_", "-"),
        module="wisp_" + plugin,
        command=plugin.replace("_", "-"),
        title="".join(word.capitalize() for word in plugin.split("_")),
    )


def _taken(names: PluginNames) -> str | None:
    """Why an installed plugin or distribution already has one of these names."""
    for ep in importlib.metadata.entry_points(group="wisp"):
        if ep.name.replace("-", "_") == names.plugin:
            dist = ep.dist.name if ep.dist is not None else "an unknown distribution"
            return f"the plugin name {names.plugin!r} is taken by {dist} (entry point {ep.value!r})"
    try:
        importlib.metadata.distribution(names.distribution)
    except importlib.metadata.PackageNotFoundError:
        return None
    return f"the distribution {names.distribution!r} is already installed"


def framework_requirement(version: str) -> tuple[str, str]:
    """The ``wisp-framework`` range a new plugin declares, and its lowest version.

    From 1.0 on: ``>=X.Y,<X+1``, the releases that keep the plugin API's
    major version.  Before 1.0 every minor release may break plugins (SemVer's
    0.y rule, as Cargo reads it), so ``>=0.Y,<0.(Y+1)``.  Made from a
    pre-release or dev build (``0.1.0.dev0`` sorts below ``0.1``), the range
    starts at ``X.Y.dev0``: it then holds that build, and pip and uv accept
    pre-releases for it without ``--pre``.
    """
    v = Version(version)
    lower = f"{v.major}.{v.minor}" + (".dev0" if v.is_prerelease else "")
    upper = f"0.{v.minor + 1}" if v.major == 0 else str(v.major + 1)
    return f"wisp-framework>={lower},<{upper}", lower


def api_range(api_version: str) -> str:
    """The plugin API range a new plugin supports: this minor version up to the next major."""
    v = Version(api_version)
    return f">={v.major}.{v.minor},<{v.major + 1}"


def _templates() -> Traversable:
    return files("wisp.cli").joinpath("templates", "plugin")


def _walk(folder: Traversable, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, Traversable]]:
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.is_dir():
            yield from _walk(entry, (*prefix, entry.name))
        elif entry.name.endswith(".tmpl"):
            yield "/".join((*prefix, entry.name)), entry


def _fill(text: str, values: dict[str, str], where: str) -> str:
    def lookup(match: re.Match[str]) -> str:
        try:
            return values[match.group(1)]
        except KeyError:
            raise KeyError(f"template {where}: unknown placeholder {match.group(0)}") from None

    return PLACEHOLDER.sub(lookup, text)


def render(names: PluginNames, *, now: datetime | None = None) -> dict[str, str]:
    """Every file of the new distribution, relative path -> text (nothing written)."""
    import uuid  # here: `wisp --help` never needs it

    from wisp import __version__
    from wisp.metadata import PLUGIN_API_VERSION

    requirement, lowest = framework_requirement(__version__)
    revision = uuid.uuid4().hex[:12]  # Alembic ids share one namespace across plugins
    values = {
        **attrs.asdict(names),
        "plugin_upper": names.plugin.upper(),
        "table": f"{names.plugin}_greetings",
        "revision": revision,
        "created": f"{(now or datetime.now(UTC)):%Y-%m-%d %H:%M:%S}",
        "framework_requirement": requirement,
        "framework_lowest": lowest,
        "wisp_version": __version__,
        "api_range": api_range(PLUGIN_API_VERSION),
    }
    out: dict[str, str] = {}
    for rel, entry in _walk(_templates()):
        path = rel.removesuffix(".tmpl").replace("__module__", names.module)
        path = path.replace("__revision__", revision)
        path = "/".join("." + p[4:] if p.startswith("dot-") else p for p in path.split("/"))
        out[path] = _fill(entry.read_text(encoding="utf-8"), values, rel)
    return out


def scaffold(raw_name: str, parent: Path) -> tuple[Path, list[str]]:
    """Create ``parent/wisp-NAME``; return it and the files written.

    Raises :class:`ScaffoldError` (nothing written) for a bad name, a name an
    installed plugin has, or a target that exists.
    """
    names = parse_name(raw_name)
    taken = _taken(names)
    if taken:
        raise ScaffoldError(f"{taken}; pick another name")
    if parent.exists() and not parent.is_dir():
        raise ScaffoldError(f"--dir {str(parent)!r} is not a directory")
    target = parent / names.distribution
    if target.exists() or target.is_symlink():
        raise ScaffoldError(
            f"{str(target)!r} already exists; remove it, or choose another name or --dir"
        )
    rendered = render(names)
    target.mkdir(parents=True)  # fails if it appeared meanwhile: never write into it
    try:
        for rel, text in rendered.items():
            path = target / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)  # all or nothing
        raise
    return target, sorted(rendered)


# -- the CLI ------------------------------------------------------------------


def _args(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="plugin_action", metavar="ACTION", required=True)
    new = sub.add_parser(
        "new",
        help="create a wisp-NAME plugin distribution",
        description=(
            "Create DIR/wisp-NAME: a pyproject.toml with the 'wisp' entry point, a plugin "
            "module with a slash command, a config section, a model and its migration, "
            "offline tests, a noxfile, README and CHANGELOG."
        ),
    )
    new.add_argument("name", metavar="NAME", help="plugin name, e.g. 'foo-bar' for wisp-foo-bar")
    new.add_argument(
        "--dir",
        type=Path,
        default=Path("."),
        metavar="DIR",
        help="create wisp-NAME inside DIR (default: the current directory)",
    )


def _run(app: Wisp, args: argparse.Namespace) -> int:
    try:
        target, written = scaffold(args.name, args.dir)
    except ScaffoldError as exc:
        print(f"wisp plugin new: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a read-only or full disk: nothing was left behind
        print(f"wisp plugin new: cannot write the plugin: {exc}", file=sys.stderr)
        return 1
    names = parse_name(args.name)
    print(f"created {names.distribution} in {target}")
    for rel in written:
        print(f"  {rel}")
    print(
        "next:\n"
        f"  cd {target}\n"
        "  python -m venv .venv && .venv/bin/pip install -e '.[test]'\n"
        "  .venv/bin/pytest\n"
        "see docs/publishing-a-plugin.md for naming, version ranges and releasing"
    )
    return 0


PLUGIN_COMMAND = CliCommand(
    "plugin", "create a plugin distribution: wisp plugin new NAME", _run, _args, configure=False
)
