"""Wisp commands as Discord application commands: payloads out, options in.

Wisp syncs its own JSON (one ``PUT`` of the whole set) and reads interactions
itself instead of going through discord.py's ``app_commands`` tree: a Wisp
command is data, not a decorated function, and this keeps the mapping exact:
``"policy set"`` becomes command ``policy``, subcommand ``set``; three words
make a subcommand group.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from wisp.errors import PluginError
from wisp.targets import Command, Param, ParamType

__all__ = [
    "commands_payload",
    "payload_hash",
    "read_invocation",
]

SUB_COMMAND = 1
SUB_COMMAND_GROUP = 2
OPTION_TYPE = {
    ParamType.STRING: 3,
    ParamType.INTEGER: 4,
    ParamType.BOOLEAN: 5,
    ParamType.USER: 6,
    ParamType.CHANNEL: 7,
    ParamType.ROLE: 8,
    ParamType.MENTIONABLE: 9,
    ParamType.NUMBER: 10,
    ParamType.ATTACHMENT: 11,
}
_NAME = re.compile(r"^[-_\w]{1,32}$")


def _check_name(name: str, what: str) -> None:
    if not _NAME.match(name) or name != name.lower():
        raise PluginError(
            f"{what} {name!r} cannot be a Discord command name: use 1-32 lowercase letters, "
            "digits, '-' or '_'"
        )


def _description(text: str, fallback: str) -> str:
    """The first line of ``text`` (or ``fallback``), within Discord's 100 characters."""
    lines = text.strip().splitlines()
    return (lines[0] if lines else fallback)[:100]


def _option(p: Param, command: Command) -> dict[str, Any]:
    _check_name(p.name, f"option of command {command.name!r}")
    out: dict[str, Any] = {
        "type": OPTION_TYPE[p.type],
        "name": p.name,
        "description": _description(p.description, p.name),
        "required": p.required,
    }
    if p.choices:
        out["choices"] = [{"name": c.name, "value": c.value} for c in p.choices]
    if p.autocomplete is not None:
        if p.choices:
            raise PluginError(f"option {p.name!r} of {command.name!r}: choices or autocomplete")
        out["autocomplete"] = True
    if p.min_value is not None:
        out["min_value"] = p.min_value
    if p.max_value is not None:
        out["max_value"] = p.max_value
    return out


def _options(command: Command) -> list[dict[str, Any]]:
    # Discord wants required options before optional ones.
    ordered = sorted(command.params, key=lambda p: not p.required)
    return [_option(p, command) for p in ordered]


def commands_payload(commands: Iterable[Command]) -> list[dict[str, Any]]:
    """The application-command JSON for ``commands``, in a stable order."""
    roots: dict[str, dict[str, Any]] = {}
    leaves: set[str] = set()
    for cmd in sorted(commands, key=lambda c: c.name):
        words = cmd.name.split(" ")
        for w in words:
            _check_name(w, f"command {cmd.name!r}: word")
        root = roots.get(words[0])
        if len(words) == 1:
            if root is not None:
                raise PluginError(f"command {cmd.name!r} is also a group of subcommands")
            leaves.add(words[0])
            roots[words[0]] = {
                "type": 1,
                "name": words[0],
                "description": _description(cmd.description, words[0]),
                "options": _options(cmd),
            }
            continue
        if root is None:
            root = roots[words[0]] = {
                "type": 1,
                "name": words[0],
                "description": words[0],
                "options": [],
            }
        elif words[0] in leaves:
            raise PluginError(
                f"command {words[0]!r} cannot also be a group of subcommands (found {cmd.name!r})"
            )
        parent = root
        if len(words) == 3:
            group = next((o for o in root["options"] if o["name"] == words[1]), None)
            if group is None:
                group = {
                    "type": SUB_COMMAND_GROUP,
                    "name": words[1],
                    "description": words[1],
                    "options": [],
                }
                root["options"].append(group)
            parent = group
        parent["options"].append(
            {
                "type": SUB_COMMAND,
                "name": words[-1],
                "description": _description(cmd.description, words[-1]),
                "options": _options(cmd),
            }
        )
    return [roots[k] for k in sorted(roots)]


def payload_hash(payload: list[dict[str, Any]]) -> str:
    """A digest of the command set: sync only when it changes."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def read_invocation(data: Mapping[str, Any]) -> tuple[str, dict[str, Any], str | None]:
    """From interaction ``data``: the Wisp command name, raw option values, and the
    name of the focused option (autocomplete) if any."""
    words = [data["name"]]
    options: list[Mapping[str, Any]] = list(data.get("options") or [])
    while options and options[0].get("type") in (SUB_COMMAND, SUB_COMMAND_GROUP):
        words.append(options[0]["name"])
        options = list(options[0].get("options") or [])
    values: dict[str, Any] = {}
    focused = None
    for opt in options:
        values[opt["name"]] = opt.get("value")
        if opt.get("focused"):
            focused = opt["name"]
    return " ".join(words), values, focused
