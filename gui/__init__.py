"""The control-room GUI (PySide6). See ``gui.window`` for the layout and ``gui.bridge`` for the threading."""
