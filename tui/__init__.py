"""The field engineer's terminal UI (Textual): ``fleetops tui``."""
