"""Synthetic sources: a conveyor camera with defective parts, and pump telemetry with labelled anomalies.

They let the demo, the tests and ``scripts/train_models.py`` work without hardware or downloaded data,
and, because every random draw comes from a ``numpy.random.Generator`` seeded by the caller, the same
seed gives the same frames and readings bit for bit on every machine (no wall clock, no global state).

The conveyor (:class:`ConveyorSource`) renders a grey belt with moving marks, seen from above, and parts
travelling left to right at a constant speed: discs and rectangles in a few colours, each with a notch
(the disc's on top, the rectangle's on its right edge). A fraction of them (``defect_rate``) carry one
defect, drawn large enough to be seen in a 64x64 crop:

* ``crack``: a dark jagged line across the part, 2 px wide;
* ``missing_notch``: the notch is absent;
* ``dark_spot``: a dark blot of 4-7 px radius.

Every frame comes with its ground truth (:class:`FrameTruth`): each visible part's id, box, shape and
defect, and which part (if any) is centred in the inspection window :attr:`ConveyorSource.roi`, a fixed
64x64 region in the middle of the belt. The inspection window is what the shipped defect classifier
looks at; :func:`render_part_crop` draws exactly what that window shows (belt, marks and a part at a
given offset from its centre, or no part), with the same drawing code as the frames, so a classifier
trained on crops sees what the camera sees.

Pump telemetry (:func:`pump_telemetry`) is a time series, one reading a second, of a centrifugal pump
whose speed wanders between 50% and 100% of rated: flow follows speed, pressure its square, the motor
current a no-load part plus the cube (shaft power), the winding temperature lags towards ambient plus a
rise with load, and vibration grows with speed; each reading carries instrument noise. Anomalies come
in episodes: *cavitation* (flow and pressure drop, vibration jumps and gets noisy, current sags) and
*bearing wear* (temperature and vibration drift up over the episode, current creeps up). Each reading
is labelled with its kind (``NORMAL``, ``CAVITATION``, ``BEARING_WEAR``).

Deliberately not done: perspective, lighting changes, motion blur, overlapping parts (the belt spaces
them), and physical plausibility beyond the first-order relations above (see ``edgeservice.sim.physics``
for the live pump simulator, whose units these readings share).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final, Literal

import cv2
import numpy as np
import numpy.typing as npt

Frame = npt.NDArray[np.uint8]  # H x W x 3, BGR
DefectKind = Literal["crack", "missing_notch", "dark_spot"]
Shape = Literal["disc", "rect"]

DEFECT_KINDS: Final[tuple[DefectKind, ...]] = ("crack", "missing_notch", "dark_spot")
SHAPES: Final[tuple[Shape, ...]] = ("disc", "rect")
CROP_SIZE: Final = 64  # the inspection window's side, in pixels
PART_SIZE: Final = 48  # a part's nominal diameter / long side, in pixels: fits the crop with a margin

# Part colours (BGR): bright enough that a dark crack or spot stands out on every one of them.
_COLOURS: Final = ((60, 170, 230), (200, 200, 205), (90, 200, 120), (220, 150, 70), (120, 120, 230))
_BELT: Final = (70, 72, 75)  # belt grey
_BELT_MARK: Final = (92, 95, 98)  # the transverse marks that show the belt moving
_BELT_MARK_PITCH: Final = 40  # pixels between belt marks
_BACKGROUND: Final = (35, 38, 40)  # machine frame around the belt
_DEFECT_INK: Final = (25, 25, 28)  # cracks and spots: nearly black


@dataclass(frozen=True, slots=True)
class Part:
    """One part as it is drawn: its shape, colour, size, small rotation and defect (None: a good part).

    ``detail`` seeds the defect's exact geometry (where the crack runs, where the spot is), so that a part
    looks the same in every frame it appears in."""

    id: int
    shape: Shape
    colour: tuple[int, int, int]
    size: int
    angle: float  # degrees, a small jitter around the conveyor's orientation
    defect: DefectKind | None
    detail: int

    @property
    def defective(self) -> bool:
        return self.defect is not None


def random_part(rng: np.random.Generator, part_id: int = 0, defect_rate: float = 0.2) -> Part:
    """A part drawn at random: defective with probability ``defect_rate``, each defect kind equally
    likely."""
    defect: DefectKind | None = None
    if rng.random() < defect_rate:
        defect = DEFECT_KINDS[int(rng.integers(len(DEFECT_KINDS)))]
    return Part(
        id=part_id,
        shape=SHAPES[int(rng.integers(len(SHAPES)))],
        colour=_COLOURS[int(rng.integers(len(_COLOURS)))],
        size=int(rng.integers(PART_SIZE - 6, PART_SIZE + 3)),
        angle=float(rng.uniform(-12.0, 12.0)),
        defect=defect,
        detail=int(rng.integers(2**31)),
    )


def _rotate(points: npt.NDArray[np.float64], angle_deg: float) -> npt.NDArray[np.float64]:
    a = math.radians(angle_deg)
    rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    rotated: npt.NDArray[np.float64] = points @ rot.T
    return rotated


def _poly(img: Frame, points: npt.NDArray[np.float64], colour: tuple[int, int, int]) -> None:
    # Sub-pixel positions (shift=4: coordinates in 1/16 px) so a moving part does not jump by whole pixels.
    pts = np.round(points * 16).astype(np.int32).reshape(-1, 1, 2)
    cv2.fillPoly(img, [pts], colour, lineType=cv2.LINE_AA, shift=4)


def draw_part(img: Frame, cx: float, cy: float, part: Part) -> None:
    """Draw ``part`` centred at ``(cx, cy)`` into ``img`` (in place; parts partly outside are clipped)."""
    half = part.size / 2
    centre = np.array([cx, cy])
    if part.shape == "disc":
        t = np.linspace(0, 2 * math.pi, 48, endpoint=False)
        outline = np.stack([np.cos(t), np.sin(t)], axis=1) * half
        notch = np.array([[-5.0, -half - 1], [5.0, -half - 1], [3.0, -half + 8], [-3.0, -half + 8]])
    else:
        hh = half * 0.62  # rectangles are wider than tall
        outline = np.array([[-half, -hh], [half, -hh], [half, hh], [-half, hh]])
        notch = np.array([[half + 1, -5.0], [half + 1, 5.0], [half - 8, 3.0], [half - 8, -3.0]])
    _poly(img, _rotate(outline, part.angle) + centre, part.colour)
    if part.defect != "missing_notch":
        _poly(img, _rotate(notch, part.angle) + centre, _BELT)
    if part.defect == "crack":
        rng = np.random.default_rng(part.detail)
        # A jagged line between two points on opposite sides of the part, through the inner 60%.
        a = rng.uniform(0, math.pi)
        end = np.array([math.cos(a), math.sin(a)]) * half * 0.7
        steps = np.linspace(-1.0, 1.0, 7)[:, None] * end
        normal = np.array([-end[1], end[0]]) / (np.linalg.norm(end) or 1.0)
        jag = rng.uniform(-3.0, 3.0, size=(7, 1)) * normal
        pts = np.round((steps + jag + centre) * 16).astype(np.int32).reshape(-1, 1, 2)
        cv2.polylines(img, [pts], False, _DEFECT_INK, thickness=2, lineType=cv2.LINE_AA, shift=4)
    elif part.defect == "dark_spot":
        rng = np.random.default_rng(part.detail)
        r = rng.uniform(0, half * 0.45)
        a = rng.uniform(0, 2 * math.pi)
        radius = rng.uniform(4.0, 7.0)
        spot = centre + np.array([math.cos(a), math.sin(a)]) * r
        cv2.circle(
            img,
            (round(spot[0] * 16), round(spot[1] * 16)),
            round(radius * 16),
            _DEFECT_INK,
            thickness=-1,
            lineType=cv2.LINE_AA,
            shift=4,
        )


def draw_belt(img: Frame, x0: float, top: int, bottom: int, phase: float) -> None:
    """The belt between rows ``top`` and ``bottom``, its marks shifted by ``phase`` pixels; ``x0`` is the
    image's left edge in belt coordinates (so a crop of a frame and a crop rendered alone agree)."""
    img[top:bottom] = _BELT
    first = math.floor((x0 - phase) / _BELT_MARK_PITCH) * _BELT_MARK_PITCH + phase
    x = first
    while x - x0 < img.shape[1] + _BELT_MARK_PITCH:
        col = round(x - x0)
        if -4 < col < img.shape[1]:
            img[top:bottom, max(0, col) : max(0, col + 3)] = _BELT_MARK
        x += _BELT_MARK_PITCH


def render_part_crop(
    part: Part | None,
    *,
    offset: tuple[float, float] = (0.0, 0.0),
    phase: float = 0.0,
    size: int = CROP_SIZE,
) -> Frame:
    """What the inspection window shows: belt (marks at ``phase``) and ``part`` drawn ``offset`` pixels
    from the window's centre, or the bare belt when ``part`` is None. The training data of the defect
    classifier."""
    img = np.empty((size, size, 3), np.uint8)
    draw_belt(img, 0.0, 0, size, phase)
    if part is not None:
        draw_part(img, size / 2 + offset[0], size / 2 + offset[1], part)
    return img


# Classes of the shipped defect classifier, in its output order.
CROP_LABELS: Final = ("ok", "defect", "empty")
CENTRED_PX: Final = 6.0  # a part at most this far from the window's centre is "in" the window
OFF_CENTRE_PX: Final = 22.0  # ... and at least this far is "empty": between the two is ambiguous


def crop_dataset(
    n: int, seed: int, *, defect_rate: float = 0.5, empty_rate: float = 0.25
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.int64]]:
    """``n`` labelled inspection-window crops, ``(crops[n, 64, 64, 3], labels[n])`` with labels indexing
    :data:`CROP_LABELS`: a centred part (ok or defect, ``defect_rate`` of them defective) or, with
    probability ``empty_rate``, no part or one far enough off centre to count as none."""
    rng = np.random.default_rng(seed)
    crops = np.empty((n, CROP_SIZE, CROP_SIZE, 3), np.uint8)
    labels = np.empty(n, np.int64)
    for i in range(n):
        phase = float(rng.uniform(0, _BELT_MARK_PITCH))
        if rng.random() < empty_rate:
            part = random_part(rng, i, defect_rate) if rng.random() < 0.7 else None
            side = 1.0 if rng.random() < 0.5 else -1.0
            # Mostly just past the boundary, where a half-visible part is easy to take for a defective
            # one (its notch or an edge cut off by the window).
            dx = side * min(float(CROP_SIZE), OFF_CENTRE_PX + float(rng.exponential(12.0)))
            crops[i] = render_part_crop(part, offset=(dx, float(rng.uniform(-4, 4))), phase=phase)
            labels[i] = CROP_LABELS.index("empty")
            continue
        part = random_part(rng, i, defect_rate)
        offset = (float(rng.uniform(-CENTRED_PX, CENTRED_PX)), float(rng.uniform(-4, 4)))
        crops[i] = render_part_crop(part, offset=offset, phase=phase)
        labels[i] = CROP_LABELS.index("defect" if part.defective else "ok")
    return crops, labels


# The conveyor --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PartTruth:
    """One part in a frame: ``box`` is ``(x, y, w, h)`` in frame pixels (clipped to the frame)."""

    part: Part
    centre: tuple[float, float]
    box: tuple[int, int, int, int]

    @property
    def defective(self) -> bool:
        return self.part.defective


@dataclass(frozen=True, slots=True)
class FrameTruth:
    """The ground truth of one frame: its index, every visible part, and the inspection window's label
    (one of :data:`CROP_LABELS`, or None when a part is only partly in the window) with its part."""

    index: int
    parts: tuple[PartTruth, ...]
    roi_label: str | None
    roi_part: Part | None


class ConveyorSource:
    """An endless, deterministic video of parts passing on a belt: :meth:`read` returns the next frame
    and its ground truth. Frames are not paced: the caller decides how fast to read (``fps`` only sets
    how far the belt moves per frame, so the parts move at the same speed per second at any fps)."""

    SPEED_PX_S: Final = 120.0  # belt speed in pixels per second
    SPACING_PX: Final = 150.0  # mean distance between consecutive parts' centres

    def __init__(
        self,
        width: int = 640,
        height: int = 480,
        fps: float = 30.0,
        seed: int = 0,
        defect_rate: float = 0.2,
    ) -> None:
        if width < CROP_SIZE * 2 or height < CROP_SIZE * 2:
            raise ValueError(f"frame {width}x{height} is too small: at least {CROP_SIZE * 2} px each way")
        if fps <= 0:
            raise ValueError(f"fps must be positive, not {fps}")
        if not 0.0 <= defect_rate <= 1.0:
            raise ValueError(f"defect_rate must be within [0, 1], not {defect_rate}")
        self.width = width
        self.height = height
        self.fps = fps
        self.defect_rate = defect_rate
        self._rng = np.random.default_rng(seed)
        self._step = self.SPEED_PX_S / fps
        self.belt_top = height // 2 - CROP_SIZE
        self.belt_bottom = height // 2 + CROP_SIZE
        self._cy = (self.belt_top + self.belt_bottom) / 2
        half = CROP_SIZE // 2
        #: The inspection window ``(x, y, w, h)``: centred on the belt in the middle of the frame.
        self.roi = (width // 2 - half, round(self._cy) - half, CROP_SIZE, CROP_SIZE)
        self._next_id = 0
        self._parts: list[tuple[Part, float, float]] = []  # (part, x of its centre, y jitter)
        self._phase = 0.0
        self.index = 0
        # Fill the belt as if it had been running: parts from off-screen left to beyond the right edge.
        x = float(width) + PART_SIZE
        while x > -PART_SIZE:
            self._parts.append(self._new_part(x))
            x -= self._gap()
        self._parts.reverse()
        self._base = self._static_background()

    def _gap(self) -> float:
        return self.SPACING_PX * float(self._rng.uniform(0.8, 1.25))

    def _new_part(self, x: float) -> tuple[Part, float, float]:
        part = random_part(self._rng, self._next_id, self.defect_rate)
        self._next_id += 1
        return part, x, float(self._rng.uniform(-3.0, 3.0))

    def _static_background(self) -> Frame:
        img = np.empty((self.height, self.width, 3), np.uint8)
        img[:] = _BACKGROUND
        cv2.line(img, (0, self.belt_top - 2), (self.width, self.belt_top - 2), (140, 140, 140), 2)
        cv2.line(img, (0, self.belt_bottom + 1), (self.width, self.belt_bottom + 1), (140, 140, 140), 2)
        return img

    def read(self) -> tuple[Frame, FrameTruth]:
        """The next frame (BGR, ``height x width x 3``) and its truth; the belt then moves one step."""
        img = self._base.copy()
        draw_belt(img, 0.0, self.belt_top, self.belt_bottom, self._phase)
        truths: list[PartTruth] = []
        roi_x = self.roi[0] + CROP_SIZE / 2
        roi_label: str | None = "empty"
        roi_part: Part | None = None
        for part, x, dy in self._parts:
            cy = self._cy + dy
            draw_part(img, x, cy, part)
            half = part.size / 2 + 1
            x0, x1 = max(0, math.floor(x - half)), min(self.width, math.ceil(x + half))
            if x1 > x0:
                y0 = math.floor(cy - half)
                truths.append(PartTruth(part, (x, cy), (x0, y0, x1 - x0, math.ceil(2 * half))))
            off = abs(x - roi_x)
            if off <= CENTRED_PX:
                roi_label, roi_part = ("defect" if part.defective else "ok"), part
            elif off < OFF_CENTRE_PX and roi_part is None:
                roi_label = None
        truth = FrameTruth(self.index, tuple(truths), roi_label, roi_part)
        self._advance()
        return img, truth

    def _advance(self) -> None:
        self.index += 1
        self._phase = (self._phase + self._step) % _BELT_MARK_PITCH
        self._parts = [(p, x + self._step, dy) for p, x, dy in self._parts if x - PART_SIZE < self.width]
        leftmost = self._parts[0][1] if self._parts else float(self.width)
        while leftmost > -PART_SIZE:
            leftmost -= self._gap()
            self._parts.insert(0, self._new_part(leftmost))

    def crop(self, frame: Frame) -> Frame:
        """The inspection window of ``frame`` (a view, not a copy)."""
        x, y, w, h = self.roi
        return frame[y : y + h, x : x + w]


# Pump telemetry ------------------------------------------------------------------------------------------

PUMP_FEATURES: Final = ("pressure", "flow", "temperature", "vibration", "current")
PUMP_UNITS: Final = ("bar", "l/min", "C", "mm/s", "A")
NORMAL: Final = 0
CAVITATION: Final = 1
BEARING_WEAR: Final = 2
ANOMALY_KINDS: Final = ("normal", "cavitation", "bearing_wear")


@dataclass(frozen=True, slots=True)
class PumpTelemetry:
    """``readings[n, 5]`` (float32, columns :data:`PUMP_FEATURES`) and ``kinds[n]`` (int64, indexing
    :data:`ANOMALY_KINDS`), one reading a second."""

    readings: npt.NDArray[np.float32]
    kinds: npt.NDArray[np.int64]

    @property
    def anomalous(self) -> npt.NDArray[np.bool_]:
        flags: npt.NDArray[np.bool_] = self.kinds != NORMAL
        return flags


def pump_telemetry(seed: int, n: int, anomaly_rate: float = 0.1) -> PumpTelemetry:
    """``n`` readings of a running pump, about ``anomaly_rate`` of them in anomaly episodes (half
    cavitation, half bearing wear, 20-60 s each). See the module docs for the physics."""
    if n < 0:
        raise ValueError(f"n must be >= 0, not {n}")
    if not 0.0 <= anomaly_rate < 1.0:
        raise ValueError(f"anomaly_rate must be within [0, 1), not {anomaly_rate}")
    rng = np.random.default_rng(seed)
    kinds = np.zeros(n, np.int64)
    severity = np.zeros(n)
    # Episodes: between them a normal gap whose mean makes anomalies about anomaly_rate of the time.
    mean_episode = 40.0
    mean_gap = mean_episode * (1 - anomaly_rate) / anomaly_rate if anomaly_rate > 0 else math.inf
    t = int(rng.exponential(mean_gap)) if math.isfinite(mean_gap) else n
    while t < n:
        length = int(rng.integers(20, 61))
        kind = CAVITATION if rng.random() < 0.5 else BEARING_WEAR
        end = min(n, t + length)
        kinds[t:end] = kind
        ramp = np.linspace(0.0, 1.0, length)[: end - t]
        # Cavitation sets in within seconds; bearing wear drifts up from almost nothing, so its first
        # readings are hard to tell from normal ones (as on a real machine).
        if kind == CAVITATION:
            severity[t:end] = np.minimum(1.0, 0.3 + ramp * 3) * float(rng.uniform(0.6, 1.0))
        else:
            severity[t:end] = 0.05 + 0.95 * ramp * float(rng.uniform(0.6, 1.0))
        t = end + 1 + int(rng.exponential(mean_gap))

    out = np.empty((n, len(PUMP_FEATURES)), np.float32)
    speed = 0.8  # fraction of rated speed
    target = 0.8
    temp = 25.0 + 45.0 * speed**3
    ambient = float(rng.uniform(18.0, 30.0))
    for i in range(n):
        if rng.random() < 0.02:  # the operator or the process changes the setpoint now and then
            target = float(rng.uniform(0.5, 1.0))
        speed += (target - speed) * (1 - math.exp(-1 / 1.5))  # VFD ramp, 1.5 s time constant
        ambient = min(32.0, max(15.0, ambient + float(rng.normal(0, 0.02))))
        load = speed**3
        temp += (ambient + 45.0 * load - temp) * (1 - math.exp(-1 / 30.0))  # 30 s thermal time constant
        flow = 250.0 * speed
        pressure = 6.0 * speed**2
        current = 4.0 + 11.0 * load
        vibration = 1.2 * speed
        s = severity[i]
        extra_temp = 0.0
        if kinds[i] == CAVITATION:
            flow *= 1 - 0.2 * s
            pressure *= 1 - 0.1 * s
            vibration *= 1 + 1.5 * s * float(rng.uniform(0.5, 1.5))
            current *= 1 - 0.05 * s
        elif kinds[i] == BEARING_WEAR:
            extra_temp = 10.0 * s
            vibration += 1.5 * s
            current *= 1 + 0.04 * s
        out[i] = (
            pressure + rng.normal(0, 0.04),
            flow + rng.normal(0, 1.5),
            temp + extra_temp + rng.normal(0, 0.2),
            max(0.0, vibration + abs(rng.normal(0, 0.08))),
            current + rng.normal(0, 0.12),
        )
    return PumpTelemetry(out, kinds)
