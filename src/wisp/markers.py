"""The pluggy markers of project ``wisp``."""

from __future__ import annotations

import pluggy

__all__ = ["PROJECT", "hookimpl", "hookspec"]

PROJECT = "wisp"

#: Marks a function as a hook specification (kernel and ``wisp_addhooks`` modules).
hookspec = pluggy.HookspecMarker(PROJECT)

#: Marks a function in a plugin as a hook implementation.
hookimpl = pluggy.HookimplMarker(PROJECT)
