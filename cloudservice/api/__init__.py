"""CloudCore's Kubernetes-compatible HTTP API (see ``cloudservice.api.server`` for the design)."""

from cloudservice.api.server import ApiServer, build_app, serve

__all__ = ["ApiServer", "build_app", "serve"]
