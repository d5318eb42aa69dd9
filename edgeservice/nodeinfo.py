"""What the node reports about itself: capacity read from the machine, system info, addresses."""

from __future__ import annotations

import os
import platform
import shutil
import socket
from pathlib import Path

from app.resources import JSONObject
from edgeservice import procfs

KUBELET_VERSION = "v1.32.0-fleetops"
RUNTIME_VERSION = "process://fleetops-0.1.0"
# The kubelet's default --max-pods.
MAX_PODS = 110

_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm"}


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


def _os_image() -> str:
    for line in _read("/etc/os-release").splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.split("=", 1)[1].strip('"')
    return platform.platform()


def host_ip() -> str:
    """The address other machines would reach us on (no packet is sent: UDP connect only picks a route)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # TEST-NET-1: never routed, only used to choose the interface
            return str(s.getsockname()[0])
        except OSError:
            return "127.0.0.1"


def node_status(data_dir: Path, address: str) -> JSONObject:
    cpus = os.cpu_count() or 1
    memory_ki = procfs.memory_total() // 1024
    disk = shutil.disk_usage(data_dir)
    capacity = {
        "cpu": str(cpus),
        "memory": f"{memory_ki}Ki",
        "pods": str(MAX_PODS),
        "ephemeral-storage": f"{disk.total // 1024}Ki",
    }
    return {
        "capacity": capacity,
        "allocatable": dict(capacity),
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "EdgeReady",
                "message": "edge is posting ready status",
            }
        ],
        "addresses": [
            {"type": "InternalIP", "address": address},
            {"type": "Hostname", "address": socket.gethostname()},
        ],
        "nodeInfo": {
            "machineID": _read("/etc/machine-id"),
            "systemUUID": _read("/sys/class/dmi/id/product_uuid"),
            "bootID": _read("/proc/sys/kernel/random/boot_id"),
            "kernelVersion": platform.release(),
            "osImage": _os_image(),
            "containerRuntimeVersion": RUNTIME_VERSION,
            "kubeletVersion": KUBELET_VERSION,
            "kubeProxyVersion": "",
            "operatingSystem": platform.system().lower(),
            "architecture": _ARCH.get(platform.machine(), platform.machine()),
        },
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 10550}},
    }


def default_labels() -> dict[str, str]:
    return {
        "kubernetes.io/os": platform.system().lower(),
        "kubernetes.io/arch": _ARCH.get(platform.machine(), platform.machine()),
    }
