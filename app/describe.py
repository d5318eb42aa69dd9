"""``kubectl describe``-like texts and YAML of the objects the front ends show, as pure functions.

Shared by the TUI's pod screen and the GUI's detail pane. A text leads with what an operator reads first
(identity, placement, state, why it is not fine) and ends with the object's events, which the caller
passes in (a UI already holds them from its events watch, so describing costs no request). Times are
relative to ``now`` (epoch seconds), so a test or a snapshot passes a fixed clock.

Deliberately not done: every field kubectl prints (volumes, tolerations, QoS...), and kinds the front
ends do not show.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable
from typing import Any

import yaml

from app.clientmodels import format_age
from app.resources import JSONObject, parse_rfc3339

# An event without any time sorts as the oldest and shows as <unknown>.
NO_TIME = -math.inf


def _d(value: Any) -> JSONObject:
    return value if isinstance(value, dict) else {}


def _l(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def epoch(value: Any) -> float:
    """An RFC 3339 time as epoch seconds; :data:`NO_TIME` when absent or malformed."""
    if not isinstance(value, str) or not value:
        return NO_TIME
    try:
        t = parse_rfc3339(value)
    except ValueError:
        return NO_TIME
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    return t.timestamp()


def age_text(value: float, now: float) -> str:
    """kubectl's short age of an epoch time (``<unknown>`` for :data:`NO_TIME`)."""
    if value == NO_TIME:
        return "<unknown>"
    return format_age(dt.timedelta(seconds=now - value))


def involved(ev: JSONObject) -> tuple[str, str, str]:
    """An event's involved object: (kind, namespace, name)."""
    obj = _d(ev.get("involvedObject"))
    return str(obj.get("kind") or ""), str(obj.get("namespace") or ""), str(obj.get("name") or "")


def to_yaml(obj: JSONObject) -> str:
    """Block YAML in the object's own key order, without ``managedFields`` (noise to a reader)."""
    shown = dict(obj)
    meta = _d(shown.get("metadata"))
    if "managedFields" in meta:
        shown["metadata"] = {k: v for k, v in meta.items() if k != "managedFields"}
    return yaml.safe_dump(shown, sort_keys=False, default_flow_style=False, allow_unicode=True, width=100)


def _labels(m: JSONObject) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(_d(m.get("labels")).items())) or "<none>"


def _events(events: Iterable[JSONObject], now: float) -> list[str]:
    evs = list(events)
    out = ["Events:" + ("  <none>" if not evs else "")]
    if evs:
        out.append(f"  {'Type':<8} {'Reason':<22} {'Age':<8} Message")
    for ev in evs:
        when = age_text(_event_epoch(ev), now)
        message = " ".join(str(ev.get("message") or "").split())
        out.append(f"  {ev.get('type', ''):<8} {ev.get('reason', ''):<22} {when:<8} {message}")
    return out


def _event_epoch(ev: JSONObject) -> float:
    for key in ("lastTimestamp", "eventTime", "firstTimestamp"):
        t = epoch(ev.get(key))
        if t > 0:
            return t
    return epoch(_d(ev.get("metadata")).get("creationTimestamp"))


def _conditions(status: JSONObject) -> list[str]:
    conditions = [_d(c) for c in _l(status.get("conditions"))]
    if not conditions:
        return []
    out = ["Conditions:", f"  {'Type':<18} {'Status':<8} {'Since':<22} Reason / message"]
    for c in conditions:
        why = " - ".join(str(x) for x in (c.get("reason"), c.get("message")) if x)
        out.append(
            f"  {c.get('type', ''):<18} {c.get('status', ''):<8} {c.get('lastTransitionTime', ''):<22} {why}"
        )
    return out


def describe_pod(pod: JSONObject, events: Iterable[JSONObject], now: float) -> str:
    m, spec, status = _d(pod.get("metadata")), _d(pod.get("spec")), _d(pod.get("status"))
    owners = [f"{_d(o).get('kind')}/{_d(o).get('name')}" for o in _l(m.get("ownerReferences"))]
    out = [
        f"Name:           {m.get('name', '')}",
        f"Namespace:      {m.get('namespace', '')}",
        f"Node:           {spec.get('nodeName') or '<none>'}",
        f"Start Time:     {status.get('startTime') or '<unknown>'}",
        f"Labels:         {_labels(m)}",
        f"Status:         {'Terminating' if m.get('deletionTimestamp') else status.get('phase', 'Unknown')}",
        f"IP:             {status.get('podIP') or '<none>'}",
        f"Controlled By:  {', '.join(owners) or '<none>'}",
        "Containers:",
    ]
    statuses = {str(_d(s).get("name")): _d(s) for s in _l(status.get("containerStatuses"))}
    for c in (_d(x) for x in _l(spec.get("containers"))):
        name = str(c.get("name", ""))
        st = statuses.get(name, {})
        state = _d(st.get("state"))
        state_name = next(iter(state), "unknown")
        detail = _d(state.get(state_name))
        command = " ".join(map(str, _l(c.get("command")) + _l(c.get("args")))) or "-"
        out += [
            f"  {name}:",
            f"    Image:          {c.get('image', '')}",
            f"    Command:        {command}",
            f"    State:          {state_name.capitalize()}"
            + (f" ({detail['reason']})" if detail.get("reason") else ""),
        ]
        if detail.get("message"):
            out.append(f"      Message:      {detail['message']}")
        if "exitCode" in detail:
            out.append(f"      Exit Code:    {detail['exitCode']}")
        last = _d(_d(st.get("lastState")).get("terminated"))
        if last:
            out.append(
                f"    Last State:     Terminated ({last.get('reason', '')}, exit {last.get('exitCode', '?')})"
            )
        out += [
            f"    Ready:          {st.get('ready') is True}",
            f"    Restart Count:  {st.get('restartCount', 0)}",
        ]
        env = [f"{_d(e).get('name')}={_d(e).get('value', '<from source>')}" for e in _l(c.get("env"))]
        if env:
            out.append("    Environment:    " + ", ".join(env))
    out += _conditions(status)
    out += _events(events, now)
    return "\n".join(out)


def describe_node(node: JSONObject, events: Iterable[JSONObject], now: float, pods: int = 0) -> str:
    m, spec, status = _d(node.get("metadata")), _d(node.get("spec")), _d(node.get("status"))
    info = _d(status.get("nodeInfo"))
    addresses = ", ".join(f"{_d(a).get('type')}={_d(a).get('address')}" for a in _l(status.get("addresses")))
    capacity = ", ".join(f"{k}={v}" for k, v in _d(status.get("capacity")).items())
    out = [
        f"Name:           {m.get('name', '')}",
        f"Labels:         {_labels(m)}",
        f"Created:        {m.get('creationTimestamp', '')}",
        f"Unschedulable:  {bool(spec.get('unschedulable'))}",
        f"Addresses:      {addresses or '<none>'}",
        f"Capacity:       {capacity or '<none>'}",
        f"Version:        {info.get('kubeletVersion', '') or '<unknown>'}",
        f"Pods:           {pods}",
    ]
    system = f"{info.get('osImage', '')} {info.get('architecture', '')}".strip()
    if system:
        out.insert(-1, f"OS:             {system}")
    out += _conditions(status)
    out += _events(events, now)
    return "\n".join(out)


def describe_deployment(dep: JSONObject, events: Iterable[JSONObject], now: float) -> str:
    m, spec, status = _d(dep.get("metadata")), _d(dep.get("spec")), _d(dep.get("status"))
    selector = ", ".join(f"{k}={v}" for k, v in _d(_d(spec.get("selector")).get("matchLabels")).items())
    strategy = _d(spec.get("strategy"))
    template = _d(spec.get("template"))
    tspec = _d(template.get("spec"))
    node_selector = ", ".join(f"{k}={v}" for k, v in _d(tspec.get("nodeSelector")).items())
    out = [
        f"Name:           {m.get('name', '')}",
        f"Namespace:      {m.get('namespace', '')}",
        f"Labels:         {_labels(m)}",
        f"Revision:       {_d(m.get('annotations')).get('deployment.kubernetes.io/revision', '<none>')}",
        f"Selector:       {selector or '<none>'}",
        f"Replicas:       {spec.get('replicas', 1)} desired | {status.get('updatedReplicas', 0)} updated | "
        f"{status.get('replicas', 0)} total | {status.get('availableReplicas', 0)} available | "
        f"{status.get('unavailableReplicas', 0)} unavailable",
        f"Strategy:       {strategy.get('type', 'RollingUpdate')}",
        f"Node Selector:  {node_selector or '<none>'}",
        "Pod Template:",
    ]
    out += [f"  {c.get('name', '')}:  {c.get('image', '')}" for c in map(_d, _l(tspec.get("containers")))]
    out += _conditions(status)
    out += _events(events, now)
    return "\n".join(out)


def describe_device(dev: JSONObject, events: Iterable[JSONObject], now: float) -> str:
    m, spec, status = _d(dev.get("metadata")), _d(dev.get("spec")), _d(dev.get("status"))
    protocol = _d(spec.get("protocol"))
    reported = {
        str(_d(t).get("propertyName")): str(_d(_d(t).get("reported")).get("value", ""))
        for t in _l(status.get("twins"))
    }
    out = [
        f"Name:           {m.get('name', '')}",
        f"Namespace:      {m.get('namespace', '')}",
        f"Labels:         {_labels(m)}",
        f"Model:          {_d(spec.get('deviceModelRef')).get('name', '')}",
        f"Node:           {spec.get('nodeName') or '<none>'}",
        f"Protocol:       {protocol.get('protocolName', '')}",
        f"State:          {status.get('state') or 'unknown'}",
        f"Last Online:    {status.get('lastOnlineTime') or '<never>'}",
        "Properties:",
        f"  {'Name':<20} {'Desired':<14} Reported",
    ]
    for p in (_d(x) for x in _l(spec.get("properties"))):
        name = str(p.get("name", ""))
        desired = str(_d(p.get("desired")).get("value", ""))
        out.append(f"  {name:<20} {desired or '-':<14} {reported.get(name, '-')}")
    out += _events(events, now)
    return "\n".join(out)


def describe_event(ev: JSONObject, now: float) -> str:
    m, source = _d(ev.get("metadata")), _d(ev.get("source"))
    kind, ns, name = involved(ev)
    return "\n".join(
        [
            f"Name:           {m.get('name', '')}",
            f"Namespace:      {m.get('namespace', '')}",
            f"Type:           {ev.get('type', 'Normal')}",
            f"Reason:         {ev.get('reason', '')}",
            f"Object:         {kind}/{name}" + (f" in {ns}" if ns else ""),
            f"Source:         {source.get('component', '')} {source.get('host', '')}".rstrip(),
            f"Count:          {ev.get('count', 1)}",
            f"First Seen:     {ev.get('firstTimestamp') or '<unknown>'}",
            f"Last Seen:      {ev.get('lastTimestamp') or '<unknown>'}",
            f"Age:            {age_text(_event_epoch(ev), now)}",
            f"Message:        {ev.get('message', '')}",
        ]
    )


def describe(kind: str, obj: JSONObject, events: Iterable[JSONObject], now: float, *, pods: int = 0) -> str:
    """The describe text of one object of ``kind`` (the front ends' names: ``pods``, ``nodes``, ``deploy``,
    ``devices``, ``events``)."""
    if kind == "pods":
        return describe_pod(obj, events, now)
    if kind == "nodes":
        return describe_node(obj, events, now, pods)
    if kind == "deploy":
        return describe_deployment(obj, events, now)
    if kind == "devices":
        return describe_device(obj, events, now)
    return describe_event(obj, now)
