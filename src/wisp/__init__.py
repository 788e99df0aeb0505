"""Wisp: a Discord bot framework built like pytest, on a small pluggy kernel."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from wisp.app import Wisp
from wisp.cli.commands import CliCommand
from wisp.context import InvocationType, WispContext, current_context
from wisp.decisions import Capability, Decision, requires_capability
from wisp.errors import (
    ConfigError,
    ExternalServiceError,
    NotFound,
    PermissionDenied,
    PluginError,
    RateLimited,
    UserError,
    WispError,
)
from wisp.markers import hookimpl, hookspec
from wisp.metadata import (
    PLUGIN_API_VERSION,
    PluginMetadata,
    WispDeprecationWarning,
    hook_deprecated,
)
from wisp.pipeline import CallNext, Middleware, Order, middleware
from wisp.responses import Outcome, Response
from wisp.services import BaseService, Health, Service
from wisp.stash import Stash, StashKey
from wisp.targets import (
    Choice,
    Command,
    EventHandler,
    JobHandler,
    Param,
    ParamType,
    command,
    event_handler,
    job,
)
from wisp.tasks import cancel_and_wait

try:
    __version__ = version("wisp-framework")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = [
    "PLUGIN_API_VERSION",
    "BaseService",
    "CallNext",
    "Capability",
    "Choice",
    "CliCommand",
    "Command",
    "ConfigError",
    "Decision",
    "EventHandler",
    "ExternalServiceError",
    "Health",
    "InvocationType",
    "JobHandler",
    "Middleware",
    "NotFound",
    "Order",
    "Outcome",
    "Param",
    "ParamType",
    "PermissionDenied",
    "PluginError",
    "PluginMetadata",
    "RateLimited",
    "Response",
    "Service",
    "Stash",
    "StashKey",
    "UserError",
    "Wisp",
    "WispContext",
    "WispDeprecationWarning",
    "WispError",
    "__version__",
    "cancel_and_wait",
    "command",
    "current_context",
    "event_handler",
    "hook_deprecated",
    "hookimpl",
    "hookspec",
    "job",
    "middleware",
    "requires_capability",
]
