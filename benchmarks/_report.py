"""Printing shared by the benchmark scripts: a table of timings and ratios
against peers.  ``results`` map a case to (best ns, median ns, iterations)."""

from __future__ import annotations

Results = dict[str, tuple[float, float, int]]


def table(results: Results, base: str, unit: str = "ns/call") -> None:
    """Each case's best and median, and its ratio to ``base``."""
    b = results[base][0]
    print(f"  {'case':<20} {unit:>10} {'median':>10} {'n':>8} {'vs ' + base:>14}")
    for name, (best, med, n) in results.items():
        print(f"  {name:<20} {best:>10,.0f} {med:>10,.0f} {n:>8,} {best / b:>13.2f}x")


def versus(results: Results, ours: str, peers: list[str]) -> bool:
    """Print how many times slower each peer is; True when every peer is slower."""
    w = results[ours][0]
    all_ahead = True
    for peer in peers:
        ratio = results[peer][0] / w
        all_ahead &= ratio > 1.0
        verdict = "faster" if ratio > 1.0 else "SLOWER"
        print(f"  {peer + ' / ' + ours:<34} {ratio:6.2f}x  ({ours} {verdict})")
    return all_ahead
