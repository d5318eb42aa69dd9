"""The inference pipeline: config errors name their field, the shipped models do what their cards say,
a foreign ONNX model runs through the same config, mismatches are refused at load, overlays draw."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from app import synthetic
from app.inference import (
    InferenceConfigError,
    ModelLoadError,
    Pipeline,
    Result,
    Rule,
    draw_overlay,
    evaluate_rules,
    load_session,
    parse_config,
    preprocess,
    preprocess_features,
)

REPO = Path(__file__).resolve().parents[2]
MODELS = REPO / "assets" / "models"
# How far below its card's figure a shipped model may score on a fresh, smaller sample.
MARGIN = 0.03

DEFECT: dict[str, Any] = {
    "model": str(MODELS / "defect_classifier.onnx"),
    "task": "classification",
    "input": {"name": "image", "shape": [-1, 1024], "dtype": "float32"},
    "preprocess": {
        "crop": list(synthetic.ConveyorSource().roi),
        "resize": [32, 32],
        "interpolation": "area",
        "color": "gray",
        "scale": 1 / 255,
        "layout": "flat",
    },
    "postprocess": {"output": "probabilities", "labels": list(synthetic.CROP_LABELS)},
    "rules": [
        {"label": "defect", "minScore": 0.8, "reason": "DefectDetected", "message": "defect on {device}"}
    ],
}
PUMP: dict[str, Any] = {
    "model": str(MODELS / "pump_anomaly.onnx"),
    "task": "anomaly",
    "input": {"name": "readings", "shape": [-1, 5]},
    "features": list(synthetic.PUMP_FEATURES),
    "postprocess": {"output": "probabilities", "scoreIndex": 1, "threshold": 0.5},
}


def _card_accuracy(card: str, row: str) -> float:
    """The accuracy column of the card's table row that starts with ``row``."""
    text = (MODELS / card).read_text(encoding="utf-8")
    line = next(line for line in text.splitlines() if line.startswith(f"| {row}"))
    return float(line.split("|")[3])


def _card_figure(card: str, name: str) -> float:
    text = (MODELS / card).read_text(encoding="utf-8")
    header, _, values = text.split(f"| {name} |", 1)[1].split("\n", 3)[:3]
    cells = [c.strip() for c in ("| " + name + " |" + header).split("|")[1:-1]]
    row = [c.strip() for c in values.split("|")[1:-1]]
    return float(row[cells.index(name)])


# --- config ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"model": ""}, "model"),
        ({"model": 3}, "model"),
        ({"task": "segmentation"}, "task"),
        ({"input": []}, "input"),
        ({"input": {"shape": [1, 0]}}, "input.shape"),
        ({"input": {"shape": "1x3"}}, "input.shape"),
        ({"input": {"dtype": "float64"}}, "input.dtype"),
        ({"input": {"name": ""}}, "input.name"),
        ({"preprocess": {"crop": [0, 0, 10]}}, "preprocess.crop"),
        ({"preprocess": {"crop": [0, 0, 0, 10]}}, "preprocess.crop"),
        ({"preprocess": {"resize": [32, -1]}}, "preprocess.resize"),
        ({"preprocess": {"color": "hsv"}}, "preprocess.color"),
        ({"preprocess": {"scale": "1/255"}}, "preprocess.scale"),
        ({"preprocess": {"mean": [1, 2]}}, "preprocess.mean"),
        ({"preprocess": {"std": [0]}}, "preprocess.std"),
        ({"preprocess": {"layout": "NCWH"}}, "preprocess.layout"),
        ({"postprocess": {"labels": "ok,defect"}}, "postprocess.labels"),
        ({"postprocess": {"topK": 0}}, "postprocess.topK"),
        ({"postprocess": {"softmax": "yes"}}, "postprocess.softmax"),
        ({"postprocess": {"threshold": None}}, "postprocess.threshold"),
        ({"postprocess": {"nmsThreshold": 2}}, "postprocess.nmsThreshold"),
        ({"postprocess": {"boxFormat": "ltrb"}}, "postprocess.boxFormat"),
        ({"postprocess": {"scoreIndex": 1.5}}, "postprocess.scoreIndex"),
        ({"rules": {}}, "rules"),
        ({"rules": [{"label": "defect"}]}, "rules[0].reason"),
        ({"rules": [{"reason": "X", "minScore": "high"}]}, "rules[0].minScore"),
        ({"rules": [{"reason": "X", "message": "on {camera}"}]}, "rules[0].message"),
        ({"rules": [{"reason": "X", "message": "on {device"}]}, "rules[0].message"),
        ({"rules": [{"reason": "X"}, {"reason": "Y", "type": "Error"}]}, "rules[1].type"),
        ({"rules": [{"reason": "X", "cooldown": -1}]}, "rules[0].cooldown"),
        ({"features": ["a", 1]}, "features"),
        ({"threads": -1}, "threads"),
    ],
)
def test_config_errors_name_the_field(change: dict[str, Any], field: str) -> None:
    with pytest.raises(InferenceConfigError) as info:
        parse_config({**DEFECT, **change})
    assert info.value.field == field
    assert field in str(info.value)


def test_config_not_an_object() -> None:
    with pytest.raises(InferenceConfigError):
        parse_config(["model.onnx"])


def test_config_defaults_and_relative_model(tmp_path: Path) -> None:
    cfg = parse_config({"model": "m.onnx", "task": "detection"}, base=tmp_path)
    assert cfg.model == tmp_path / "m.onnx"
    assert cfg.preprocess.layout == "NCHW" and cfg.preprocess.color == "bgr"
    assert cfg.postprocess.box_format == "xyxy" and cfg.postprocess.score_threshold == 0.5
    assert cfg.rules == () and cfg.threads == 1
    assert parse_config({"model": "m.onnx", "task": "anomaly"}).postprocess.threshold == 0.5
    full = parse_config(DEFECT)
    assert full.preprocess.resize == (32, 32) and full.input.shape == (None, 1024)
    assert full.rules[0] == Rule(
        reason="DefectDetected", message="defect on {device}", label="defect", min_score=0.8
    )


# --- the shipped models ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def defect() -> Pipeline:
    return Pipeline(parse_config(DEFECT))


@pytest.fixture(scope="module")
def pump() -> Pipeline:
    return Pipeline(parse_config(PUMP))


def test_shipped_models_are_small() -> None:
    for name in ("defect_classifier", "pump_anomaly"):
        assert (MODELS / f"{name}.onnx").stat().st_size < 2 * 1024 * 1024
        assert (MODELS / f"{name}.md").is_file()


def test_defect_classifier_on_fresh_crops_matches_its_card(defect: Pipeline) -> None:
    crops, labels = synthetic.crop_dataset(600, seed=1234)
    no_crop = parse_config({**DEFECT, "preprocess": {**DEFECT["preprocess"], "crop": None}})
    predicted = []
    for crop in crops:
        tensor, _ = preprocess(crop, no_crop, defect.input_shape)
        probs = defect.run(tensor)["probabilities"][0]
        predicted.append(int(np.argmax(probs)))
    accuracy = float(np.mean(np.array(predicted) == labels))
    assert accuracy >= _card_accuracy("defect_classifier.md", "crops") - MARGIN


def test_defect_classifier_on_the_conveyor_matches_its_card(defect: Pipeline) -> None:
    src = synthetic.ConveyorSource(seed=77, defect_rate=0.4)
    hits, total, defects_seen = 0, 0, 0
    for _ in range(500):
        frame, truth = src.read()
        if truth.roi_label is None:
            continue
        results = defect.infer(frame)
        assert len(results) == 1 and results[0].box == src.roi  # the crop is the result's box
        total += 1
        hits += results[0].label == truth.roi_label
        defects_seen += truth.roi_label == "defect"
    assert defects_seen > 5
    assert hits / total >= _card_accuracy("defect_classifier.md", "conveyor") - MARGIN


def test_pump_anomaly_matches_its_card(pump: Pipeline) -> None:
    data = synthetic.pump_telemetry(4321, 4000, 0.15)
    scores = pump.run(data.readings)["probabilities"][:, 1]
    accuracy = float(np.mean((scores >= 0.5) == data.anomalous))
    assert accuracy >= _card_figure("pump_anomaly.md", "accuracy") - MARGIN
    # one reading through the named-feature path gives the same score as the batch
    i = int(np.argmax(data.anomalous))
    values = dict(zip(synthetic.PUMP_FEATURES, data.readings[i].tolist(), strict=True))
    (result,) = pump.infer_features(values)
    assert result.score == pytest.approx(float(scores[i]), abs=1e-5)
    assert result.label == ("anomaly" if scores[i] >= 0.5 else "normal") and result.box is None


def test_preprocess_features_order_and_missing() -> None:
    cfg = parse_config({**PUMP, "preprocess": {"mean": [1.0], "scale": 2.0}})
    x = preprocess_features({"current": 5, "pressure": 1, "flow": 2, "temperature": 3, "vibration": 4}, cfg)
    assert x.dtype == np.float32 and x.tolist() == [[1.0, 3.0, 5.0, 7.0, 9.0]]
    with pytest.raises(KeyError):
        preprocess_features({"pressure": 1}, cfg)


# --- foreign models built here -----------------------------------------------------------------------------


def _save(tmp_path: Path, graph: onnx.GraphProto, name: str = "model.onnx") -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = tmp_path / name
    onnx.save(model, str(path))
    return path


def _colour_classifier(tmp_path: Path, size: int = 8) -> Path:
    """``pixels`` [1, 3, size, size] -> mean per channel -> ``logits`` [1, 3] (x10, so softmax is sharp)."""
    nodes = [
        helper.make_node("GlobalAveragePool", ["pixels"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"]),
        helper.make_node("Mul", ["flat", "ten"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "colours",
        [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3])],
        [helper.make_tensor("ten", TensorProto.FLOAT, [1], [10.0])],
    )
    return _save(tmp_path, graph)


def _colour_config(path: Path, **pre: Any) -> dict[str, Any]:
    return {
        "model": str(path),
        "task": "classification",
        "preprocess": {"color": "rgb", "scale": 1 / 255, "layout": "NCHW", **pre},
        "postprocess": {"softmax": True, "labels": ["red", "green", "blue"], "topK": 2},
    }


def test_a_foreign_classifier_runs_through_the_same_config(tmp_path: Path) -> None:
    path = _colour_classifier(tmp_path)
    pipeline = Pipeline(parse_config(_colour_config(path)))  # no resize: taken from the model's shape
    frame = np.zeros((48, 64, 3), np.uint8)
    frame[:] = (0, 0, 255)  # BGR red
    results = pipeline.infer(frame)
    assert [r.label for r in results] == ["red", "green"]
    assert results[0].score > 0.99 and results[0].box is None  # whole frame: no box
    frame[:] = (255, 0, 0)  # BGR blue
    assert pipeline.infer(frame)[0].label == "blue"
    # the same model with a crop: only the cropped region counts, and it becomes the box
    frame[:, 32:] = (0, 255, 0)
    cropped = Pipeline(parse_config(_colour_config(path, crop=[40, 8, 16, 16])))
    (top, _) = cropped.infer(frame)
    assert top.label == "green" and top.box == (40, 8, 16, 16)


def test_a_foreign_nhwc_uint8_model(tmp_path: Path) -> None:
    nodes = [
        helper.make_node("Cast", ["img"], ["f"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMean", ["f"], ["score"], axes=[1, 2], keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        "brightness",
        [helper.make_tensor_value_info("img", TensorProto.UINT8, [1, 4, 4, 1])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, [1, 1])],
        [],
    )
    path = _save(tmp_path, graph)
    cfg = parse_config(
        {
            "model": str(path),
            "task": "anomaly",
            "input": {"dtype": "uint8"},
            "preprocess": {"color": "gray", "layout": "NHWC", "resize": [4, 4]},
            "postprocess": {"threshold": 100, "scoreIndex": 0},
        }
    )
    pipeline = Pipeline(cfg)
    assert pipeline.infer(np.full((20, 20, 3), 200, np.uint8))[0].label == "anomaly"
    assert pipeline.infer(np.full((20, 20, 3), 10, np.uint8))[0] == Result("normal", 10.0)


def _detector(tmp_path: Path, fmt_boxes: list[float], scores: list[float]) -> Path:
    """``image`` [1, 3, 16, 16] -> constant ``boxes`` [1, K, 4] and ``scores`` [1, K, 2] (two classes),
    each multiplied by the image's mean over itself (1 for a non-zero uniform image) so the input is used."""
    k = len(scores) // 2
    nodes = [
        helper.make_node("ReduceMax", ["image"], ["m"], keepdims=0),
        helper.make_node("Div", ["m", "m"], ["one"]),
        helper.make_node("Mul", ["b", "one"], ["boxes"]),
        helper.make_node("Mul", ["s", "one"], ["scores"]),
    ]
    graph = helper.make_graph(
        nodes,
        "detector",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 16, 16])],
        [
            helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, k, 4]),
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, k, 2]),
        ],
        [
            helper.make_tensor("b", TensorProto.FLOAT, [1, k, 4], fmt_boxes),
            helper.make_tensor("s", TensorProto.FLOAT, [1, k, 2], scores),
        ],
    )
    return _save(tmp_path, graph)


def test_a_foreign_detector_with_nms_and_box_mapping(tmp_path: Path) -> None:
    # three boxes in model-input pixels (16x16): two overlapping cats, one dog, one below the threshold
    boxes = [0, 0, 8, 8, 1, 1, 8, 8, 10, 10, 16, 16, 4, 4, 6, 6]
    scores = [0.1, 0.9, 0.2, 0.7, 0.8, 0.1, 0.3, 0.2]  # per box: (dog, cat)
    path = _detector(tmp_path, boxes, scores)
    cfg = parse_config(
        {
            "model": str(path),
            "task": "detection",
            "preprocess": {"resize": [16, 16], "scale": 1 / 255},
            "postprocess": {"labels": ["dog", "cat"], "scoreThreshold": 0.5, "nmsThreshold": 0.5},
        }
    )
    frame = np.full((64, 32, 3), 128, np.uint8)  # 32 wide, 64 high: x scales by 2, y by 4
    results = Pipeline(cfg).infer(frame)
    assert results == [
        Result("cat", pytest.approx(0.9), (0, 0, 16, 32)),
        Result("dog", pytest.approx(0.8), (20, 40, 12, 24)),
    ]


def test_detector_normalised_cxcywh(tmp_path: Path) -> None:
    path = _detector(tmp_path, [0.5, 0.5, 0.5, 0.25], [0.0, 0.95])
    cfg = parse_config(
        {
            "model": str(path),
            "task": "detection",
            "preprocess": {"crop": [10, 20, 40, 40]},
            "postprocess": {"boxFormat": "cxcywh", "normalized": True, "labels": ["a", "b"]},
        }
    )
    (r,) = Pipeline(cfg).infer(np.full((100, 100, 3), 50, np.uint8))
    assert (r.label, r.box) == ("b", (20, 35, 20, 10))


# --- refusals at load --------------------------------------------------------------------------------------


def test_missing_and_not_a_model(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="no such file"):
        load_session(tmp_path / "absent.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"this is not a protobuf at all")
    with pytest.raises(ModelLoadError, match="not a usable ONNX model") as info:
        load_session(junk)
    assert info.value.path == str(junk)


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"preprocess": {"resize": [16, 16], "color": "rgb", "layout": "NCHW"}}, "shape [1, 3, 8, 8]"),
        ({"preprocess": {"resize": [8, 8], "color": "gray", "layout": "NCHW"}}, "makes [1, 1, 8, 8]"),
        ({"preprocess": {"resize": [8, 8], "layout": "NHWC"}}, "makes [1, 8, 8, 3]"),
        ({"preprocess": {"layout": "flat", "resize": [8, 8]}}, "makes [1, 192]"),
        ({"input": {"shape": [1, 3, 224, 224]}}, "input.shape"),
        ({"input": {"name": "image"}}, "no input 'image'"),
        ({"input": {"dtype": "uint8"}}, "the config says uint8"),
        ({"postprocess": {"output": "probabilities"}}, "no output 'probabilities'"),
    ],
)
def test_mismatched_input_is_refused_at_load(tmp_path: Path, change: dict[str, Any], needle: str) -> None:
    path = _colour_classifier(tmp_path)
    with pytest.raises(ModelLoadError) as info:
        Pipeline(parse_config({**_colour_config(path), **change}))
    assert needle in str(info.value)


def test_shipped_model_with_a_wrong_resize_is_refused() -> None:
    with pytest.raises(ModelLoadError, match=re.escape("shape [?, 1024]")):
        Pipeline(parse_config({**DEFECT, "preprocess": {**DEFECT["preprocess"], "resize": [16, 16]}}))


# --- rules and overlay -------------------------------------------------------------------------------------


def test_rules_fire_with_cooldown_and_template() -> None:
    rules = [
        Rule(
            reason="DefectDetected",
            message="defect detected on {device} ({score})",
            label="defect",
            min_score=0.8,
        ),
        Rule(reason="Seen", message="{label}", cooldown_s=0.0),
    ]
    fired: dict[int, float] = {}
    low = [Result("defect", 0.5)]
    events = evaluate_rules(rules, low, device="cam-1", now=0.0, last_fired=fired)
    assert [e.reason for e in events] == ["Seen"]
    high = [Result("ok", 0.1), Result("defect", 0.93)]
    events = evaluate_rules(rules, high, device="cam-1", now=1.0, last_fired=fired)
    assert [(e.reason, e.message) for e in events] == [
        ("DefectDetected", "defect detected on cam-1 (0.93)"),
        ("Seen", "defect"),  # the best matching result
    ]
    assert events[0].to_json() == {
        "type": "Warning",
        "reason": "DefectDetected",
        "message": "defect detected on cam-1 (0.93)",
        "label": "defect",
        "score": 0.93,
    }
    assert [e.reason for e in evaluate_rules(rules, high, device="cam-1", now=2.0, last_fired=fired)] == [
        "Seen"
    ]
    assert len(evaluate_rules(rules, high, device="cam-1", now=3.5, last_fired=fired)) == 2


def test_overlay_draws_boxes_labels_and_fps() -> None:
    frame = np.zeros((120, 160, 3), np.uint8)
    results = [Result("defect", 0.97, (40, 40, 50, 30)), Result("ok", 0.6)]
    out = draw_overlay(frame, results, fps=29.5)
    assert out is not frame and not frame.any()  # the input is not touched
    assert out.shape == frame.shape and out.dtype == np.uint8
    assert out[40, 60:80].any() and out[69, 60:80].any()  # the box's top and bottom edges
    assert not out[55, 60:70].any()  # inside the box stays clear
    assert out[:25, :60].any()  # the boxless result is listed at the top left
    assert out[-20:, :60].any()  # the fps
    assert Result("defect", 0.97123, (1, 2, 3, 4)).to_json() == {
        "label": "defect",
        "score": 0.9712,
        "box": [1, 2, 3, 4],
    }
