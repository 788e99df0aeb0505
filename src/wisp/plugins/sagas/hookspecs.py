"""Hooks the sagas plugin adds (through ``wisp_addhooks``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from wisp.markers import hookspec

if TYPE_CHECKING:
    from wisp.app import Wisp


@hookspec
def wisp_sagas(app: Wisp) -> Sequence[Any] | None:
    """Return the sagas this plugin declares: :class:`wisp.plugins.sagas.api.Saga`
    or :class:`~wisp.plugins.sagas.api.SagaDefinition` objects.

    Two plugins declaring the same saga name is an error naming both.  A
    run records its saga's name and version; recovery refuses a run whose
    definition here has another version (or other steps).

    :param app: The application (configured).

    ``wispconf.py`` files: all.
    """


@hookspec
def wisp_saga_transition(app: Wisp, run: Any, step: str | None, event: str) -> None:
    """Called after each journal write of a saga run this process owns.

    ``event`` is one of ``started``, ``step.started``, ``step.retrying``,
    ``step.completed``, ``step.failed``, ``compensating``,
    ``compensation.started``, ``compensation.retrying``,
    ``compensation.completed``, ``compensation.failed``, ``completed``,
    ``compensated``, ``needs_attention``.  The write is durable when this is
    called; use it for metrics or tracing, never to change ``run`` (it is
    the engine's own record).  Exceptions propagate into the engine: keep
    it cheap and safe.

    :param app: The application.
    :param run: The :class:`~wisp.plugins.sagas.api.Run` as just journaled.
    :param step: The step's name, or None for run-level events.
    :param event: What was journaled.

    ``wispconf.py`` files: all.
    """
