"""Sessions: ``tests`` (pytest), ``lint`` (ruff + docs freshness), ``typecheck`` (mypy --strict).

``nox`` alone runs those three; ``nox -s bench`` runs the benchmarks.
"""

from __future__ import annotations

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
