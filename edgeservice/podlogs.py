"""The ``podlog`` stream producer: a container's log, read from the shim's CRI files on this node.

The cloud asks for a pod by namespace/name plus the uid it knows; the edge answers from its own cache, so a
pod that was replaced meanwhile is refused rather than confused with its successor. Reading is done in
bounded slices (``edgeservice.edged.logs``) and sent as the cloud grants credit.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from app.envelope import Message
from app.resources import PODS, JSONObject, tunnel_resource
from edgeservice.edged import Edged
from edgeservice.edged.logs import LogOptions, follow, parse_time, read_log
from edgeservice.metamanager import MetaManager
from edgeservice.streams import StreamRejected, StreamSink


def _int(params: JSONObject, key: str) -> int | None:
    value: Any = params.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class PodLogProducer:
    def __init__(self, meta: MetaManager, edged: Edged, node: str) -> None:
        self.meta = meta
        self.edged = edged
        self.node = node

    async def __call__(
        self, namespace: str, name: str, params: JSONObject, sink: StreamSink, msg: Message
    ) -> None:
        pod = self.meta.get(tunnel_resource(PODS, namespace, name))
        uid = str(params.get("uid") or "")
        if pod is None or (uid and pod.get("metadata", {}).get("uid") != uid):
            raise StreamRejected(404, "NotFound", f'pods "{name}" not found on node {self.node}')
        uid = str(pod["metadata"]["uid"])
        container = str(params.get("container") or "")
        path = self.edged.log_path(uid, container)
        if path is None:
            raise StreamRejected(
                400,
                "BadRequest",
                f'container "{container}" in pod "{name}" is waiting to start: ContainerCreating',
            )
        options = self._options(params, uid, container, name)
        sink.accept(msg)
        if params.get("follow"):
            async for chunk in follow(path, options):
                await sink.send(chunk.decode("utf-8", "replace"))
            return
        for chunk in read_log(path, options):
            await sink.send(chunk.decode("utf-8", "replace"))
            await asyncio.sleep(0)  # one bounded slice at a time: the node's other work goes on

    def _options(self, params: JSONObject, uid: str, container: str, name: str) -> LogOptions:
        since: float | None = None
        until: float | None = None
        since_seconds = _int(params, "sinceSeconds")
        if since_seconds is not None:
            since = time.time() - since_seconds
        if isinstance(params.get("sinceTime"), str):
            since = parse_time(params["sinceTime"])
        if params.get("previous"):
            since, until = self._previous_window(uid, container, name)
        return LogOptions(
            tail_lines=_int(params, "tailLines"),
            since_time=since,
            until_time=until,
            timestamps=bool(params.get("timestamps")),
            limit_bytes=_int(params, "limitBytes"),
        )

    def _previous_window(self, uid: str, container: str, name: str) -> tuple[float | None, float | None]:
        status = self.edged.status_of(uid) or {}
        for cs in status.get("containerStatuses", []) + status.get("initContainerStatuses", []):
            if cs.get("name") == container:
                terminated = cs.get("lastState", {}).get("terminated")
                if terminated:
                    return parse_time(terminated.get("startedAt", "")), parse_time(
                        terminated.get("finishedAt", "")
                    )
        raise StreamRejected(
            400, "BadRequest", f'previous terminated container "{container}" in pod "{name}" not found'
        )
