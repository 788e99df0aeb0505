"""``wisp metrics``: the values of a running bot, or of the last run, from the
snapshots the ``metrics`` service writes."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from typing import Any

import wisp
from wisp.plugins.metrics.config import MetricsConfig
from wisp.plugins.metrics.service import pid_alive, read_snapshots

__all__ = ["COMMANDS", "format_metrics"]


def _args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="the snapshot as one JSON document")
    p.add_argument(
        "--prefix", default="", help="only metrics whose name starts with this (wisp.commands)"
    )
    p.add_argument("--pid", type=int, help="the snapshot of this process")


def _labels(metric: dict[str, Any]) -> str:
    """Labels not already spelled out in the dotted name."""
    parts = set(str(metric["name"]).split("."))
    extra = {
        k: v
        for k, v in metric.get("labels", {}).items()
        if str(v).replace(" ", "_") not in parts and str(v) not in str(metric["name"])
    }
    return "{" + ", ".join(f"{k}={v}" for k, v in sorted(extra.items())) + "}" if extra else ""


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f}ms"


def _quantile(metric: dict[str, Any], q: float) -> float:
    count = int(metric["count"])
    rank, seen = q * count, 0
    for bound, n in metric["buckets"]:
        seen += n
        if seen >= rank:
            return min(float(metric["max"]), float("inf") if bound == "+Inf" else float(bound))
    return float(metric["max"])


def format_metrics(metrics: list[dict[str, Any]]) -> list[str]:
    """One line per metric: name, labels not in the name, value."""
    rows = []
    for m in metrics:
        name = m["name"] + _labels(m)
        if m["kind"] == "histogram":
            count = int(m["count"])
            mean = m["sum"] / count if count else 0.0
            value = (
                f"count={count} mean={_ms(mean)} p50<={_ms(_quantile(m, 0.5))} "
                f"p99<={_ms(_quantile(m, 0.99))} max={_ms(m['max'])}"
            )
        else:
            v = m["value"]
            value = str(int(v)) if float(v).is_integer() else f"{v:g}"
        rows.append((name, value))
    width = max((len(n) for n, _ in rows), default=0)
    return [f"{n:<{width}}  {v}" for n, v in rows]


def _age(written_at: str) -> str:
    try:
        then = datetime.fromisoformat(written_at)
    except ValueError:
        return "?"
    return f"{(datetime.now(UTC) - then).total_seconds():.1f}s"


def _heading(doc: dict[str, Any]) -> str:
    pid = doc.get("pid")
    argv = doc.get("argv") or "?"
    if doc.get("running") and pid_alive(int(pid or 0)):
        return (
            f"running: pid {pid} ({argv}), snapshot {_age(doc['written_at'])} old, "
            f"refreshed every {doc.get('snapshot_seconds')}s"
        )
    if doc.get("running"):
        return (
            f"last run: pid {pid} ({argv}) is gone without stopping cleanly; "
            f"its snapshot from {doc.get('written_at')}"
        )
    return f"last run: pid {pid} ({argv}), stopped at {doc.get('written_at')}"


async def _run(app: wisp.Wisp, args: argparse.Namespace) -> int:
    config: MetricsConfig = app.config.section(MetricsConfig)
    directory = (app.rootdir / config.snapshot_dir).resolve()
    docs = read_snapshots(directory) if directory.is_dir() else []
    if args.pid is not None:
        docs = [d for d in docs if d.get("pid") == args.pid]
        if not docs:
            print(f"wisp metrics: no snapshot of pid {args.pid} in {directory}", file=sys.stderr)
            return 1
    live = [d for d in docs if d.get("running") and pid_alive(int(d.get("pid") or 0))]
    shown = live or docs[:1]
    if not shown:
        print(
            f"wisp metrics: no snapshot in {directory}: run the bot (`wisp run`) or a "
            "command, or check [metrics] snapshot",
            file=sys.stderr,
        )
        return 1
    for doc in shown:
        doc["metrics"] = [m for m in doc.get("metrics", []) if m["name"].startswith(args.prefix)]
    if args.json:
        out: Any = shown[0] if len(shown) == 1 else shown
        print(json.dumps(out, indent=2, sort_keys=True))
        return 0
    for i, doc in enumerate(shown):
        if i:
            print()
        print(_heading(doc))
        lines = format_metrics(doc["metrics"])
        for line in lines or [
            "(no metrics" + (f" starting with {args.prefix!r})" if args.prefix else ")")
        ]:
            print("  " + line)
    return 0


COMMANDS = [
    wisp.CliCommand(
        "metrics", "current metrics of the running bot, or of the last run", _run, _args
    )
]
