"""ONNX inference as a declared pipeline: config -> preprocess -> ``InferenceSession.run`` -> results.

The inference workload (``edgeservice.workloads.inference``), the benchmark and the training script's
evaluation all go through this module, so that what the model card measures is what runs on the edge.
Nothing here reads a camera or a socket: the only I/O is loading the model file.

A pod declares its model in the ``inference`` object of its config (JSON, camelCase like the rest of the
API); :func:`parse_config` turns it into an :class:`InferenceConfig` and names the offending field in
every :class:`InferenceConfigError` (``preprocess.resize``, ``rules[0].minScore``)::

    {"model": "assets/models/defect_classifier.onnx",
     "task": "classification",                    # | "detection" | "anomaly"
     "input": {"name": "image", "shape": [-1, 1024], "dtype": "float32"},   # all optional: the model's
     "preprocess": {"crop": [288, 208, 64, 64], "resize": [32, 32], "interpolation": "area", "color": "gray",
                    "scale": 0.00392156862745098, "mean": [0], "std": [1], "layout": "flat"},
     "postprocess": {"output": "probabilities", "labels": ["ok", "defect", "empty"],
                     "softmax": false, "topK": 1, "threshold": 0.0},
     "rules": [{"label": "defect", "minScore": 0.8, "reason": "DefectDetected",
                "message": "defect detected on {device}", "type": "Warning", "cooldown": 2.0}]}

Frames are BGR ``uint8`` arrays, as OpenCV captures them. Preprocessing, in order: crop (``x, y, w, h``
in frame pixels), resize (``w, h``, with ``interpolation`` ``linear`` (the default, what most image
models are trained with), ``area`` (sharper for downscales by a whole factor, but about ten times slower
for a 640x480 -> 224x224 resize) or ``nearest``), colour order (``bgr``, ``rgb``, ``gray``), ``x * scale``,
then ``(x - mean) / std`` per channel (mean and std in the model's colour order), then the layout:
``NCHW``, ``NHWC`` or ``flat`` (one row of ``h * w * c`` values, what a scikit-learn model exported with
skl2onnx takes). For float32 inputs the last four steps are one ``cv2.dnn.blobFromImageWithParams``.
(Grey conversion is done before the resize: the same result up to rounding, for a third of the work.)
Anomaly models take a feature vector instead: :func:`preprocess_features` orders named readings as
``features`` lists them, then applies scale/mean/std.

Postprocessing by task:

* ``classification``: one output of class scores ``[1, C]`` (``softmax`` when they are logits); the
  ``topK`` best at or above ``threshold`` become results, boxed by the crop when there is one.
* ``detection``: ``boxes`` ``[1, K, 4]`` (``xyxy``, ``xywh`` or ``cxcywh``; in model-input pixels, or
  ``normalized`` to [0, 1]), ``scores`` ``[1, K]`` or ``[1, K, C]`` (best class), optional ``classes``
  ``[1, K]``; boxes below ``scoreThreshold`` are dropped, the rest go through ``cv2.dnn.NMSBoxes`` and
  are mapped back to frame pixels.
* ``anomaly``: one score, ``output[0, scoreIndex]``; the result is labelled ``anomaly`` at or above
  ``threshold``, else ``normal``, and carries the score either way.

Rules turn results into events (:func:`evaluate_rules`): a rule fires when a result has its ``label`` (any
label when absent) with a score of at least ``minScore``, at most once per ``cooldown`` seconds, since a
defective part stays in view for several frames. Its message is a ``str.format`` template over
``device``, ``label`` and ``score``, checked when the config is parsed.

:func:`load_session` gives an ``onnxruntime.InferenceSession`` on the CPU, or a :class:`ModelLoadError`
that says why (no such file, not an ONNX model, an input that does not match the config). The checks are
made once at load, so a bad pod fails at start with a reason, not on its first frame.

Deliberately not done: batching (a camera gives one frame at a time and latency matters more), letterbox
resizing, models with several inputs, execution providers other than the CPU, and anchors or
objectness decoding for raw detector heads (export the model with its decoding, as most are).
"""

from __future__ import annotations

import functools
import math
import string
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal, cast

import cv2
import numpy as np
import numpy.typing as npt
import onnxruntime as ort  # type: ignore[import-untyped]

from app.errors import FleetOpsError

Task = Literal["classification", "detection", "anomaly"]
Layout = Literal["NCHW", "NHWC", "flat"]
Colour = Literal["bgr", "rgb", "gray"]
BoxFormat = Literal["xyxy", "xywh", "cxcywh"]
Interpolation = Literal["linear", "area", "nearest"]
Tensor = npt.NDArray[Any]
Box = tuple[int, int, int, int]  # x, y, w, h in frame pixels

TASKS: Final = ("classification", "detection", "anomaly")
LAYOUTS: Final = ("NCHW", "NHWC", "flat")
COLOURS: Final = ("bgr", "rgb", "gray")
BOX_FORMATS: Final = ("xyxy", "xywh", "cxcywh")
_INTERPOLATIONS: Final = {"linear": cv2.INTER_LINEAR, "area": cv2.INTER_AREA, "nearest": cv2.INTER_NEAREST}
DTYPES: Final = {"float32": np.float32, "float16": np.float16, "uint8": np.uint8, "int8": np.int8}
# ONNX's type strings for the dtypes above, as onnxruntime reports a model's inputs.
_ORT_TYPES: Final = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(uint8)": "uint8",
    "tensor(int8)": "int8",
}
EVENT_TYPES: Final = ("Warning", "Normal")  # Kubernetes Event types
_TEMPLATE_FIELDS: Final = frozenset({"device", "label", "score"})
DEFAULT_COOLDOWN_S: Final = 2.0  # a conveyor part stays in the inspection window for ~0.2 s at 120 px/s
DEFAULT_TOP_K: Final = 1
MAX_RESULTS: Final = 100  # detections reported per frame at most, whatever the model returns


class InferenceError(FleetOpsError):
    """Root of this module's errors."""


class InferenceConfigError(InferenceError):
    """The ``inference`` config is malformed; ``field`` is the JSON path inside it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.message = message


class ModelLoadError(InferenceError):
    """The model cannot be used: missing, not ONNX, or its input does not match the config."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"model {path}: {message}")
        self.path = path
        self.message = message


class InferenceRunError(InferenceError):
    """A loaded model failed on one input (a shape it rejects at run time, an output missing)."""


# Config --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InputSpec:
    name: str | None = None  # None: the model's first input
    shape: tuple[int | None, ...] | None = None  # None dims (or -1 in JSON) are free
    dtype: str = "float32"


@dataclass(frozen=True, slots=True)
class Preprocess:
    crop: Box | None = None
    resize: tuple[int, int] | None = None  # (w, h)
    color: Colour = "bgr"
    scale: float = 1.0
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    layout: Layout = "NCHW"
    interpolation: Interpolation = "linear"

    @property
    def channels(self) -> int:
        return 1 if self.color == "gray" else 3


@dataclass(frozen=True, slots=True)
class Postprocess:
    output: str | None = None  # classification / anomaly: the scores output (None: the first)
    labels: tuple[str, ...] = ()
    softmax: bool = False
    top_k: int = DEFAULT_TOP_K
    threshold: float = 0.0  # classification: lowest score reported; anomaly: the anomaly threshold
    score_index: int = -1  # anomaly: which column of the output is the score (-1: the last)
    boxes: str = "boxes"  # detection outputs
    scores: str = "scores"
    classes: str | None = None
    box_format: BoxFormat = "xyxy"
    normalized: bool = False
    score_threshold: float = 0.5
    nms_threshold: float = 0.45


@dataclass(frozen=True, slots=True)
class Rule:
    reason: str
    message: str
    label: str | None = None  # None: any result
    min_score: float = 0.0
    type: str = "Warning"
    cooldown_s: float = DEFAULT_COOLDOWN_S


@dataclass(frozen=True, slots=True)
class InferenceConfig:
    model: Path
    task: Task
    input: InputSpec = field(default_factory=InputSpec)
    preprocess: Preprocess = field(default_factory=Preprocess)
    postprocess: Postprocess = field(default_factory=Postprocess)
    rules: tuple[Rule, ...] = ()
    features: tuple[str, ...] = ()  # anomaly on telemetry: the readings, in the model's input order
    threads: int = 1  # onnxruntime intra-op threads; 1 keeps a small model from spinning a core each

    def label(self, index: int) -> str:
        labels = self.postprocess.labels
        return labels[index] if 0 <= index < len(labels) else str(index)


def _obj(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InferenceConfigError(where, "must be an object")
    return value


def _number(obj: Mapping[str, Any], key: str, where: str, default: float) -> float:
    value = obj.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InferenceConfigError(f"{where}{key}", f"must be a number, not {value!r}")
    return float(value)


def _int(obj: Mapping[str, Any], key: str, where: str, default: int, minimum: int) -> int:
    value = obj.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InferenceConfigError(f"{where}{key}", f"must be an integer >= {minimum}, not {value!r}")
    return value


def _bool(obj: Mapping[str, Any], key: str, where: str, default: bool) -> bool:
    value = obj.get(key, default)
    if not isinstance(value, bool):
        raise InferenceConfigError(f"{where}{key}", f"must be true or false, not {value!r}")
    return value


def _choice(obj: Mapping[str, Any], key: str, where: str, default: str, choices: Sequence[str]) -> str:
    value = obj.get(key, default)
    if value not in choices:
        raise InferenceConfigError(f"{where}{key}", f"must be one of {', '.join(choices)}, not {value!r}")
    return cast(str, value)


def _str(obj: Mapping[str, Any], key: str, where: str, default: str | None = None) -> str | None:
    value = obj.get(key, default)
    if value is not None and (not isinstance(value, str) or not value):
        raise InferenceConfigError(f"{where}{key}", f"must be a non-empty string, not {value!r}")
    return value


def _ints(value: Any, where: str, n: int, minimum: int) -> tuple[int, ...]:
    if (
        not isinstance(value, list)
        or len(value) != n
        or not all(isinstance(v, int) and not isinstance(v, bool) and v >= minimum for v in value)
    ):
        raise InferenceConfigError(where, f"must be a list of {n} integers >= {minimum}, not {value!r}")
    return tuple(value)


def _floats(value: Any, where: str) -> tuple[float, ...]:
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = [value]
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in value)
    ):
        raise InferenceConfigError(where, f"must be a number or a non-empty list of numbers, not {value!r}")
    return tuple(float(v) for v in value)


def _parse_input(raw: Any) -> InputSpec:
    obj = _obj(raw, "input")
    shape: tuple[int | None, ...] | None = None
    if obj.get("shape") is not None:
        dims = obj["shape"]
        if (
            not isinstance(dims, list)
            or not dims
            or not all(
                d is None or (isinstance(d, int) and not isinstance(d, bool) and (d > 0 or d == -1))
                for d in dims
            )
        ):
            raise InferenceConfigError(
                "input.shape", f"must be a list of positive integers (-1 or null: any), not {dims!r}"
            )
        shape = tuple(None if d is None or d == -1 else d for d in dims)
    dtype = _choice(obj, "dtype", "input.", "float32", tuple(DTYPES))
    return InputSpec(name=_str(obj, "name", "input."), shape=shape, dtype=dtype)


def _parse_preprocess(raw: Any, task: Task) -> Preprocess:
    obj = _obj(raw, "preprocess")
    w = "preprocess."
    crop = _ints(obj["crop"], f"{w}crop", 4, 0) if obj.get("crop") is not None else None
    if crop is not None and (crop[2] == 0 or crop[3] == 0):
        raise InferenceConfigError(f"{w}crop", "width and height must be positive")
    resize = _ints(obj["resize"], f"{w}resize", 2, 1) if obj.get("resize") is not None else None
    scale = _number(obj, "scale", w, 1.0)
    mean = _floats(obj.get("mean", [0.0]), f"{w}mean")
    std = _floats(obj.get("std", [1.0]), f"{w}std")
    if any(s == 0 for s in std):
        raise InferenceConfigError(f"{w}std", "must not contain 0")
    default_layout = "flat" if task == "anomaly" else "NCHW"
    pre = Preprocess(
        crop=cast(Box | None, crop),
        resize=cast(tuple[int, int] | None, resize),
        color=cast(Colour, _choice(obj, "color", w, "bgr", COLOURS)),
        scale=scale,
        mean=mean,
        std=std,
        layout=cast(Layout, _choice(obj, "layout", w, default_layout, LAYOUTS)),
        interpolation=cast(Interpolation, _choice(obj, "interpolation", w, "linear", tuple(_INTERPOLATIONS))),
    )
    if task != "anomaly":
        for key, values in (("mean", mean), ("std", std)):
            if len(values) not in (1, pre.channels):
                raise InferenceConfigError(
                    f"{w}{key}", f"needs 1 or {pre.channels} values for color {pre.color!r}"
                )
    return pre


def _parse_postprocess(raw: Any, task: Task) -> Postprocess:
    obj = _obj(raw, "postprocess")
    w = "postprocess."
    labels = obj.get("labels", [])
    if not isinstance(labels, list) or not all(isinstance(x, str) and x for x in labels):
        raise InferenceConfigError(f"{w}labels", "must be a list of non-empty strings")
    threshold = _number(obj, "threshold", w, 0.5 if task == "anomaly" else 0.0)
    score_threshold = _number(obj, "scoreThreshold", w, 0.5)
    nms = _number(obj, "nmsThreshold", w, 0.45)
    for key, value in (("scoreThreshold", score_threshold), ("nmsThreshold", nms)):
        if not 0.0 <= value <= 1.0:
            raise InferenceConfigError(f"{w}{key}", f"must be within [0, 1], not {value}")
    score_index = obj.get("scoreIndex", -1)
    if isinstance(score_index, bool) or not isinstance(score_index, int):
        raise InferenceConfigError(f"{w}scoreIndex", f"must be an integer, not {score_index!r}")
    return Postprocess(
        output=_str(obj, "output", w),
        labels=tuple(labels),
        softmax=_bool(obj, "softmax", w, False),
        top_k=_int(obj, "topK", w, DEFAULT_TOP_K, 1),
        threshold=threshold,
        score_index=score_index,
        boxes=_str(obj, "boxes", w, "boxes") or "boxes",
        scores=_str(obj, "scores", w, "scores") or "scores",
        classes=_str(obj, "classes", w),
        box_format=cast(BoxFormat, _choice(obj, "boxFormat", w, "xyxy", BOX_FORMATS)),
        normalized=_bool(obj, "normalized", w, False),
        score_threshold=score_threshold,
        nms_threshold=nms,
    )


def _check_template(template: str, where: str) -> None:
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as exc:
        raise InferenceConfigError(where, f"not a valid template: {exc}") from exc
    unknown = {n.split(".")[0].split("[")[0] for n in names} - _TEMPLATE_FIELDS
    if unknown or "" in names:
        raise InferenceConfigError(
            where, f"unknown placeholder(s) {sorted(unknown) or ['{}']}: use {sorted(_TEMPLATE_FIELDS)}"
        )


def _parse_rules(raw: Any) -> tuple[Rule, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise InferenceConfigError("rules", "must be a list")
    rules = []
    for i, item in enumerate(raw):
        w = f"rules[{i}]."
        obj = _obj(item, f"rules[{i}]")
        reason = _str(obj, "reason", w)
        if reason is None:
            raise InferenceConfigError(f"{w}reason", "Required value: the Event reason (e.g. DefectDetected)")
        message = _str(obj, "message", w, reason)
        assert message is not None
        _check_template(message, f"{w}message")
        cooldown = _number(obj, "cooldown", w, DEFAULT_COOLDOWN_S)
        if cooldown < 0:
            raise InferenceConfigError(f"{w}cooldown", f"must be >= 0, not {cooldown}")
        rules.append(
            Rule(
                reason=reason,
                message=message,
                label=_str(obj, "label", w),
                min_score=_number(obj, "minScore", w, 0.0),
                type=_choice(obj, "type", w, "Warning", EVENT_TYPES),
                cooldown_s=cooldown,
            )
        )
    return tuple(rules)


def parse_config(obj: Any, base: Path | None = None) -> InferenceConfig:
    """Validate an ``inference`` config object; a relative ``model`` path is taken from ``base``."""
    if not isinstance(obj, dict):
        raise InferenceConfigError("", "the inference config must be a JSON object")
    model = obj.get("model")
    if not isinstance(model, str) or not model:
        raise InferenceConfigError("model", "Required value: the path of an .onnx file")
    task = obj.get("task")
    if task not in TASKS:
        raise InferenceConfigError("task", f"must be one of {', '.join(TASKS)}, not {task!r}")
    features = obj.get("features", [])
    if not isinstance(features, list) or not all(isinstance(f, str) and f for f in features):
        raise InferenceConfigError("features", "must be a list of reading names")
    path = Path(model)
    if base is not None and not path.is_absolute():
        path = base / path
    return InferenceConfig(
        model=path,
        task=task,
        input=_parse_input(obj.get("input")),
        preprocess=_parse_preprocess(obj.get("preprocess"), task),
        postprocess=_parse_postprocess(obj.get("postprocess"), task),
        rules=_parse_rules(obj.get("rules")),
        features=tuple(features),
        threads=_int(obj, "threads", "", 1, 0),
    )


# Loading -------------------------------------------------------------------------------------------------


def _dims(shape: Sequence[Any]) -> tuple[int | None, ...]:
    """A model's input shape with symbolic or unknown dimensions as None."""
    return tuple(d if isinstance(d, int) and d > 0 else None for d in shape)


def _fmt(shape: Sequence[int | None]) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def expected_shape(config: InferenceConfig) -> tuple[int | None, ...] | None:
    """The input shape the preprocessing makes (batch 1), or None where it depends on the frame."""
    pre = config.preprocess
    if config.task == "anomaly" and config.features:
        return (1, len(config.features))
    if pre.resize is None:  # the model's own input size is used (or the frame's, when the model's is free)
        return None
    w, h = pre.resize
    c = pre.channels
    if pre.layout == "NCHW":
        return (1, c, h, w)
    if pre.layout == "NHWC":
        return (1, h, w, c)
    return (1, h * w * c)


def _compatible(model: Sequence[int | None], want: Sequence[int | None]) -> bool:
    return len(model) == len(want) and all(
        m is None or w is None or m == w for m, w in zip(model, want, strict=True)
    )


def load_session(path: Path | str, config: InferenceConfig | None = None) -> Any:
    """An ``onnxruntime.InferenceSession`` for ``path`` on the CPU; with ``config``, its input (name,
    dtype, shape, and the shape the preprocessing makes) and named outputs are checked. Raises
    :class:`ModelLoadError` saying why the model cannot be used."""
    p = Path(path)
    if not p.is_file():
        raise ModelLoadError(str(p), "no such file")
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: the reason goes into our own error
    if config is not None:
        options.intra_op_num_threads = config.threads
        options.inter_op_num_threads = 1
    try:
        session = ort.InferenceSession(str(p), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own untyped Fail/InvalidGraph/... classes
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(str(p), f"not a usable ONNX model: {first}") from exc
    if config is not None:
        check_session(session, config, str(p))
    return session


def model_input(session: Any, config: InferenceConfig, path: str = "") -> Any:
    """The session's input the config feeds (by name, or the first)."""
    inputs = session.get_inputs()
    if config.input.name is None:
        return inputs[0]
    for i in inputs:
        if i.name == config.input.name:
            return i
    names = ", ".join(repr(i.name) for i in inputs)
    raise ModelLoadError(path, f"has no input {config.input.name!r} (input.name); its inputs: {names}")


def check_session(session: Any, config: InferenceConfig, path: str = "") -> None:
    """Raise ModelLoadError when the model's input or outputs do not fit the config."""
    inp = model_input(session, config, path)
    if len(session.get_inputs()) > 1:
        raise ModelLoadError(path, f"has {len(session.get_inputs())} inputs; only one-input models run here")
    dtype = _ORT_TYPES.get(inp.type)
    if dtype is None:
        raise ModelLoadError(path, f"input {inp.name!r} is {inp.type}: not an image or feature tensor")
    if dtype != config.input.dtype:
        raise ModelLoadError(path, f"input {inp.name!r} is {dtype}, the config says {config.input.dtype}")
    have = _dims(inp.shape)
    for what, want in (("input.shape", config.input.shape), ("preprocess", expected_shape(config))):
        if want is not None and not _compatible(have, want):
            raise ModelLoadError(
                path,
                f"input {inp.name!r} has shape {_fmt(have)}; the config ({what}) makes {_fmt(want)}",
            )
    if config.preprocess.layout in ("NCHW", "NHWC") and config.task != "anomaly" and len(have) != 4:
        raise ModelLoadError(
            path, f"input {inp.name!r} has shape {_fmt(have)}: layout {config.preprocess.layout} needs 4 dims"
        )
    outputs = {o.name for o in session.get_outputs()}
    post = config.postprocess
    wanted = [post.boxes, post.scores, *([post.classes] if post.classes else [])]
    if config.task != "detection":
        wanted = [post.output] if post.output else []
    for name in wanted:
        if name not in outputs:
            raise ModelLoadError(
                path, f"has no output {name!r} (postprocess); its outputs: {', '.join(sorted(outputs))}"
            )


# Pre- and postprocessing ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Geometry:
    """How the model input maps back to the frame: the region it came from and the size it was resized
    to. Boxes in model-input pixels scale by ``region_w / input_w``, and shift by the region's origin."""

    region: Box
    input_w: int
    input_h: int

    def to_frame(self, x: float, y: float, w: float, h: float) -> Box:
        sx = self.region[2] / self.input_w
        sy = self.region[3] / self.input_h
        return (
            round(self.region[0] + x * sx),
            round(self.region[1] + y * sy),
            round(w * sx),
            round(h * sy),
        )


def _model_hw(config: InferenceConfig, shape: Sequence[int | None] | None) -> tuple[int, int] | None:
    """(w, h) the model wants, from its input shape and the layout (None when free)."""
    if shape is None or len(shape) != 4:
        return None
    h, w = (shape[2], shape[3]) if config.preprocess.layout == "NCHW" else (shape[1], shape[2])
    return (w, h) if w and h else None


@functools.lru_cache(maxsize=64)
def _blob_params(pre: Preprocess, width: int, height: int) -> Any:
    """``cv2.dnn.Image2BlobParams`` for ``pre``: ``((x * scale) - mean) / std`` rewritten as OpenCV's
    ``(x - mean') * factor`` with ``mean' = mean / scale`` and ``factor = scale / std`` per channel."""
    n = pre.channels
    mean = [pre.mean[0]] * n if len(pre.mean) == 1 else list(pre.mean)
    std = [pre.std[0]] * n if len(pre.std) == 1 else list(pre.std)
    params = cv2.dnn.Image2BlobParams()
    params.scalefactor = tuple([pre.scale / s for s in std] + [0.0] * (4 - n))
    params.mean = tuple([m / pre.scale for m in mean] + [0.0] * (4 - n))
    params.size = (width, height)
    params.swapRB = pre.color == "rgb"
    params.ddepth = cv2.CV_32F
    params.datalayout = cv2.DNN_LAYOUT_NCHW if pre.layout == "NCHW" else cv2.DNN_LAYOUT_NHWC
    return params


def preprocess(
    frame: Tensor, config: InferenceConfig, model_shape: Sequence[int | None] | None = None
) -> tuple[Tensor, Geometry]:
    """The model's input tensor (batch 1) for a BGR ``frame``, and the geometry that maps boxes back.

    ``model_shape`` (the session input's shape) gives the resize when the config has none."""
    pre = config.preprocess
    fh, fw = frame.shape[:2]
    region: Box = (0, 0, fw, fh)
    img = frame
    if pre.crop is not None:
        x, y, w, h = pre.crop
        if x + w > fw or y + h > fh:
            raise InferenceRunError(f"preprocess.crop {list(pre.crop)} is outside the {fw}x{fh} frame")
        img = frame[y : y + h, x : x + w]
        region = pre.crop
    size = pre.resize or _model_hw(config, model_shape)
    # Grey before resizing: a third of the pixels to resize.
    if pre.color == "gray" and img.ndim == 3 and img.shape[2] == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    if size is not None and (img.shape[1], img.shape[0]) != size:
        img = cv2.resize(img, size, interpolation=_INTERPOLATIONS[pre.interpolation])
    geometry = Geometry(region, img.shape[1], img.shape[0])
    dtype = DTYPES[config.input.dtype]
    if dtype == np.float32 and pre.scale != 0.0:
        # OpenCV's blob maker does colour order, scale, mean, std and layout in one optimised pass:
        # about 0.1 ms for 224x224x3 where the same numpy steps take ~0.9 ms.
        blob = cv2.dnn.blobFromImageWithParams(img, _blob_params(pre, img.shape[1], img.shape[0]))
        x_in: Tensor = blob.reshape(1, -1) if pre.layout == "flat" else blob
        return np.ascontiguousarray(x_in), geometry
    if img.ndim == 2:
        img = img[:, :, None]
    if pre.color == "rgb":
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    if dtype in (np.uint8, np.int8) and pre.scale == 1.0 and pre.mean == (0.0,) and pre.std == (1.0,):
        x_in = img.astype(dtype, copy=False)
    else:
        x_in = np.multiply(img, np.float32(pre.scale), dtype=np.float32)
        if pre.mean != (0.0,):
            x_in -= np.asarray(pre.mean, np.float32)
        if pre.std != (1.0,):
            x_in /= np.asarray(pre.std, np.float32)
        x_in = x_in.astype(dtype, copy=False)
    if pre.layout == "NCHW":
        x_in = x_in.transpose(2, 0, 1)[None]
    elif pre.layout == "NHWC":
        x_in = x_in[None]
    else:
        x_in = x_in.reshape(1, -1)
    return np.ascontiguousarray(x_in), geometry


def preprocess_features(values: Mapping[str, float], config: InferenceConfig) -> Tensor:
    """The ``[1, F]`` input of an anomaly model from named readings, in ``features`` order, with
    scale/mean/std applied; KeyError names a missing reading."""
    pre = config.preprocess
    row = np.asarray([values[name] for name in config.features], np.float32) * np.float32(pre.scale)
    mean = np.asarray(pre.mean, np.float32)
    std = np.asarray(pre.std, np.float32)
    if mean.size not in (1, row.size) or std.size not in (1, row.size):
        raise InferenceRunError(f"preprocess.mean/std need 1 or {row.size} values for {row.size} features")
    return ((row - mean) / std).astype(DTYPES[config.input.dtype])[None]


@dataclass(frozen=True, slots=True)
class Result:
    """One thing the model found: a class (with the crop as its box), a detection, or an anomaly score."""

    label: str
    score: float
    box: Box | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "score": round(self.score, 4),
            "box": list(self.box) if self.box else None,
        }


def _softmax(x: Tensor) -> Tensor:
    e = np.exp(x - np.max(x))
    return cast(Tensor, e / e.sum())


def _output(outputs: Mapping[str, Tensor], name: str | None) -> Tensor:
    if name is None:
        return next(iter(outputs.values()))
    try:
        return outputs[name]
    except KeyError:
        raise InferenceRunError(f"the model gave no output {name!r}") from None


def _classify(outputs: Mapping[str, Tensor], config: InferenceConfig, geometry: Geometry) -> list[Result]:
    post = config.postprocess
    scores = np.asarray(_output(outputs, post.output), np.float64).reshape(-1)
    if post.softmax:
        scores = _softmax(scores)
    if post.top_k == 1:
        order = [int(np.argmax(scores))]
    else:
        order = np.argsort(-scores, kind="stable")[: post.top_k].tolist()
    box = None if config.preprocess.crop is None else geometry.region
    values = scores.tolist()
    return [Result(config.label(i), values[i], box) for i in order if values[i] >= post.threshold]


def _anomaly(outputs: Mapping[str, Tensor], config: InferenceConfig) -> list[Result]:
    post = config.postprocess
    scores = np.asarray(_output(outputs, post.output), np.float64).reshape(-1)
    try:
        score = float(scores[post.score_index])
    except IndexError:
        raise InferenceRunError(
            f"postprocess.scoreIndex {post.score_index} is outside the model's {scores.size} output values"
        ) from None
    return [Result("anomaly" if score >= post.threshold else "normal", score)]


def _detect(outputs: Mapping[str, Tensor], config: InferenceConfig, geometry: Geometry) -> list[Result]:
    post = config.postprocess
    boxes = np.asarray(_output(outputs, post.boxes), np.float64).reshape(-1, 4)
    raw = np.asarray(_output(outputs, post.scores), np.float64)
    if raw.ndim >= 2 and raw.shape[-1] > 1 and raw.size == boxes.shape[0] * raw.shape[-1]:
        per_class = raw.reshape(boxes.shape[0], -1)
        classes = per_class.argmax(axis=1)
        scores = per_class.max(axis=1)
    else:
        scores = raw.reshape(-1)
        if post.classes is not None:
            classes = np.asarray(_output(outputs, post.classes)).reshape(-1).astype(np.int64)
        else:
            classes = np.zeros(scores.shape[0], np.int64)
    if scores.shape[0] != boxes.shape[0] or classes.shape[0] != boxes.shape[0]:
        raise InferenceRunError(
            f"the model gave {boxes.shape[0]} boxes, {scores.shape[0]} scores, {classes.shape[0]} classes"
        )
    if post.normalized:
        boxes = boxes * np.array([geometry.input_w, geometry.input_h] * 2)
    if post.box_format == "xyxy":
        xywh = np.stack([boxes[:, 0], boxes[:, 1], boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], 1)
    elif post.box_format == "cxcywh":
        xywh = np.stack(
            [boxes[:, 0] - boxes[:, 2] / 2, boxes[:, 1] - boxes[:, 3] / 2, boxes[:, 2], boxes[:, 3]], 1
        )
    else:
        xywh = boxes
    keep = cv2.dnn.NMSBoxes(
        [[float(v) for v in b] for b in xywh],
        [float(s) for s in scores],
        post.score_threshold,
        post.nms_threshold,
        top_k=MAX_RESULTS,
    )
    results = [
        Result(config.label(int(classes[i])), float(scores[i]), geometry.to_frame(*xywh[i]))
        for i in np.asarray(keep, np.int64).reshape(-1)
    ]
    results.sort(key=lambda r: -r.score)
    return results


def postprocess(
    outputs: Mapping[str, Tensor], config: InferenceConfig, geometry: Geometry | None
) -> list[Result]:
    """The results of one run (``outputs`` by output name), best first."""
    if config.task == "anomaly":
        return _anomaly(outputs, config)
    if geometry is None:
        raise InferenceRunError(f"a {config.task} model needs the frame geometry")
    if config.task == "classification":
        return _classify(outputs, config, geometry)
    return _detect(outputs, config, geometry)


# Rules ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Event:
    """What a fired rule says; the workload publishes it and the cloud makes a Kubernetes Event of it."""

    type: str
    reason: str
    message: str
    label: str
    score: float

    def to_json(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "reason": self.reason,
            "message": self.message,
            "label": self.label,
            "score": round(self.score, 4),
        }


class _SafeFormat(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def evaluate_rules(
    rules: Sequence[Rule], results: Sequence[Result], *, device: str, now: float, last_fired: dict[int, float]
) -> list[Event]:
    """The events ``results`` fire, at most one per rule (its best matching result), honouring each
    rule's cooldown; ``last_fired`` (rule index -> time it last fired, same clock as ``now``) is updated."""
    events = []
    for i, rule in enumerate(rules):
        matches = [
            r for r in results if (rule.label is None or r.label == rule.label) and r.score >= rule.min_score
        ]
        if not matches:
            continue
        last = last_fired.get(i)
        if last is not None and now - last < rule.cooldown_s:
            continue
        best = max(matches, key=lambda r: r.score)
        last_fired[i] = now
        fields = _SafeFormat(device=device, label=best.label, score=f"{best.score:.2f}")
        events.append(Event(rule.type, rule.reason, rule.message.format_map(fields), best.label, best.score))
    return events


# The pipeline --------------------------------------------------------------------------------------------


class Pipeline:
    """A loaded model with its config: :meth:`infer` runs one frame (or one feature vector) end to end."""

    def __init__(self, config: InferenceConfig, session: Any | None = None) -> None:
        self.config = config
        self.session = session if session is not None else load_session(config.model, config)
        if session is not None:
            check_session(session, config, str(config.model))
        inp = model_input(self.session, config, str(config.model))
        self.input_name: str = inp.name
        self.input_shape = _dims(inp.shape)
        self.output_names: list[str] = [o.name for o in self.session.get_outputs()]
        self.last_run_s = 0.0

    def prepare(self, frame: Tensor) -> tuple[Tensor, Geometry]:
        return preprocess(frame, self.config, self.input_shape)

    def run(self, tensor: Tensor) -> dict[str, Tensor]:
        """``InferenceSession.run`` on one input; outputs by name."""
        try:
            values = self.session.run(self.output_names, {self.input_name: tensor})
        except Exception as exc:  # onnxruntime's own error classes
            raise InferenceRunError(f"the model failed: {str(exc).strip().splitlines()[0]}") from exc
        return dict(zip(self.output_names, values, strict=True))

    def infer(self, frame: Tensor) -> list[Result]:
        """Preprocess ``frame``, run the model and postprocess: the results, best first."""
        tensor, geometry = self.prepare(frame)
        started = time.perf_counter()
        outputs = self.run(tensor)
        self.last_run_s = time.perf_counter() - started
        return postprocess(outputs, self.config, geometry)

    def infer_features(self, values: Mapping[str, float]) -> list[Result]:
        """An anomaly model on named readings."""
        outputs = self.run(preprocess_features(values, self.config))
        return postprocess(outputs, self.config, None)


# Overlay -------------------------------------------------------------------------------------------------

_GOOD = (80, 200, 80)  # BGR
_BAD = (40, 40, 230)
_NEUTRAL = (230, 200, 60)
_BAD_LABELS: Final = frozenset({"defect", "anomaly"})


def draw_overlay(
    frame: Tensor, results: Sequence[Result], *, fps: float | None = None, region: Box | None = None
) -> Tensor:
    """A copy of ``frame`` with each result's box and ``label score`` drawn, and the inference fps when
    given. A result without a box (a classification) is drawn on ``region``, the part of the frame the
    model looked at (the preprocessing crop), when there is one; otherwise listed at the top left."""
    out = frame.copy()
    line = 0
    region_used = False  # the region shows the best classification; any others are listed
    for r in results:
        colour = _BAD if r.label in _BAD_LABELS else _GOOD if r.label in ("ok", "normal") else _NEUTRAL
        text = f"{r.label} {r.score:.2f}"
        box = r.box
        if box is None and region is not None and not region_used:
            box, region_used = region, True
        if box is not None:
            x, y, w, h = box
            cv2.rectangle(out, (x, y), (x + w, y + h), colour, 2)
            (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)
            ty = max(th + base, y - 2)
            cv2.rectangle(out, (x, ty - th - base), (x + tw + 4, ty + 1), colour, -1)
            cv2.putText(
                out, text, (x + 2, ty - base + 1), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA
            )
        else:
            line += 1
            cv2.putText(out, text, (8, 22 * line), cv2.FONT_HERSHEY_SIMPLEX, 0.6, colour, 2, cv2.LINE_AA)
    if fps is not None:
        text = f"{fps:.1f} fps"
        cv2.putText(
            out, text, (8, out.shape[0] - 10), cv2.FONT_HERSHEY_SIMPLEX, 0.5, _NEUTRAL, 1, cv2.LINE_AA
        )
    return out
