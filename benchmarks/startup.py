"""Start-up cost: ``wisp --help`` and an offline bot start, with 0 and 50
installed dummy third-party plugins, against ``python -c pass``.

The dummy plugins are real distributions (a ``.dist-info`` with a ``wisp``
entry point, and a module with one hook and one command) written into the
site-packages of a temporary virtual environment.  That environment sees the
current one's packages through a ``.pth`` file, so nothing is downloaded.

Per-plugin cost = (time with 50 - time with 0) / 50; "beyond its own import"
subtracts the cost of importing the 50 modules in a bare interpreter.

    python benchmarks/startup.py [--runs N]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

from _report import table

PLUGINS = 50
PLUGIN = """\
import wisp

WISP_PLUGIN = wisp.PluginMetadata(name="dummy{n}", api=">=1.0,<2", data="Nothing.")


@wisp.hookimpl
def wisp_configure(app):
    pass


@wisp.command(name="dummy{n}", description="A dummy command.")
async def dummy{n}(ctx) -> str:
    return "ok"
"""


def make_venv(root: Path, plugins: int) -> Path:
    """A venv seeing this interpreter's packages, with ``plugins`` dummy dists installed."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
    python = root / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    ours = [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
    # addsitedir, not a plain path: the parent's own .pth files (an editable
    # install of wisp-framework) must be processed too.
    lines = [f"import site; site.addsitedir({d!r})" for d in dict.fromkeys(ours)]
    (site / "_parent_env.pth").write_text("\n".join(lines) + "\n")
    for n in range(plugins):
        dist = site / f"wisp_dummy{n}-1.0.dist-info"
        dist.mkdir()
        (dist / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: wisp-dummy{n}\nVersion: 1.0\n"
            "Requires-Dist: wisp-framework\n"
        )
        (dist / "entry_points.txt").write_text(f"[wisp]\ndummy{n} = wisp_dummy{n}\n")
        (dist / "RECORD").write_text("")
        (site / f"wisp_dummy{n}.py").write_text(PLUGIN.format(n=n))
    return python


def environment(cwd: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WISP_")}
    # Measure what an installed bot sees: compiled bytecode, cached outside the tree.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(cwd.parent / "pycache")
    # Other third-party plugins of this environment (contrib ones, say) are not
    # what is measured: block them, so both venvs load the bundled plugins only.
    others = [
        ep.name
        for ep in importlib.metadata.entry_points(group="wisp")
        if ep.dist is not None and ep.dist.metadata["Name"] != "wisp-framework"
    ]
    if others:
        env["WISP_DISABLE_PLUGINS"] = ",".join(sorted(others))
    return env


def measure(
    cases: dict[str, list[str]], runs: int, cwd: Path
) -> dict[str, tuple[float, float, int]]:
    """Best and median wall time in ms of each command, run round-robin (one warm-up
    each) so that a busy machine slows every case alike."""
    env = environment(cwd)
    times: dict[str, list[float]] = {name: [] for name in cases}
    for argv in cases.values():
        subprocess.run(argv, cwd=cwd, env=env, check=True, capture_output=True)
    for _ in range(runs):
        for name, argv in cases.items():
            start = time.perf_counter_ns()
            subprocess.run(argv, cwd=cwd, env=env, check=True, capture_output=True)
            times[name].append((time.perf_counter_ns() - start) / 1e6)
    return {n: (min(t), statistics.median(t), len(t)) for n, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=9)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        project = root / "bot"
        project.mkdir()
        (project / "wisp.toml").write_text(
            '[storage]\nurl = "sqlite+aiosqlite:///bot.sqlite3"\nauto_migrate = true\n'
        )
        (project / "script.txt").write_text("/ping\n")
        venvs = {n: make_venv(root / f"venv{n}", n) for n in (0, PLUGINS)}
        bare, full = str(venvs[0]), str(venvs[PLUGINS])
        imports = "; ".join(f"import wisp_dummy{n}" for n in range(PLUGINS))
        cases = {
            "python -c pass": [bare, "-c", "pass"],
            "import wisp": [bare, "-c", "import wisp"],
            f"import wisp+{PLUGINS}": [full, "-c", "import wisp; " + imports],
            "--help, 0": [bare, "-m", "wisp", "--help"],
            f"--help, {PLUGINS}": [full, "-m", "wisp", "--help"],
            "offline, 0": [bare, "-m", "wisp", "run", "--offline", "--script", "script.txt"],
            f"offline, {PLUGINS}": [
                full,
                "-m",
                "wisp",
                "run",
                "--offline",
                "--script",
                "script.txt",
            ],
        }
        blocked = environment(project).get("WISP_DISABLE_PLUGINS")
        results = measure(cases, args.runs, project)
    print(f"start-up with 0 and {PLUGINS} dummy third-party plugins, {args.runs} runs each")
    if blocked:
        print(f"  (other installed third-party plugins blocked: {blocked})")
    table(results, "python -c pass", "ms")
    own = (results[f"import wisp+{PLUGINS}"][0] - results["import wisp"][0]) / PLUGINS
    for what in ("--help", "offline"):
        per = (results[f"{what}, {PLUGINS}"][0] - results[f"{what}, 0"][0]) / PLUGINS
        print(
            f"  {what}: {per:.2f} ms per plugin, {per - own:.2f} ms beyond its own "
            f"import ({own:.2f} ms)"
        )
    helps = results[f"--help, {PLUGINS}"][0]
    print(f"  wisp --help with {PLUGINS} plugins: {helps:.0f} ms (aim: under 300 ms)")


if __name__ == "__main__":
    main()
