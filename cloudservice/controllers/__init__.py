"""CloudCore's controllers: Deployment -> ReplicaSets -> Pods -> nodes, garbage collection, node health.

Each controller is a pure planning function (``plan_*``: objects in, actions out, table-tested) and a thin
loop that feeds it from a shared informer cache and applies its actions to the store. Start them all
with :class:`ControllerManager`.
"""

from .actions import Action, apply_actions, delete_pod_gracefully, record_event
from .clock import Clock, ManualClock, SystemClock
from .deployment import plan_deployment, pod_template_hash, resolve_fenceposts
from .errors import ControllerError, InvalidSpec
from .gc import plan_gc_dependent, plan_gc_owner
from .informer import Informer
from .manager import ControllerManager
from .nodelifecycle import plan_node
from .replicaset import plan_replicaset, scale_down_order
from .scheduler import plan_schedule, schedule

__all__ = [
    "Action",
    "Clock",
    "ControllerError",
    "ControllerManager",
    "Informer",
    "InvalidSpec",
    "ManualClock",
    "SystemClock",
    "apply_actions",
    "delete_pod_gracefully",
    "plan_deployment",
    "plan_gc_dependent",
    "plan_gc_owner",
    "plan_node",
    "plan_replicaset",
    "plan_schedule",
    "pod_template_hash",
    "record_event",
    "resolve_fenceposts",
    "scale_down_order",
    "schedule",
]
