"""The record a plugin returns from ``wisp_cli_commands`` to add a subcommand."""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from wisp.app import Wisp

__all__ = ["CliCommand", "positive_int"]

RunResult = int | None
Runner = Callable[["Wisp", argparse.Namespace], RunResult | Awaitable[RunResult]]


@attrs.frozen
class CliCommand:
    """A ``wisp`` subcommand.

    ``run`` returns the exit code (``None`` is 0) and may be async.  With
    ``configure`` the application is configured first (config errors are
    reported and exit 2); with ``start`` its services run around ``run``.

    A plugin extending another command with ``wisp_cli_arguments`` can add
    sub-actions and ``parser.set_defaults(wisp_action=runner)`` on them; the
    kernel then calls ``runner(app, args)`` instead of ``run``.
    """

    name: str
    help: str
    run: Runner
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None
    configure: bool = True
    start: bool = False


def positive_int(text: str) -> int:
    """argparse ``type=`` for counts and limits: a whole number of 1 or more."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value
