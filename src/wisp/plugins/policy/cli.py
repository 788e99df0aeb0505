"""``wisp policy set|list|explain|remove|audit``: no Discord token needed."""

from __future__ import annotations

import argparse
import json
import re
import sys

import wisp
from wisp.plugins import policy
from wisp.plugins.policy.engine import Action, Actor, Rule, Scope

__all__ = ["COMMANDS"]


def _args(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    s = sub.add_parser("set", help="add a rule")
    s.add_argument("capability", help="exact (moderation.ban) or wildcard (moderation.*)")
    s.add_argument("decision", choices=[a.value for a in Action])
    s.add_argument("--scope", choices=[x.name.lower() for x in Scope], default="guild")
    s.add_argument(
        "--id",
        type=int,
        dest="scope_id",
        help="the channel, role or user id (guild: defaults to --guild)",
    )
    s.add_argument("--guild", type=int, help="the guild the rule belongs to (not for global)")
    s.add_argument("--priority", type=int, default=0)
    s.add_argument("--by", type=int, help="user id recorded in the audit")
    ls = sub.add_parser("list", help="rules of a guild, and the global ones")
    ls.add_argument("--guild", type=int)
    e = sub.add_parser("explain", help="decide a capability for a caller, and say why")
    e.add_argument("capability")
    e.add_argument("--user", type=int, required=True)
    e.add_argument("--guild", type=int)
    e.add_argument("--channel", type=int)
    e.add_argument(
        "--role",
        action="append",
        default=[],
        help="a role the user has; ROLE or ROLE:POSITION (repeat)",
    )
    e.add_argument("--owner", action="store_true", help="the user owns the guild")
    e.add_argument("--admin", action="store_true", help="the user has Administrator")
    r = sub.add_parser("remove", help="delete a rule")
    r.add_argument("rule_id", type=int)
    r.add_argument("--by", type=int)
    a = sub.add_parser("audit", help="recent rule changes")
    a.add_argument("--guild", type=int)
    a.add_argument("--limit", type=int, default=50)


_CAPABILITY = re.compile(r"^(\*|[a-z0-9_-]+(\.[a-z0-9_-]+)*(\.\*)?)$")


def _rule_from(args: argparse.Namespace) -> Rule:
    if not _CAPABILITY.match(args.capability):
        raise wisp.UserError(
            f"{args.capability!r} is not a capability: dotted lowercase words, optionally "
            "ending in .* (moderation.ban, moderation.*), or * alone"
        )
    scope = Scope[args.scope.upper()]
    if scope is Scope.GLOBAL:
        if args.guild is not None or args.scope_id is not None:
            raise wisp.UserError("a global rule takes neither --guild nor --id")
        return Rule(args.capability, Action(args.decision), scope, None, args.priority, None)
    if args.guild is None:
        raise wisp.UserError(f"a {args.scope} rule needs --guild")
    scope_id = (
        args.scope_id
        if args.scope_id is not None
        else (args.guild if scope is Scope.GUILD else None)
    )
    if scope_id is None:
        raise wisp.UserError(f"a {args.scope} rule needs --id (the {args.scope} id)")
    return Rule(args.capability, Action(args.decision), scope, scope_id, args.priority, args.guild)


async def _run(app: wisp.Wisp, args: argparse.Namespace) -> int:
    service = app.stash[policy.service_key]
    try:
        if args.action == "set":
            rule = await service.add(_rule_from(args), by=args.by)
            print(f"added {rule.describe()}")
        elif args.action == "list":
            for rule in await service.rules(args.guild):
                owner = "global" if rule.guild_id is None else f"guild {rule.guild_id}"
                print(f"{rule.describe()} [{owner}]")
        elif args.action == "remove":
            rule = await service.remove(args.rule_id, by=args.by)
            print(f"removed {rule.describe()}")
        elif args.action == "audit":
            for entry in await service.audit(args.guild, args.limit):
                print(json.dumps(entry, sort_keys=True))
        else:
            roles = {}
            for spec in args.role:
                role, _, position = str(spec).partition(":")
                if not role.isdigit() or (position and not position.isdigit()):
                    raise wisp.UserError(f"--role {spec!r}: expected ROLE or ROLE:POSITION")
                roles[int(role)] = int(position or 0)
            actor = Actor(args.user, args.guild, args.channel, roles, args.owner, args.admin)
            explanation = await service.explain(args.capability, actor)
            verdict = "ALLOW" if explanation.decision.allowed else "DENY"
            print(f"{verdict} {args.capability}: {explanation.decision.reason}")
            for rule in explanation.considered:
                mark = "->" if rule is explanation.rule else "  "
                print(f" {mark} {rule.describe()}")
    except wisp.WispError as exc:
        print(f"wisp policy: {exc.safe_message}", file=sys.stderr)
        return 2
    return 0


COMMANDS = (
    wisp.CliCommand(
        "policy", "policy rules: set, list, explain, remove, audit", _run, _args, start=True
    ),
)
