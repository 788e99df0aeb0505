"""wisp-prometheus: a real scrape of /metrics, parsed with prometheus-client's parser."""

from __future__ import annotations

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

import wisp

PLUGINS = ["metrics", "prometheus"]


@wisp.command()
async def ping(ctx: wisp.WispContext) -> str:
    return "pong"


@wisp.command()
async def broken(ctx: wisp.WispContext) -> str:
    raise wisp.UserError("no")


class Commands:
    @wisp.hookimpl
    def wisp_commands(self) -> list[wisp.Command]:
        return [ping, broken]


def make_app(wisp_project, toml: str = "[prometheus]\nport = 0\n", **kw) -> wisp.Wisp:
    wisp_project.write("wisp.toml", toml)
    app = wisp_project.app(plugins=kw.pop("plugins", PLUGINS), **kw)
    app.register(Commands(), "commands")
    return app


async def scrape(url: str) -> dict[str, dict[tuple, float]]:
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=")
        text = await response.text()
    samples: dict[str, dict[tuple, float]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return samples


async def test_scrape_parses_with_prometheus_clients_own_parser(wisp_project) -> None:
    app = make_app(wisp_project)
    async with app:
        for _ in range(2):
            await app.call("ping")
        await app.call("broken")
        app.services.get("metrics").set_gauge("queue.depth", 4, queue="default")
        service = app.services.get("prometheus")
        assert service.url.startswith("http://127.0.0.1:")
        assert service.url.endswith("/metrics")
        assert (await service.health()).detail == f"serving {service.url}"
        s = await scrape(service.url)

    total = s["wisp_commands_total"]
    assert total[(("command", "ping"), ("status", "ok"))] == 2
    assert total[(("command", "broken"), ("status", "user_error"))] == 1
    # Histograms: cumulative buckets, +Inf equal to the count, a sum.
    count = s["wisp_commands_duration_seconds_count"][(("command", "ping"),)]
    assert count == 2
    buckets = {
        dict(k)["le"]: v
        for k, v in s["wisp_commands_duration_seconds_bucket"].items()
        if dict(k)["command"] == "ping"
    }
    assert buckets["+Inf"] == 2
    ordered = sorted(((float(le), n) for le, n in buckets.items()), key=lambda x: x[0])
    assert [n for _, n in ordered] == sorted(n for _, n in ordered)
    assert s["wisp_commands_duration_seconds_sum"][(("command", "ping"),)] > 0
    assert s["queue_depth"][(("queue", "default"),)] == 4
    assert "process_cpu_seconds_total" in s or "python_info" in s  # process_metrics = true


async def test_only_the_configured_path_is_served_and_stop_closes_the_port(
    wisp_project,
) -> None:
    app = make_app(wisp_project, '[prometheus]\nport = 0\npath = "/m"\nprocess_metrics = false\n')
    async with app:
        url = app.services.get("prometheus").url
        assert url.endswith("/m")
        async with aiohttp.ClientSession() as http:
            async with http.get(url.removesuffix("/m") + "/metrics") as response:
                assert response.status == 404
            s = await scrape(url)
        assert "python_info" not in s
    async with aiohttp.ClientSession() as http:
        with pytest.raises(aiohttp.ClientConnectionError):
            await http.get(url)


async def test_a_busy_port_is_reported_and_the_bot_still_starts(wisp_project) -> None:
    first = make_app(wisp_project)
    async with first:
        port = first.services.get("prometheus").url.split(":")[2].split("/")[0]
        second = make_app(wisp_project, f"[prometheus]\nport = {port}\n")
        async with second:
            assert (await second.call("ping")).ok
            health = await second.services.get("prometheus").health()
            assert not health.ok
            assert health.detail.startswith(f"[prometheus] cannot listen on 127.0.0.1:{port}: ")
            assert second.services.get("prometheus").url == ""
            # Not a reason to take the bot out of service (`/readyz`).
            assert (await second.services.ready_all())["prometheus"].ok
        # The first one still serves.
        assert "wisp_commands_total" not in await scrape(first.services.get("prometheus").url)


def test_bad_config_names_the_key(wisp_project) -> None:
    app = make_app(wisp_project, '[prometheus]\nport = 70000\npath = "metrics"\n')
    with pytest.raises(wisp.ConfigError) as info:
        app.configure()
    text = str(info.value)
    assert "prometheus.port" in text
    assert "between 0 and 65535" in text
    assert "prometheus.path" in text
    assert "must start with /" in text


def test_without_the_metrics_plugin_it_is_left_out(wisp_project) -> None:
    app = make_app(wisp_project, plugins=["prometheus"], block=["metrics"]).configure()
    failures = [f.describe() for f in app.pluginmanager.failures]
    assert any("prometheus" in f and "metrics" in f for f in failures), failures
    assert not app.pluginmanager.has_plugin("prometheus")
