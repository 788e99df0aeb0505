"""``wisp data delete-user``: erase what every plugin stores about one user.

Each plugin that keeps end-user data implements ``wisp_delete_user_data``
and says so in its ``WISP_PLUGIN`` record; this command calls every
implementation, prints what each removed, and lists the plugins that made no
data statement, so an operator knows what was not covered.
"""

from __future__ import annotations

import argparse
import inspect
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from wisp.cli.commands import CliCommand

if TYPE_CHECKING:
    from wisp.app import Wisp

__all__ = ["DATA_COMMAND", "delete_user_data"]


def _snowflake(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a Discord id (a number)") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a Discord id (a positive number)")
    return value


def _args(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="data_action", metavar="ACTION", required=True)
    d = sub.add_parser(
        "delete-user",
        help="delete what every plugin stores about a user",
        description="Call wisp_delete_user_data on every plugin and report what each removed.",
    )
    d.add_argument("user_id", type=_snowflake, metavar="USER_ID", help="the Discord user id")
    d.add_argument(
        "--guild", type=_snowflake, metavar="ID", help="only that guild's data of the user"
    )


async def delete_user_data(
    app: Wisp, user_id: int, guild_id: int | None = None
) -> tuple[dict[str, dict[str, int]], dict[str, str]]:
    """Call every ``wisp_delete_user_data``: (removed per plugin, error per plugin).

    One plugin failing does not stop the others: its error is returned.
    """
    pm = app.pluginmanager
    removed: dict[str, dict[str, int]] = {}
    errors: dict[str, str] = {}
    kwargs: dict[str, Any] = {"app": app, "user_id": user_id, "guild_id": guild_id}
    for impl in pm.impls_in_call_order(app.hook.wisp_delete_user_data):
        try:
            result: Any = impl.function(*[kwargs[a] for a in impl.argnames])
            if inspect.isawaitable(result):
                result = await result
        except Exception as exc:
            errors[impl.plugin_name] = str(pm.blame(impl.plugin_name, "wisp_delete_user_data", exc))
            continue
        if result is not None and not isinstance(result, Mapping):
            errors[impl.plugin_name] = (
                f"plugin {impl.plugin_name!r} returned {result!r} from wisp_delete_user_data; "
                "expected a mapping of what was removed to how many"
            )
            continue
        removed[impl.plugin_name] = {str(k): int(v) for k, v in (result or {}).items()}
    return removed, errors


async def _run(app: Wisp, args: argparse.Namespace) -> int:
    where = f"guild {args.guild}" if args.guild else "every guild"
    print(f"deleting the data of user {args.user_id} ({where})")
    removed, errors = await delete_user_data(app, args.user_id, args.guild)
    for plugin, what in removed.items():
        detail = ", ".join(f"{k}: {v}" for k, v in what.items()) or "nothing stored"
        print(f"  {plugin}: {detail}")
    for plugin, error in errors.items():
        print(f"  {plugin}: FAILED {error}", file=sys.stderr)
    pm = app.pluginmanager
    uncovered = [
        i.name
        for i in pm.plugins()
        if i.metadata is not None
        and i.metadata.user_data
        and i.name not in removed
        and i.name not in errors
    ]
    if uncovered:
        print(
            "plugins that store user data but implement no wisp_delete_user_data: "
            + ", ".join(uncovered),
            file=sys.stderr,
        )
    from wisp.cli.builtin import without_data_statement

    silent = without_data_statement(app)
    if silent:
        print("plugins without a data statement (not covered): " + ", ".join(silent))
    return 1 if errors or uncovered else 0


DATA_COMMAND = CliCommand(
    "data", "end-user data: delete-user", _run, _args, configure=True, start=True
)
