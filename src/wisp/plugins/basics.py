"""Basic commands every bot wants: ``ping`` and ``help``.  Block with ``-p no:basics``."""

from __future__ import annotations

from wisp import PluginMetadata, WispContext, command

WISP_PLUGIN = PluginMetadata(
    name="basics",
    description="The ping and help commands.",
    api=">=1.0,<2",
    commands=("ping", "help"),
    data="Nothing.",
)


@command(description="Check that the bot answers.")
async def ping(ctx: WispContext) -> str:
    return "Pong!"


@command(name="help", description="List the commands this bot knows.")
async def help_(ctx: WispContext, command: str | None = None) -> str:
    commands = ctx.app.commands
    if command is not None:
        found = commands.get(command)
        if found is None:
            return f"No command called `{command}`."
        params = " ".join(f"<{p.name}>" if p.required else f"[{p.name}]" for p in found.params)
        return f"/{found.name} {params}".rstrip() + f"\n{found.description}"
    lines = [f"/{name} - {cmd.description}" for name, cmd in sorted(commands.items())]
    return "\n".join(lines) or "No commands."
