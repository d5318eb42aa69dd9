"""``--edge``: the TUI attached to this node's local edge API (default http://127.0.0.1:10550).

The local API (edgeservice/localapi.py) serves the cloud's read paths for this node from the edge's cache,
without watch, so :class:`EdgeSource` polls each list every ``POLL_INTERVAL`` seconds and yields a RESYNC
per poll: the views are the same as against the cloud (``tui.data.Source``). Every answer carries
``X-FleetOps-Cloud-Connected``; the last value read drives the header's "EDGE-LOCAL: cloud unreachable"
banner. Reads and logs go through :class:`~app.client.AsyncClient` (the paths are the cloud's); restart
is the local API's one write, a POST with ``X-FleetOps-Request: restart``. Deleting is refused here: the
cloud owns the desired state. Deployments are not known at the edge (an empty list); a 404 for a list the
edge does not serve (an older edge without devices or events) is an empty list too. The device screen
polls one Device and its DeviceModel (:meth:`EdgeSource.device`, :meth:`EdgeSource.device_model`) the
same way, every ``poll_interval``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Self
from urllib.parse import quote

import aiohttp

from app.client import ApiError, AsyncClient, ClientError, ConnectionFailed, LineStream, NotFound, WatchEvent
from app.resources import DEVICEMODELS, JSONObject, ResourceType
from tui.data import RESOURCES, Connection, Kind, NodeUsage, NotSupported, describe_error

logger = logging.getLogger(__name__)

POLL_INTERVAL = 2.0
CONNECTED_HEADER = "X-FleetOps-Cloud-Connected"


class EdgeSource:
    """See the module docstring."""

    edge = True
    client: AsyncClient | None = None  # the camera/deploy/rollout screens need the cloud
    kubeconfig: str | None = None

    def __init__(self, url: str, *, poll_interval: float = POLL_INTERVAL) -> None:
        self.url = url.rstrip("/")
        self.description = self.url
        self.poll_interval = poll_interval
        self.reader = AsyncClient(self.url, namespace="default")
        self._session: aiohttp.ClientSession | None = None
        self._state = Connection("connecting")
        self._ever = False

    # -- lists ---------------------------------------------------------------------------------------

    def events(self, kind: Kind) -> _Poller:
        return _Poller(self, kind)

    async def poll(self, kind: Kind) -> tuple[JSONObject, ...]:
        """One list of ``kind``; records the link state and the cloud-connected header."""
        if kind == "deploy":
            return ()
        return await self._list(RESOURCES[kind], None)

    async def device(self, namespace: str, name: str) -> JSONObject | None:
        """One Device as this edge knows it (its twin state as ``status``), None when the edge has no such
        device."""
        return await self._one(RESOURCES["devices"], namespace, name)

    async def device_model(self, namespace: str, name: str) -> JSONObject | None:
        """One DeviceModel as this edge cached it (the cloud sends a node the models of its devices), None
        when the edge has none by that name or its local API serves no models (an older edge)."""
        return await self._one(DEVICEMODELS, namespace, name)

    async def _list(self, rt: ResourceType, namespace: str | None) -> tuple[JSONObject, ...]:
        body = await self._read(_path(rt, namespace))
        items = body.get("items") if isinstance(body, dict) else None
        out = tuple(i for i in (items or []) if isinstance(i, dict))
        for item in out:
            item.setdefault("apiVersion", rt.api_version)
            item.setdefault("kind", rt.kind)
        return out

    async def _one(self, rt: ResourceType, namespace: str, name: str) -> JSONObject | None:
        body = await self._read(f"{_path(rt, namespace)}/{quote(name, safe='')}")
        if not isinstance(body, dict):
            return None
        body.setdefault("apiVersion", rt.api_version)
        body.setdefault("kind", rt.kind)
        return body

    async def _read(self, path: str) -> object:
        """The JSON at ``path``, None for a 404; records the link state and the cloud-connected header."""
        session = await self._http()
        try:
            async with session.get(self.url + path, headers={"Accept": "application/json"}) as resp:
                cloud = resp.headers.get(CONNECTED_HEADER)
                if resp.status == 404:
                    body: object = None
                elif resp.status >= 400:
                    raise ApiError(resp.status, resp.reason or "", (await resp.text())[:300])
                else:
                    try:
                        body = await resp.json(content_type=None)
                    except ValueError as exc:  # not JSON: a failed poll, not a crashed worker
                        message = f"GET {path}: not JSON: {exc}"
                        raise ApiError(resp.status, "InvalidResponse", message) from exc
        except (aiohttp.ClientError, TimeoutError) as exc:
            failure = ConnectionFailed(self.url, f"GET {path}: {exc or type(exc).__name__}")
            self._state = Connection("reconnecting" if self._ever else "unreachable", str(failure))
            raise failure from exc
        self._ever = True
        connected = None if cloud is None else cloud == "true"
        self._state = Connection("connected", "", connected)
        return body

    async def node_usage(self) -> dict[str, NodeUsage]:
        """The local API serves no metrics.k8s.io: usage is the cloud's view (``kubectl top``)."""
        return {}

    def connection(self) -> Connection:
        return self._state

    # -- actions -------------------------------------------------------------------------------------

    def logs(self, namespace: str, name: str, *, container: str | None, timestamps: bool) -> LineStream:
        return self.reader.logs(
            name, namespace, container=container, follow=True, tail_lines=500, timestamps=timestamps
        )

    async def get(self, kind: Kind, namespace: str, name: str) -> JSONObject:
        return await self.reader.get(RESOURCES[kind], name, namespace)

    async def delete_pod(self, namespace: str, name: str) -> None:
        raise NotSupported("the edge's local API cannot delete pods (the cloud owns them); use restart")

    async def restart_pod(self, namespace: str, name: str) -> str:
        path = f"/api/v1/namespaces/{quote(namespace, safe='')}/pods/{quote(name, safe='')}/restart"
        session = await self._http()
        try:
            async with session.post(self.url + path, headers={"X-FleetOps-Request": "restart"}) as resp:
                body = await resp.json(content_type=None)
                if resp.status >= 400:
                    message = body.get("message", "") if isinstance(body, dict) else ""
                    raise ApiError(resp.status, resp.reason or "", str(message))
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ConnectionFailed(self.url, f"POST {path}: {exc}") from exc
        message = body.get("message") if isinstance(body, dict) else None
        return str(message or f"restarting pod {namespace}/{name} locally")

    async def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        return self._session

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()
        await self.reader.aclose()


def _path(rt: ResourceType, namespace: str | None) -> str:
    prefix = f"/apis/{rt.group}/{rt.version}" if rt.group else f"/api/{rt.version}"
    scope = f"/namespaces/{quote(namespace, safe='')}" if namespace is not None else ""
    return f"{prefix}{scope}/{rt.plural}"


class _Poller:
    """A RESYNC per successful poll; failures are logged, shown in the header, and retried."""

    def __init__(self, source: EdgeSource, kind: Kind) -> None:
        self.source = source
        self.kind = kind
        self._first = True
        self._closed = False

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> WatchEvent:
        while not self._closed:
            if not self._first:
                await asyncio.sleep(self.source.poll_interval)
            self._first = False
            try:
                items = await self.source.poll(self.kind)
            except NotFound:
                items = ()
            except (ClientError, ApiError) as exc:
                logger.warning("edge poll of %s failed: %s", self.kind, describe_error(exc))
                continue
            return WatchEvent("RESYNC", {}, items)
        raise StopAsyncIteration

    async def aclose(self) -> None:
        self._closed = True
