"""The plugin metadata record: what a plugin is, what it needs, what it stores.

A plugin module (or plugin object) declares it as the attribute
``WISP_PLUGIN``::

    WISP_PLUGIN = wisp.PluginMetadata(
        name="reminders",
        description="/remind and friends, fired through durable jobs.",
        api=">=1.0,<2",
        requires=("storage", "jobs"),
        intents=("guilds",),
        commands=("remind", "reminders list", "reminders cancel"),
        data="Reminder texts with the user and channel ids that set them.",
        user_data=True,
    )

The kernel reads it *before* registering the plugin, so a plugin written for
another plugin API is left out (and reported with both versions) without any
of its hooks running.  A plain attribute, not a hook, for exactly that reason.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import attrs
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

__all__ = [
    "METADATA_ATTRIBUTE",
    "PLUGIN_API_VERSION",
    "PluginMetadata",
    "WispDeprecationWarning",
    "hook_deprecated",
    "normalize",
    "parse_requirement",
    "read_metadata",
]

#: The version of the plugin API (the hookspecs and the public kernel objects)
#: this Wisp provides.  The minor number grows when hooks or parameters are
#: added or deprecated, the major number when a deprecated one is removed.
PLUGIN_API_VERSION = "1.0"

#: The module (or object) attribute holding a plugin's record.
METADATA_ATTRIBUTE = "WISP_PLUGIN"


def _tuple(value: Iterable[str] | str) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else tuple(value)


def _specifier(_: Any, attribute: attrs.Attribute[str], value: str) -> None:
    try:
        SpecifierSet(value)
    except InvalidSpecifier:
        raise ValueError(
            f"PluginMetadata.api: {value!r} is not a version range (e.g. '>=1.0,<2')"
        ) from None


def _requirements(_: Any, attribute: attrs.Attribute[tuple[str, ...]], value: Any) -> None:
    for item in value:
        parse_requirement(item, f"PluginMetadata.{attribute.name}")


def _version(_: Any, attribute: attrs.Attribute[str | None], value: str | None) -> None:
    if value is None:
        return
    try:
        Version(value)
    except InvalidVersion:
        raise ValueError(f"PluginMetadata.version: {value!r} is not a version") from None


@attrs.frozen
class PluginMetadata:
    """A plugin's record, read by ``wisp plugins``, ``wisp doctor`` and the kernel.

    Every field but ``name`` is optional; ``version=None`` means "the
    distribution's version" (bundled plugins: the framework's).  ``data`` is
    the statement of the end-user data the plugin stores, in plain words;
    ``None`` means "no statement" and is listed by ``wisp data delete-user``.
    ``user_data=True`` says that data is keyed by Discord user, so the plugin
    implements ``wisp_delete_user_data``.
    """

    name: str
    version: str | None = attrs.field(default=None, validator=_version)
    description: str = ""
    #: The plugin API versions the plugin supports, as a PEP 440 range.
    api: str = attrs.field(default="", validator=_specifier)
    #: Plugins it needs, by plugin or distribution name, with optional ranges.
    requires: tuple[str, ...] = attrs.field(default=(), converter=_tuple, validator=_requirements)
    #: Discord gateway intents (``discord.Intents`` flag names).
    intents: tuple[str, ...] = attrs.field(default=(), converter=_tuple)
    #: Discord bot permissions (``discord.Permissions`` flag names).
    permissions: tuple[str, ...] = attrs.field(default=(), converter=_tuple)
    #: Slash/prefix commands it contributes.
    commands: tuple[str, ...] = attrs.field(default=(), converter=_tuple)
    #: Capabilities it defines (``wisp policy``).
    capabilities: tuple[str, ...] = attrs.field(default=(), converter=_tuple)
    data: str | None = None
    user_data: bool = False

    def supports(self, api_version: str = PLUGIN_API_VERSION) -> bool:
        """Whether ``api_version`` is in the plugin's ``api`` range (empty: any)."""
        return not self.api or SpecifierSet(self.api).contains(api_version, prereleases=True)

    def as_dict(self) -> dict[str, Any]:
        return {
            f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v
            for f in attrs.fields(PluginMetadata)
        }


def parse_requirement(text: str, where: str) -> Requirement:
    """``text`` as a requirement (``name`` or ``name>=1.2``); a clear error names ``where``."""
    prefix = f"{where}: " if where else ""
    try:
        req = Requirement(text)
    except InvalidRequirement as exc:
        raise ValueError(
            f"{prefix}{text!r} is not a plugin requirement such as 'wisp-foo>=1.2' ({exc})"
        ) from None
    if req.marker is not None or req.url or req.extras:
        raise ValueError(
            f"{prefix}{text!r}: only a name and a version range are allowed, "
            "no extras, markers or URLs"
        )
    return req


def normalize(name: str) -> str:
    """Plugin and distribution names compare like distribution names (PEP 503)."""
    return str(canonicalize_name(name))


def read_metadata(plugin: object) -> PluginMetadata | None:
    """The plugin's ``WISP_PLUGIN`` record, or ``None``; a wrong type is a ``TypeError``."""
    record = getattr(plugin, METADATA_ATTRIBUTE, None)
    if record is None or isinstance(record, PluginMetadata):
        return record
    raise TypeError(f"{METADATA_ATTRIBUTE} is {type(record).__name__}, not wisp.PluginMetadata")


class WispDeprecationWarning(DeprecationWarning):
    """A plugin uses a deprecated hook or hook argument.

    It lives at least two minor releases and becomes an error at the next
    major release (see docs/hook-deprecation.md).  ``-W
    error::wisp.WispDeprecationWarning`` turns it into a load failure now.
    """


def hook_deprecated(replacement: str, *, since: str, removal: str) -> WispDeprecationWarning:
    """The warning to pass to a hookspec's ``warn_on_impl``/``warn_on_impl_args``."""
    return WispDeprecationWarning(
        f"deprecated since Wisp {since} and removed in {removal}; {replacement}"
    )
