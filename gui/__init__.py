"""The control-room GUI (PySide6). See ``gui.window`` for the layout and ``gui.bridge`` for the threading.

Importing the package applies :mod:`gui.qtcompat` (a reference-count workaround PySide6 6.12 needs on
Python 3.11) before any module of it can make a Qt call.
"""

from gui import qtcompat

qtcompat.apply()
