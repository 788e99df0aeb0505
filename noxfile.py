"""Sessions: ``tests`` (pytest), ``lint`` (ruff + docs freshness), ``typecheck`` (mypy --strict).

``nox`` alone runs those three; ``nox -s bench`` runs the benchmarks.  The plugin
matrix (``tests(kernel-only)``, ``tests(without=NAME)``, backends, ``tests(lowest)``,
``contrib(NAME)``, ``scaffold``) runs with ``nox -t matrix``; docs/testing-wisp.md
says which sessions to run when.
"""

from __future__ import annotations

import os
import shutil
import tomllib
from collections.abc import Callable
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
    session.run("pytest", *PARALLEL, *session.posargs)


def _bundled_plugins() -> list[str]:
    """The ``wisp`` entry points of pyproject.toml: every bundled plugin's name."""
    with open("pyproject.toml", "rb") as f:
        return sorted(tomllib.load(f)["project"]["entry-points"]["wisp"])


BUNDLED = _bundled_plugins()
#: What the test sessions install: the project as a user would, and the contrib
#: plugin tests/test_contrib.py loads as a third-party one.
TEST_INSTALL = (".[test]", "./contrib/wisp-uptime")
#: pytest-xdist: one worker per core, a test file's tests on one worker (they
#: share module-level fixtures and files).  Tests use their own PostgreSQL
#: schemas, Redis key prefixes and ports, so workers never meet.
PARALLEL = ("-n", "auto", "--dist", "loadfile")
#: The matrix sessions skip the slow tests; what is left waits on PostgreSQL,
#: Redis, sockets and timers more than it computes, so two workers per core
#: finish it in about three quarters of the time (57 s against 75 s on 2 cores).
MATRIX_PARALLEL = ("-n", str(2 * (os.cpu_count() or 1)), "--dist", "loadfile")
PG_URL = "WISP_TEST_DATABASE_URL"
REDIS_URL = "WISP_TEST_REDIS_URL"


def _pytest(
    session: nox.Session, *args: str, block: str = "", parallel: tuple[str, ...] = MATRIX_PARALLEL
) -> None:
    """pytest with ``WISP_TEST_BLOCK`` (tests/conftest.py blocks those plugins in every
    app and skips tests marked ``needs_plugin`` for one).  Exit code 5 (nothing
    collected) fails the session like any other non-zero code."""
    session.install(*TEST_INSTALL)
    env = {"WISP_TEST_BLOCK": block}
    session.run("pytest", *parallel, *args, *session.posargs, env=env)


def _matrix_session(name: str, doc: str) -> Callable[[Callable[[nox.Session], None]], object]:
    """Register ``func`` as session ``name`` (``tests(without=jobs)``) with ``doc``
    as the line ``nox -l`` shows; tagged ``matrix`` (``nox -t matrix``)."""

    def register(func: Callable[[nox.Session], None]) -> object:
        func.__doc__ = doc
        return nox.session(python=PYTHON, name=name, tags=["matrix"], default=False)(func)

    return register


@_matrix_session("tests(all)", "Every bundled plugin (and contrib wisp-uptime): the whole suite.")
def tests_all(session: nox.Session) -> None:
    _pytest(session, parallel=PARALLEL)


@_matrix_session(
    "tests(kernel-only)",
    "No bundled plugin: every one blocked (only the contrib wisp-uptime installed); kernel tests.",
)
def tests_kernel_only(session: nox.Session) -> None:
    _pytest(session, "-m", "not slow", block="*")


def _without(name: str) -> Callable[[nox.Session], None]:
    def run(session: nox.Session) -> None:
        _pytest(session, "-m", "not slow", block=name)

    return run


for _name in BUNDLED:
    _matrix_session(
        f"tests(without={_name})",
        f"Plugin '{_name}' blocked: tests needing it skip, the rest (not slow) pass.",
    )(_without(_name))


def _backend(expr: str, needs: tuple[str, ...]) -> Callable[[nox.Session], None]:
    def run(session: nox.Session) -> None:
        missing = [v for v in needs if not os.environ.get(v)]
        if missing:
            session.error(f"set {', '.join(missing)}: this session tests that backend")
        _pytest(session, "-m", "not slow", "-k", expr)

    return run


#: Backend sessions: the backend-parametrized tests (conformance suites, ids
#: ``[sqlite]``/``[postgresql]``/``[redis]``/``[memory]``) of one backend.
BACKENDS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "storage-sqlite": ("Storage, jobs, sagas, idempotency on SQLite.", "sqlite", ()),
    "storage-postgresql": (
        "Storage, jobs, sagas, idempotency, locks on PostgreSQL.",
        "postgresql",
        (PG_URL,),
    ),
    "memory": ("Rate limits, cache and resilience limits on the in-memory backends.", "memory", ()),
    "redis": (
        "Rate limits, jobs, cache, locks, idempotency on Redis.",
        "redis",
        (REDIS_URL,),
    ),
}
for _id, (_doc, _expr, _needs) in BACKENDS.items():
    _matrix_session(f"tests(backend={_id})", _doc)(_backend(_expr, _needs))


@_matrix_session(
    "tests(lowest)",
    "The lowest direct dependency versions pyproject.toml allows (uv lowest-direct).",
)
def tests_lowest(session: nox.Session) -> None:
    session.install("--resolution", "lowest-direct", *TEST_INSTALL)
    session.run("pytest", *MATRIX_PARALLEL, "-m", "not slow", *session.posargs)


#: contrib/ distributions with their own tests (``contrib/NAME/tests``), each run by
#: ``nox -s "contrib(NAME)"`` against the built ``wisp-framework`` wheel.
CONTRIB: list[str] = [
    "wisp-prometheus",
    "wisp-sentry",
    "wisp-opentelemetry",
    "wisp-reminders",
    "wisp-moderation",
]


@nox.session(python=PYTHON, tags=["matrix"])
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


@nox.session(python=PYTHON, tags=["matrix"])
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
    session.install("mypy>=1.10", ".[testing,interactions,nats]")
    session.run("mypy")


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """Benchmarks: ratios against bare baselines and peer libraries, printed, never asserted."""
    session.install(".[bench,interactions]")
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
    session.run("python", "benchmarks/scaleout.py", "--quick")
