"""CloudCore's store: the contract (:mod:`.base`) and the SQL implementation (:mod:`.sql`)."""

from cloudservice.store.base import Cursor, EventType, Point, Store, TelemetryPoint, UpdateFn, WatchEvent
from cloudservice.store.sql import BackendError, SqlStore, SqlWatch, open_store, store_url

__all__ = [
    "BackendError",
    "Cursor",
    "EventType",
    "Point",
    "SqlStore",
    "SqlWatch",
    "Store",
    "TelemetryPoint",
    "UpdateFn",
    "WatchEvent",
    "open_store",
    "store_url",
]
