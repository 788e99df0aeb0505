"""Sessions: ``tests`` (pytest), ``lint`` (ruff + docs freshness), ``typecheck`` (mypy --strict).

``nox`` alone runs those three; ``nox -s bench`` runs the benchmarks.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import nox

nox.options.default_venv_backend = "uv|virtualenv"
nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.error_on_missing_interpreters = True

PYTHON = "3.11"


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """Install the project and contrib plugins as a user would (not editable); run pytest."""
    session.install(".[test]", "./contrib/wisp-uptime")
    session.run("pytest", *session.posargs)


#: contrib/ distributions with their own tests (``contrib/NAME/tests``), each run by
#: ``nox -s "contrib(NAME)"`` against the built ``wisp-framework`` wheel.
CONTRIB: list[str] = [
    "wisp-prometheus",
    "wisp-sentry",
    "wisp-opentelemetry",
    "wisp-reminders",
    "wisp-moderation",
]


@nox.session(python=PYTHON)
@nox.parametrize("name", CONTRIB, ids=CONTRIB)
def contrib(session: nox.Session, name: str) -> None:
    """One contrib plugin from its built wheel, beside the built wisp-framework wheel."""
    tmp = Path(session.create_tmp())
    session.install("build")
    for source, out in ((".", tmp / "framework"), (f"contrib/{name}", tmp / "plugin")):
        shutil.rmtree(out, ignore_errors=True)  # one wheel each, never last run's
        session.run("python", "-m", "build", "--wheel", "--outdir", str(out), source, silent=True)
    (framework,) = (tmp / "framework").glob("*.whl")
    (plugin,) = (tmp / "plugin").glob("*.whl")
    # Extras on the wheels: the plugin's test needs and the framework's fixtures.
    session.install(f"{framework}[test]", f"{plugin}[test]")
    session.run("pytest", f"contrib/{name}/tests", *session.posargs)


@nox.session(python=PYTHON)
def scaffold(session: nox.Session) -> None:
    """`wisp plugin new`: generate a plugin, install it with the built wheel, run its tests."""
    session.install(".[test]")
    session.run("pytest", "tests/test_scaffold.py", *session.posargs)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    """ruff, and the generated hook reference must match the hookspecs."""
    session.install("ruff>=0.8", ".")
    paths = ["src", "tests", "benchmarks", "docs", "contrib", "noxfile.py"]
    session.run("ruff", "check", *paths)
    session.run("ruff", "format", "--check", *paths)
    session.run("python", "docs/gen_hooks.py", "--check")


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    """mypy --strict on src/ (settings in pyproject.toml)."""
    session.install("mypy>=1.10", ".[testing]")
    session.run("mypy")


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Benchmarks: ratios against bare baselines and peer libraries, printed, never asserted."""
    session.install(".[bench]")
    session.run("python", "benchmarks/pipeline.py", *session.posargs)
    session.run("python", "benchmarks/offline_roundtrip.py")
    session.run("python", "benchmarks/policy.py")
    session.run("python", "benchmarks/ratelimit.py")
    session.run("python", "benchmarks/resilience.py")
    session.run("python", "benchmarks/jobs.py")
    session.run("python", "benchmarks/sagas.py")
    session.run("python", "benchmarks/idempotency.py")
    session.run("python", "benchmarks/locks.py")
    session.run("python", "benchmarks/observability.py")
    session.run("python", "benchmarks/startup.py")
