"""A third-party plugin, built and pip-installed into a fresh virtualenv, end to end."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]

GREET = """
import wisp

CALLS = []


@wisp.hookimpl
def wisp_configure(app):
    CALLS.append("configure")


@wisp.command(description="Greet someone.")
async def greet(ctx, name: str = "world") -> str:
    return f"greetings, {name} (configured: {CALLS})"
"""


def write_dist(where: Path, dist: str, module: str, ep_name: str, code: str) -> Path:
    folder = where / dist
    (folder / module).mkdir(parents=True)
    (folder / module / "__init__.py").write_text(textwrap.dedent(code), encoding="utf-8")
    (folder / "pyproject.toml").write_text(
        textwrap.dedent(f"""
        [build-system]
        requires = ["hatchling"]
        build-backend = "hatchling.build"

        [project]
        name = "{dist}"
        version = "1.0.0"
        dependencies = ["wisp-framework"]

        [project.entry-points.wisp]
        {ep_name} = "{module}"
    """),
        encoding="utf-8",
    )
    return folder


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = tmp_path_factory.mktemp("dist")
    good = write_dist(where, "wisp-greet", "wisp_greet", "greet", GREET)
    broken = write_dist(
        where,
        "wisp-broken",
        "wisp_broken",
        "broken",
        "import wisp\n\nraise RuntimeError('missing GREETING_API_KEY')\n",
    )
    env_dir = where / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(env_dir)], check=True, timeout=300)
    pip = [
        str(env_dir / "bin" / "python"),
        "-m",
        "pip",
        "install",
        "-q",
        "--disable-pip-version-check",
    ]
    done = subprocess.run(
        [*pip, str(ROOT), str(good), str(broken)], capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return env_dir


def wisp(venv: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WISP_")}
    return subprocess.run(
        [str(venv / "bin" / "wisp"), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env=env,
    )


def test_installed_plugin_is_listed_called_blockable_and_broken_one_isolated(
    venv: Path, tmp_path: Path
) -> None:
    helped = wisp(venv, "--help", cwd=tmp_path)
    assert helped.returncode == 0 and "doctor" in helped.stdout

    listed = wisp(venv, "plugins", cwd=tmp_path)
    rows = {line.split()[0]: line for line in listed.stdout.splitlines()[1:]}
    assert "wisp-greet 1.0.0" in rows["greet"] and "third-party" in rows["greet"]
    assert "wisp_configure" in rows["greet"]
    assert "wisp-framework" in rows["basics"] and "bundled" in rows["basics"]
    assert "broken" not in rows
    assert listed.returncode == 1
    assert (
        "FAILED: plugin 'broken' (wisp-broken 1.0.0, third-party) failed at import: "
        "entry point 'wisp_broken': RuntimeError: missing GREETING_API_KEY"
    ) in listed.stderr

    called = wisp(venv, "call", "greet", "name=ada", cwd=tmp_path)
    assert called.returncode == 0, called.stderr
    assert called.stdout == "greetings, ada (configured: ['configure'])\n"

    blocked = wisp(venv, "-p", "no:greet", "plugins", cwd=tmp_path)
    assert "greet " not in blocked.stdout.split("blocked:")[0]
    assert "blocked: greet (-p no:greet)" in blocked.stdout
    gone = wisp(venv, "-p", "no:greet", "call", "greet", cwd=tmp_path)
    assert gone.returncode == 2 and "no command 'greet'" in gone.stderr

    doctor = wisp(venv, "doctor", cwd=tmp_path)
    assert doctor.returncode == 1
    assert "FAIL plugin 'broken' (wisp-broken 1.0.0, third-party)" in doctor.stdout
    assert "configuration: ok" in doctor.stdout

    healthy = wisp(venv, "-p", "no:broken", "doctor", cwd=tmp_path)
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    assert "doctor: all good" in healthy.stdout

    strict = wisp(venv, "--strict-plugins", "call", "greet", cwd=tmp_path)
    assert strict.returncode == 3 and "wisp-broken 1.0.0" in strict.stderr
