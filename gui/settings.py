"""What the GUI remembers between runs, in QSettings: servers, window layout, the last view.

One INI file in the user's configuration directory (``~/.config/FleetOps/fleetops-gui.ini`` on Linux),
written through ``QSettings(IniFormat, UserScope, ...)`` so that tests can point it at a temporary
directory with ``QSettings.setPath`` and never touch a real user's file. Keys:

* ``servers/list``: recent servers, newest first (see ``gui.session.Target.to_settings``; no tokens);
* ``window/geometry``, ``window/state``: ``QMainWindow.saveGeometry()`` / ``saveState()``;
* ``window/page``: the view shown last; ``layout/<name>``: splitters and table headers (column widths,
  order and sort) by name; ``filters/<kind>``: each table's filter text.

Deliberately not done: settings per server (one layout serves every fleet) and a settings dialog (the
layout is saved as it is arranged).
"""

from __future__ import annotations

import json
import logging

from PySide6.QtCore import QByteArray, QSettings

from gui.target import Target

logger = logging.getLogger(__name__)

ORGANIZATION = "FleetOps"
APPLICATION = "fleetops-gui"
MAX_SERVERS = 10


class Settings:
    """Typed access to the GUI's QSettings (see the module docstring)."""

    def __init__(self, qsettings: QSettings | None = None) -> None:
        self.q = qsettings or QSettings(
            QSettings.Format.IniFormat, QSettings.Scope.UserScope, ORGANIZATION, APPLICATION
        )

    @property
    def path(self) -> str:
        return self.q.fileName()

    # -- servers --------------------------------------------------------------------------------------

    def servers(self) -> list[Target]:
        raw = self.q.value("servers/list", "[]")
        try:
            entries = json.loads(str(raw))
        except ValueError:
            logger.warning("ignoring a malformed server list in %s", self.path)
            return []
        out = []
        for entry in entries if isinstance(entries, list) else []:
            target = Target.from_settings(entry) if isinstance(entry, dict) else None
            if target is not None:
                out.append(target)
        return out

    def remember(self, target: Target) -> None:
        """Put ``target`` first in the recent servers (without its token)."""
        entry = target.to_settings()
        rest = [t.to_settings() for t in self.servers() if t.to_settings() != entry]
        self.q.setValue("servers/list", json.dumps([entry, *rest][:MAX_SERVERS]))

    def last_server(self) -> Target | None:
        servers = self.servers()
        return servers[0] if servers else None

    # -- layout ---------------------------------------------------------------------------------------

    def page(self, default: str) -> str:
        return str(self.q.value("window/page", default))

    def set_page(self, page: str) -> None:
        self.q.setValue("window/page", page)

    def blob(self, key: str) -> QByteArray | None:
        value = self.q.value(key)
        return value if isinstance(value, QByteArray) and not value.isEmpty() else None

    def set_blob(self, key: str, value: QByteArray) -> None:
        self.q.setValue(key, value)

    def text(self, key: str, default: str = "") -> str:
        value = self.q.value(key, default)
        return value if isinstance(value, str) else default

    def set_text(self, key: str, value: str) -> None:
        self.q.setValue(key, value)

    def sync(self) -> None:
        self.q.sync()
