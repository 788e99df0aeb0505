"""Hooks the ``sentry`` plugin adds (through ``wisp_addhooks``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import wisp

if TYPE_CHECKING:
    from wisp import Wisp


@wisp.hookspec
def wisp_sentry_options(app: Wisp) -> Mapping[str, Any] | None:
    """Return more keyword arguments for ``sentry_sdk.init``.

    For what ``wisp.toml`` cannot say: a ``transport`` (tests pass one that
    records events), ``integrations``, a ``before_breadcrumb``.  Later
    plugins' keys win; ``before_send`` is wrapped, not replaced, so redaction
    always runs last.

    :param app: the application.

    ``wispconf.py`` files: all.
    """
