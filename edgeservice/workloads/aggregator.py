"""The telemetry aggregator workload: per-device summaries of the adapters' readings over a time window.

One process Edged runs as a pod's container. Its config file (JSON) names the broker, the window length
in seconds and, optionally, the devices to aggregate (all devices when absent)::

    {"broker": "mqtt://127.0.0.1:1883", "window": 10.0, "devices": ["pump-1", "line-2"]}

It subscribes to ``$hw/events/device/+/twin/update``, the topic the protocol adapters publish actual
values on (:func:`app.twin.TwinUpdate.to_json`'s shape), and keeps, per device and property, the running
``min``, ``max``, ``mean``, ``count`` and ``last`` of the numeric values seen in the current window. At
the end of each window it publishes one summary per device that had samples on
``$ke/events/device/{id}/data/update`` (QoS 1)::

    {"event_id": "<uuid>", "timestamp": <ms>, "window": {"start": <ms>, "end": <ms>},
     "data": {"<prop>": {"min": x, "max": x, "mean": x, "count": n, "last": x}}}

A device without samples in a window publishes nothing: silence means "no data", not "all zeros".

A sample belongs to the window in which it *arrives*, not the one its ``metadata.timestamp`` names: the
adapter's clock and ours may disagree, and a late message must not reopen a window already published.
The timestamp only orders samples for ``last`` within a window. Values are strings on the wire
(``"12.5"``); one that is not a finite number (``"true"``, ``"open"``, ``"nan"``) is ignored, so a
BOOLEAN or STRING property simply never appears in the summary.

The window logic is pure (:class:`Window`, :func:`samples_of`, :func:`summary_payload`) and tested
without I/O; :class:`Aggregator` only moves messages. The MQTT connection reconnects with the adapters'
jittered exponential back-off, and summaries wait in the adapters' bounded :class:`Outbox` while the
broker is away. A bad config exits with :data:`EXIT_CONFIG` (2), naming the field.

Deliberately not done: keeping raw samples (percentiles, medians) — the running figures need constant
memory per property whatever the message rate; windows aligned to the wall clock; persisting a window
across restarts (a restarted pod starts a fresh window); aggregating ``expected`` values or state.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.resources import JSONObject
from edgeservice.workloads.adapter import (
    EXIT_CONFIG,
    Broker,
    ConfigError,
    Outbox,
    mqtt_session,
    now_ms,
    parse_broker,
    read_config,
    serve_until_signalled,
    workload_arguments,
)

log = logging.getLogger(__name__)

TWIN_UPDATE_FILTER = "$hw/events/device/+/twin/update"
_HW_PREFIX = "$hw/events/device/"
_TWIN_SUFFIX = "/twin/update"
QOS = 1  # at least once: a repeated summary carries the same event_id, so a consumer can drop it
# Shortest window accepted (seconds): below this the summaries are mostly scheduling noise.
MIN_WINDOW_S = 0.05


# Config ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AggregatorConfig:
    broker: Broker
    window_s: float
    devices: frozenset[str] | None  # None: every device


def parse_config(obj: Any) -> AggregatorConfig:
    """Validate the config's JSON; every problem is a ConfigError naming the field."""
    if not isinstance(obj, dict):
        raise ConfigError("the config must be a JSON object")
    broker = obj.get("broker")
    if not isinstance(broker, str) or not broker:
        raise ConfigError("Required value: an MQTT URL (mqtt://host:port)", field="broker")
    window = obj.get("window")
    if isinstance(window, bool) or not isinstance(window, int | float) or not math.isfinite(window):
        raise ConfigError("Required value: the window length in seconds (a number)", field="window")
    if window < MIN_WINDOW_S:
        raise ConfigError(f"must be at least {MIN_WINDOW_S} s, got {window}", field="window")
    devices = obj.get("devices")
    if devices is not None and (
        not isinstance(devices, list) or not all(isinstance(d, str) and d for d in devices)
    ):
        raise ConfigError("must be a list of device names", field="devices")
    return AggregatorConfig(
        broker=parse_broker(broker),
        window_s=float(window),
        devices=None if devices is None else frozenset(devices),
    )


def load_config(path: Path) -> AggregatorConfig:
    """Read and validate the config file; every problem is a ConfigError naming the file."""
    return read_config(path, parse_config)


# Pure window logic -----------------------------------------------------------------------------------------


def parse_number(value: Any) -> float | None:
    """A finite number from a twin value (``"12.5"``, ``12``), or None for anything else (booleans too)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    return number if math.isfinite(number) else None


@dataclass(frozen=True, slots=True)
class Sample:
    prop: str
    value: float
    ts: int  # milliseconds since the epoch (the value's metadata.timestamp)


def device_of_twin_topic(topic: str) -> str | None:
    """``pump-1`` from ``$hw/events/device/pump-1/twin/update``; None for any other topic."""
    if not topic.startswith(_HW_PREFIX) or not topic.endswith(_TWIN_SUFFIX):
        return None
    device = topic[len(_HW_PREFIX) : -len(_TWIN_SUFFIX)]
    return device if device and "/" not in device else None


def _ms(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def samples_of(payload: bytes | str) -> list[Sample]:
    """The numeric ``actual`` values of a twin/update message; malformed parts are skipped, never raised:
    one bad property must not cost the others. A value without its own timestamp takes the message's."""
    try:
        obj = json.loads(payload)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return []
    if not isinstance(obj, dict) or not isinstance(obj.get("twin"), dict):
        return []
    default_ts = _ms(obj.get("timestamp")) or 0
    out: list[Sample] = []
    for prop, twin in obj["twin"].items():
        actual = twin.get("actual") if isinstance(twin, dict) else None
        if not isinstance(actual, dict):
            continue
        number = parse_number(actual.get("value"))
        if number is None:
            continue
        meta = actual.get("metadata")
        ts = _ms(meta.get("timestamp")) if isinstance(meta, dict) else None
        out.append(Sample(str(prop), number, default_ts if ts is None else ts))
    return out


@dataclass(slots=True)
class _Stats:
    min: float
    max: float
    total: float
    count: int
    last: float
    last_ts: int

    def to_json(self) -> JSONObject:
        return {
            "min": self.min,
            "max": self.max,
            "mean": self.total / self.count,
            "count": self.count,
            "last": self.last,
        }


@dataclass(slots=True)
class Window:
    """One device's running figures per property for the current window; constant memory per property."""

    _stats: dict[str, _Stats] = field(default_factory=dict)

    def add(self, prop: str, value: float, ts: int) -> None:
        """Count one sample. ``last`` is the sample with the newest ``ts``; on a tie, the one added last."""
        s = self._stats.get(prop)
        if s is None:
            self._stats[prop] = _Stats(value, value, value, 1, value, ts)
            return
        s.min = min(s.min, value)
        s.max = max(s.max, value)
        s.total += value
        s.count += 1
        if ts >= s.last_ts:
            s.last, s.last_ts = value, ts

    def empty(self) -> bool:
        return not self._stats

    def summary(self) -> dict[str, JSONObject]:
        """``{prop: {"min", "max", "mean", "count", "last"}}``; ``{}`` when nothing was added."""
        return {prop: s.to_json() for prop, s in sorted(self._stats.items())}

    def reset(self) -> None:
        self._stats.clear()


def data_topic(device_id: str) -> str:
    return f"$ke/events/device/{device_id}/data/update"


def summary_payload(window: Window, *, start: int, end: int, event_id: str, timestamp: int) -> JSONObject:
    """The ``data/update`` message for one device's window (times in milliseconds since the epoch)."""
    return {
        "event_id": event_id,
        "timestamp": timestamp,
        "window": {"start": start, "end": end},
        "data": dict(window.summary()),
    }


# Runtime ---------------------------------------------------------------------------------------------------


class Aggregator:
    """The aggregator's service: one MQTT task and one window task."""

    def __init__(self, config: AggregatorConfig) -> None:
        self.config = config
        self.outbox = Outbox()
        self.windows: dict[str, Window] = {}
        self.window_start = now_ms()

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self._mqtt(), name="aggregator.mqtt")
            tg.create_task(self._tick(), name="aggregator.window")

    def add(self, device_id: str, payload: bytes | str) -> None:
        """Count a twin/update message of ``device_id`` in the current window (if the device is ours)."""
        wanted = self.config.devices
        if wanted is not None and device_id not in wanted:
            return
        samples = samples_of(payload)
        if not samples:
            return
        window = self.windows.setdefault(device_id, Window())
        for s in samples:
            window.add(s.prop, s.value, s.ts)

    def flush(self) -> int:
        """Close the current window: queue one summary per device with samples, start the next window.
        Returns how many summaries were queued."""
        end = now_ms()
        sent = 0
        for device_id, window in self.windows.items():
            if window.empty():
                continue
            payload = summary_payload(
                window, start=self.window_start, end=end, event_id=str(uuid.uuid4()), timestamp=end
            )
            self.outbox.put(data_topic(device_id), payload)
            window.reset()
            sent += 1
        # Devices silent for a whole window are forgotten, so a fleet that churns ids does not grow this.
        self.windows = {d: w for d, w in self.windows.items() if not w.empty()}
        self.window_start = end
        return sent

    async def _tick(self) -> None:
        # Deadlines on the monotonic clock, each from the previous one: windows do not drift with the
        # time a flush takes, and a wall-clock step (NTP) does not stretch or shrink one.
        deadline = time.monotonic() + self.config.window_s
        while True:
            await asyncio.sleep(max(0.0, deadline - time.monotonic()))
            sent = self.flush()
            log.debug("window closed: %d summary(ies)", sent)
            deadline += self.config.window_s
            if deadline < time.monotonic():  # the loop was stalled past a whole window: do not burst
                deadline = time.monotonic() + self.config.window_s

    async def _mqtt(self) -> None:
        def on_message(topic: str, payload: Any) -> None:
            device_id = device_of_twin_topic(topic)
            if device_id is not None and isinstance(payload, bytes | str):
                self.add(device_id, payload)

        await mqtt_session(
            self.config.broker,
            f"fleetops-aggregator-{os.getpid()}",
            [TWIN_UPDATE_FILTER],
            self.outbox,
            on_message,
        )


# Entry point -----------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m edgeservice.workloads.aggregator --config FILE``: 0 when stopped by SIGTERM/SIGINT,
    :data:`EXIT_CONFIG` on a bad config. The last, partial window is not published on shutdown."""
    args = workload_arguments(
        "edgeservice.workloads.aggregator",
        "FleetOps telemetry aggregator",
        argv,
        "JSON config file (broker, window)",
    )
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        log.error("bad config: %s", exc)  # the message is the diagnosis: no traceback
        return EXIT_CONFIG
    log.info(
        "aggregator: window %.3f s, %s, broker %s:%d",
        config.window_s,
        "all devices" if config.devices is None else f"{len(config.devices)} device(s)",
        config.broker.host,
        config.broker.port,
    )
    asyncio.run(serve_until_signalled(Aggregator(config).run, "aggregator"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
