"""The camera screen: a camera Device live, drawn with half-block characters, so it works in any terminal.

Each character cell shows two pixels: the upper half block ``▀`` in the top pixel's colour on the bottom
pixel's colour as background. A 80x24 terminal is therefore a 80x44 picture, enough to see parts moving on
a belt and a red box on a defective one. Colours are true colour; Rich reduces them to the 256 or 16
colours a terminal has (``TEXTUAL_COLOR_SYSTEM`` is respected), so no graphics protocol is ever needed.

Frames come from ``AsyncClient.camera_frames`` (the cloud's WebSocket, newest frame first). A worker
decodes and scales each frame in a thread, and only the newest one waiting is drawn: a terminal over SSH
that draws slower than the camera sends skips frames and never lags. Drawing is capped at
:data:`MAX_DRAW_FPS` because every frame is a screenful of escape codes on the link. The status line shows
the camera's fps, the frames drawn per second, the latency from capture to screen and the frame size.

``o`` switches to the inference overlay (the frames the inference workload inferred, with its results drawn
on them) and back. A stream that fails (the node offline, no camera workload) shows the reason and is
retried with back-off.

Deliberately not done: sixel or kitty graphics, recording, zoom.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import ClassVar

import cv2
import numpy as np
import numpy.typing as npt
from rich.color import Color
from rich.segment import Segment
from rich.style import Style
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.strip import Strip
from textual.widget import Widget
from textual.widgets import Footer, Static

from app.client import AsyncClient, CameraFrame, ClientError

logger = logging.getLogger(__name__)

UPPER_HALF = "\u2580"  # ▀
MAX_DRAW_FPS = 15.0
RETRY_MIN_S, RETRY_MAX_S = 1.0, 15.0
# Colour levels kept per channel: 32 levels look the same on a terminal and keep the style cache small.
_LEVELS = 8

Pixels = npt.NDArray[np.uint8]  # rows x cols x 3, RGB


def cells(jpeg: bytes, cols: int, rows: int) -> Pixels | None:
    """A frame scaled to fit ``cols`` x ``rows`` cells (two pixel rows per cell), aspect kept, RGB; None
    when the bytes are not an image. Runs in a worker thread."""
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    if image is None or cols < 1 or rows < 1:
        return None
    h, w = image.shape[:2]
    # A cell is about twice as high as wide, and holds two pixels one above the other: square pixels.
    scale = min(cols / w, (rows * 2) / h)
    size = (max(1, int(w * scale)), max(2, int(h * scale) // 2 * 2))
    small = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    rgb = cv2.cvtColor(small, cv2.COLOR_BGR2RGB)
    return (rgb // _LEVELS * _LEVELS).astype(np.uint8)


class HalfBlockImage(Widget):
    """Shows an RGB picture, two pixel rows per line (see the module docstring)."""

    DEFAULT_CSS = "HalfBlockImage { width: 1fr; height: 1fr; }"

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.pixels: Pixels | None = None
        self._styles: dict[tuple[int, ...], Style] = {}

    def show(self, pixels: Pixels) -> None:
        self.pixels = pixels
        self.refresh()

    def _style(self, top: Pixels, bottom: Pixels) -> Style:
        key = (int(top[0]), int(top[1]), int(top[2]), int(bottom[0]), int(bottom[1]), int(bottom[2]))
        style = self._styles.get(key)
        if style is None:
            if len(self._styles) > 50_000:
                self._styles.clear()
            style = Style(color=Color.from_rgb(*key[:3]), bgcolor=Color.from_rgb(*key[3:]))
            self._styles[key] = style
        return style

    def render_line(self, y: int) -> Strip:
        pixels = self.pixels
        width = self.size.width
        if pixels is None or 2 * y + 1 >= pixels.shape[0]:
            return Strip.blank(width)
        top, bottom = pixels[2 * y], pixels[2 * y + 1]
        pad = max(0, (width - pixels.shape[1]) // 2)
        segments = [Segment(" " * pad)] if pad else []
        run_style: Style | None = None
        run = 0
        for x in range(min(pixels.shape[1], width - pad)):
            style = self._style(top[x], bottom[x])
            if style is run_style:
                run += 1
                continue
            if run_style is not None:
                segments.append(Segment(UPPER_HALF * run, run_style))
            run_style, run = style, 1
        if run_style is not None:
            segments.append(Segment(UPPER_HALF * run, run_style))
        return Strip(segments).adjust_cell_length(width)


class CameraScreen(Screen[None]):
    """One camera, live; ``o`` toggles the inference overlay."""

    DEFAULT_CSS = """
    CameraScreen #title { height: 1; background: $boost; padding: 0 1; }
    CameraScreen #stats { height: 1; background: $panel; padding: 0 1; }
    CameraScreen #message { height: auto; padding: 0 1; color: $warning; display: none; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("o", "overlay", "Overlay on/off"),
        Binding("escape", "back", "Back"),
    ]

    def __init__(self, client: AsyncClient, namespace: str, name: str, *, readonly: bool = False) -> None:
        super().__init__()
        self.client = client
        self.namespace = namespace
        self.camera = name
        self.readonly = readonly  # nothing here writes; kept for the screens' common signature
        self.overlay = False
        self.frames_drawn = 0
        self.last_frame: CameraFrame | None = None
        self.error = ""
        self._draw_times: list[float] = []

    def compose(self) -> ComposeResult:
        yield Static(self._title(), id="title")
        yield Static("connecting ...", id="stats")
        yield Static("", id="message")
        yield HalfBlockImage(id="picture")
        yield Footer()

    def on_mount(self) -> None:
        self._stream()

    def _title(self) -> str:
        view = "inference overlay" if self.overlay else "camera"
        return f"Camera {self.namespace}/{self.camera}  ·  {view}"

    def action_overlay(self) -> None:
        self.overlay = not self.overlay
        self.query_one("#title", Static).update(self._title())
        self.query_one("#stats", Static).update("connecting ...")
        self._stream()

    def action_back(self) -> None:
        self.app.pop_screen()

    def _say(self, text: str) -> None:
        message = self.query_one("#message", Static)
        message.update(text)
        message.display = bool(text)

    @work(exclusive=True, group="camera-stream")
    async def _stream(self) -> None:
        delay = RETRY_MIN_S
        picture = self.query_one("#picture", HalfBlockImage)
        while True:
            try:
                async with self.client.camera_frames(self.camera, self.namespace, overlay=self.overlay) as s:
                    async for frame in s:
                        if self.error:
                            self.error = ""
                            self._say("")
                        delay = RETRY_MIN_S
                        await self._draw(frame, picture)
                reason = "the stream ended"
            except ClientError as exc:
                reason = str(exc)
            self.error = reason
            self._say(f"{reason}; retrying in {delay:.0f} s")
            self.query_one("#stats", Static).update("no picture")
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX_S)

    async def _draw(self, frame: CameraFrame, picture: HalfBlockImage) -> None:
        """Draw one frame, unless drawing now would go over MAX_DRAW_FPS (then it is skipped: the next
        one is newer anyway)."""
        now = time.monotonic()
        self._draw_times = [t for t in self._draw_times if now - t < 1.0]
        if len(self._draw_times) >= MAX_DRAW_FPS:
            return
        size = picture.size
        pixels = await asyncio.to_thread(cells, frame.jpeg, size.width, size.height)
        if pixels is None:
            self._say("a frame could not be decoded")
            return
        picture.show(pixels)
        self._draw_times.append(time.monotonic())
        self.frames_drawn += 1
        self.last_frame = frame
        latency = time.time() * 1000 - frame.timestamp_ms
        self.query_one("#stats", Static).update(
            f"camera {frame.fps:.1f} fps  ·  drawn {len(self._draw_times)} fps  ·  latency {latency:.0f} ms"
            f"  ·  {frame.width}x{frame.height}  ·  {frame.bytes_per_s / 1024:.0f} KB/s"
        )
