"""Wisp commands to Discord application-command JSON, and interaction data back."""

from __future__ import annotations

from typing import Literal

import pytest

import wisp
from wisp.plugins.discord.appcommands import commands_payload, payload_hash, read_invocation

pytestmark = pytest.mark.needs_plugin("discord")


async def _suggest(ctx, current):
    return ["red", "green"]


@wisp.command(description="Roll dice.\nMore text that Discord never sees.")
async def roll(ctx, sides: int = 6, mode: Literal["sum", "max"] = "sum") -> str:
    return ""


@wisp.command(name="policy set", description="Add a rule.")
async def policy_set(ctx, capability: str, allow: bool) -> str:
    return ""


@wisp.command(name="policy list")
async def policy_list(ctx) -> str:
    return ""


@wisp.command(
    name="config colour pick",
    params=[
        wisp.Param("colour", wisp.ParamType.STRING, "A colour", autocomplete=_suggest),
        wisp.Param("who", wisp.ParamType.USER, required=False),
    ],
)
async def colour_pick(ctx, colour: str, who: int | None = None) -> str:
    return ""


def test_payload_maps_options_choices_groups_and_autocomplete() -> None:
    payload = commands_payload([roll, policy_set, policy_list, colour_pick])
    assert [c["name"] for c in payload] == ["config", "policy", "roll"]
    config, policy, roll_json = payload
    assert roll_json == {
        "type": 1,
        "name": "roll",
        "description": "Roll dice.",
        "options": [
            {"type": 4, "name": "sides", "description": "sides", "required": False},
            {
                "type": 3,
                "name": "mode",
                "description": "mode",
                "required": False,
                "choices": [{"name": "sum", "value": "sum"}, {"name": "max", "value": "max"}],
            },
        ],
    }
    assert [o["name"] for o in policy["options"]] == ["list", "set"]
    assert all(o["type"] == 1 for o in policy["options"])
    assert policy["options"][1]["options"] == [
        {"type": 3, "name": "capability", "description": "capability", "required": True},
        {"type": 5, "name": "allow", "description": "allow", "required": True},
    ]
    [group] = config["options"]
    assert (group["type"], group["name"]) == (2, "colour")
    [sub] = group["options"]
    assert sub["name"] == "pick"
    assert sub["options"] == [
        {
            "type": 3,
            "name": "colour",
            "description": "A colour",
            "required": True,
            "autocomplete": True,
        },
        {"type": 6, "name": "who", "description": "who", "required": False},
    ]
    assert payload_hash(payload) == payload_hash(
        commands_payload([colour_pick, policy_list, policy_set, roll])
    )
    assert payload_hash(payload) != payload_hash(commands_payload([roll]))


@pytest.mark.parametrize(
    ("names", "message"),
    [
        (["Roll"], "cannot be a Discord command name"),
        (["roll", "roll x"], "cannot also be a group of subcommands"),
    ],
)
def test_invalid_command_sets_are_refused_with_the_culprit(names, message) -> None:
    async def handler(ctx) -> str:
        return ""

    cmds = [wisp.Command(n, handler) for n in names]
    with pytest.raises(wisp.PluginError, match=message):
        commands_payload(cmds)


def test_read_invocation_walks_groups_and_finds_the_focused_option() -> None:
    data = {
        "name": "config",
        "options": [
            {
                "type": 2,
                "name": "colour",
                "options": [
                    {
                        "type": 1,
                        "name": "pick",
                        "options": [
                            {"type": 3, "name": "colour", "value": "re", "focused": True},
                            {"type": 6, "name": "who", "value": "80351110224678912"},
                        ],
                    }
                ],
            }
        ],
    }
    assert read_invocation(data) == (
        "config colour pick",
        {"colour": "re", "who": "80351110224678912"},
        "colour",
    )
    assert read_invocation({"name": "roll"}) == ("roll", {}, None)
    # and the kernel converts the snowflake string
    assert (
        colour_pick.bind({"colour": "red", "who": "80351110224678912"})["who"] == 80351110224678912
    )
