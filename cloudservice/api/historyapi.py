"""The telemetry history of a device, for the UIs' charts: a read-only ``history`` subresource of Devices.

``GET /apis/devices.kubeedge.io/v1beta1/namespaces/{namespace}/devices/{name}/history`` answers::

    {"kind": "DeviceHistory", "apiVersion": "devices.kubeedge.io/v1beta1",
     "metadata": {"name": ..., "namespace": ...}, "series": {prop: [{"start", "end", "min", "max",
     "mean", "count", "last"}, ...]}}

from the :class:`~cloudservice.history.History` the hub fills with the edges' window summaries. Query
parameters: ``property`` (only that property) and ``sinceMs`` (only points whose window ended after it, in
epoch milliseconds). A malformed parameter is a 400 Status whose message and cause name it; a device with no
history (unknown, or nothing received since the cloud started) is a 404 Status.

Authentication is the API app's middleware's job, so the handler has none; it answers Status objects itself
(rather than raising) so that it behaves the same on a bare application in tests. Not done: watch (a chart
polls with ``sinceMs``), Table output, checking that the Device object exists in the store.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from app.resources import DEVICES
from cloudservice.api.status import Cause, failure_status
from cloudservice.history import History

API_VERSION = DEVICES.api_version
KIND = "DeviceHistory"
PATH = f"/apis/{DEVICES.group}/{DEVICES.version}/namespaces/{{namespace}}/devices/{{name}}/history"
# sinceMs is parsed as the apiserver parses integer parameters: int64.
_MAX_MS = (1 << 63) - 1


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=json.dumps(body, separators=(",", ":")).encode(), status=status, content_type="application/json"
    )


def _bad_parameter(param: str, message: str) -> web.Response:
    cause = Cause(field=param, message=message)
    return _json(failure_status(400, "BadRequest", f"{param}: {message}", causes=[cause]), 400)


def add_history_api(app: web.Application, history: History) -> None:
    """Register the device history route on ``app``. Register it before the API's catch-all
    ``/apis/{group}/{version}/{path:.+}`` route, which would otherwise answer 404 for it."""

    async def get_history(request: web.Request) -> web.StreamResponse:
        namespace, name = request.match_info["namespace"], request.match_info["name"]
        prop = request.query.get("property")
        if prop is not None and not prop:
            return _bad_parameter("property", "must not be empty")
        since_ms: int | None = None
        raw = request.query.get("sinceMs")
        if raw is not None:
            try:
                since_ms = int(raw)
            except ValueError:
                return _bad_parameter("sinceMs", f"invalid integer {raw[:40]!r}")
            if not 0 <= since_ms <= _MAX_MS:
                return _bad_parameter("sinceMs", "must be between 0 and 2^63-1 milliseconds")
        await history.load(namespace, name)
        if not history.known(namespace, name):
            message = f'{DEVICES.plural}.{DEVICES.group} "{name}" has no history'
            status = failure_status(
                404, "NotFound", message, name=name, kind=DEVICES.plural, group=DEVICES.group
            )
            return _json(status, 404)
        body = {
            "kind": KIND,
            "apiVersion": API_VERSION,
            "metadata": {"name": name, "namespace": namespace},
            "series": history.series(namespace, name, prop, since_ms),
        }
        return _json(body)

    app.router.add_get(PATH, get_history)
