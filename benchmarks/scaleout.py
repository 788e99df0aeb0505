"""Issue #13's scale-out benchmarks in one run: gateway shards across
processes, shared REST limits, event streams and HTTP interaction replicas.

Each part is its own script (``scaleout_gateway.py``, ``scaleout_rest.py``,
``scaleout_streams.py``, ``interactions.py``) with its own baselines and
peers; this runs them one after another so their figures come from one
machine state.  ``--quick`` passes each script its shorter settings.

    python benchmarks/scaleout.py            # about 8 min
    python benchmarks/scaleout.py --quick    # about 4 min, noisier
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent

#: (script, arguments for the full run, arguments for --quick)
PARTS: list[tuple[str, list[str], list[str]]] = [
    ("scaleout_gateway.py", [], ["--window", "2", "--cap", "120"]),
    ("scaleout_rest.py", [], ["--quick"]),
    ("scaleout_streams.py", [], ["--quick"]),
    ("interactions.py", [], ["--quick"]),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="each part's shorter settings")
    args = parser.parse_args()
    failed = []
    for script, full, quick in PARTS:
        print(f"\n=== {script} ===", flush=True)
        code = subprocess.call(
            [sys.executable, str(HERE / script), *(quick if args.quick else full)]
        )
        if code:
            failed.append(f"{script} (exit {code})")
    if failed:
        print("\nfailed: " + ", ".join(failed), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
