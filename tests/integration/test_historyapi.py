"""The device history route over real HTTP: a bare aiohttp app on a free port, an aiohttp client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from cloudservice.api.historyapi import add_history_api
from cloudservice.history import History

JSONObject = dict[str, Any]
URL = "/apis/devices.kubeedge.io/v1beta1/namespaces/factory/devices/{name}/history"


def window(start: int, end: int, **props: float) -> JSONObject:
    data = {p: {"min": v, "max": v + 2, "mean": v + 1, "count": 5, "last": v + 2} for p, v in props.items()}
    return {"window": {"start": start, "end": end}, "data": data}


@pytest.fixture
async def client() -> AsyncIterator[tuple[aiohttp.ClientSession, str]]:
    history = History(max_points=10)
    history.add("factory", "press-1", window(0, 10_000, temperature=20.0, pressure=1.0))
    history.add("factory", "press-1", window(10_000, 20_000, temperature=21.0, pressure=1.5))
    history.add("factory", "press-1", window(20_000, 30_000, temperature=22.0))
    history.add("other", "press-2", window(0, 10_000, temperature=50.0))
    app = web.Application()
    add_history_api(app, history)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        async with aiohttp.ClientSession() as session:
            yield session, f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def get(client: tuple[aiohttp.ClientSession, str], path: str) -> tuple[int, JSONObject]:
    session, base = client
    async with session.get(base + path) as resp:
        assert resp.content_type == "application/json"
        return resp.status, await resp.json()


async def test_whole_history(client: tuple[aiohttp.ClientSession, str]) -> None:
    status, body = await get(client, URL.format(name="press-1"))
    assert status == 200
    assert body["kind"] == "DeviceHistory"
    assert body["apiVersion"] == "devices.kubeedge.io/v1beta1"
    assert body["metadata"] == {"name": "press-1", "namespace": "factory"}
    assert list(body["series"]) == ["pressure", "temperature"]
    assert [p["end"] for p in body["series"]["temperature"]] == [10_000, 20_000, 30_000]
    assert body["series"]["pressure"][1] == {
        "start": 10_000,
        "end": 20_000,
        "min": 1.5,
        "max": 3.5,
        "mean": 2.5,
        "count": 5,
        "last": 3.5,
    }


@pytest.mark.parametrize(
    ("query", "series_ends"),
    [
        ("?property=pressure", {"pressure": [10_000, 20_000]}),
        ("?sinceMs=10000", {"pressure": [20_000], "temperature": [20_000, 30_000]}),
        ("?sinceMs=20000", {"pressure": [], "temperature": [30_000]}),
        ("?property=temperature&sinceMs=25000", {"temperature": [30_000]}),
        ("?property=humidity", {}),  # a known device, an unknown property: nothing to chart
    ],
)
async def test_filters(
    client: tuple[aiohttp.ClientSession, str], query: str, series_ends: dict[str, list[int]]
) -> None:
    status, body = await get(client, URL.format(name="press-1") + query)
    assert status == 200
    assert {prop: [p["end"] for p in points] for prop, points in body["series"].items()} == series_ends


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ("?sinceMs=yesterday", "sinceMs"),
        ("?sinceMs=1.5", "sinceMs"),
        ("?sinceMs=", "sinceMs"),
        ("?sinceMs=-1", "sinceMs"),
        ("?sinceMs=99999999999999999999", "sinceMs"),
        ("?property=", "property"),
    ],
)
async def test_bad_parameters(client: tuple[aiohttp.ClientSession, str], query: str, param: str) -> None:
    status, body = await get(client, URL.format(name="press-1") + query)
    assert status == 400
    assert body["kind"] == "Status" and body["status"] == "Failure" and body["reason"] == "BadRequest"
    assert body["code"] == 400
    assert body["message"].startswith(f"{param}: ")
    assert body["details"]["causes"][0]["field"] == param


@pytest.mark.parametrize("name", ["nobody", "press-2"])  # press-2 has history, in another namespace
async def test_unknown_device(client: tuple[aiohttp.ClientSession, str], name: str) -> None:
    status, body = await get(client, URL.format(name=name))
    assert status == 404
    assert body["kind"] == "Status" and body["reason"] == "NotFound" and body["code"] == 404
    assert body["details"] == {"name": name, "kind": "devices", "group": "devices.kubeedge.io"}
    assert name in body["message"]
