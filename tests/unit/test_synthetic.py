"""The synthetic sources: deterministic per seed, labelled truthfully, defects visible, pump physics sane."""

from __future__ import annotations

import numpy as np
import pytest

from app import synthetic
from app.synthetic import (
    CROP_LABELS,
    CROP_SIZE,
    ConveyorSource,
    Part,
    crop_dataset,
    pump_telemetry,
    render_part_crop,
)


def _frames(source: ConveyorSource, n: int) -> list[np.ndarray]:
    return [source.read()[0] for _ in range(n)]


def test_conveyor_is_deterministic_per_seed() -> None:
    a = _frames(ConveyorSource(seed=4), 40)
    b = _frames(ConveyorSource(seed=4), 40)
    c = _frames(ConveyorSource(seed=5), 40)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))
    assert a[0].shape == (480, 640, 3) and a[0].dtype == np.uint8
    assert not np.array_equal(a[0], a[1])  # the belt moves


def test_conveyor_size_and_arguments() -> None:
    src = ConveyorSource(width=320, height=240, fps=10, seed=0)
    frame, truth = src.read()
    assert frame.shape == (240, 320, 3)
    assert truth.index == 0 and src.read()[1].index == 1
    x, y, w, h = src.roi
    assert (w, h) == (CROP_SIZE, CROP_SIZE) and x >= 0 and x + w <= 320 and y >= 0 and y + h <= 240
    for bad in ({"width": 50}, {"fps": 0}, {"defect_rate": 1.5}):
        with pytest.raises(ValueError):
            ConveyorSource(**bad)  # type: ignore[arg-type]


def test_conveyor_truth_matches_the_frames() -> None:
    src = ConveyorSource(seed=2, defect_rate=0.5)
    labels: list[str | None] = []
    belt = None
    for _ in range(400):
        frame, truth = src.read()
        labels.append(truth.roi_label)
        for p in truth.parts:
            x, _y, w, h = p.box
            assert x >= 0 and x + w <= src.width and w > 0 and h > 0
        crop = src.crop(frame)
        centre = crop[24:40, 24:40].reshape(-1, 3)
        if truth.roi_label in ("ok", "defect"):
            assert truth.roi_part is not None
            assert truth.roi_part.defective is (truth.roi_label == "defect")
            # a part covers the window's centre: most pixels are brighter than the belt
            assert (centre.max(axis=1) > 120).mean() > 0.3
        elif truth.roi_label == "empty":
            belt = crop
    assert belt is not None
    assert {"ok", "defect", "empty", None} <= set(labels)
    # a frame with nothing in the window shows only belt colours (grey: channels within a few levels)
    assert int(np.ptp(belt.astype(int), axis=2).max()) <= 6


def _part(defect: str | None) -> Part:
    return Part(id=1, shape="disc", colour=(60, 170, 230), size=46, angle=0.0, defect=defect, detail=7)  # type: ignore[arg-type]


@pytest.mark.parametrize("defect", ["crack", "dark_spot", "missing_notch"])
def test_defects_are_visible_in_a_crop(defect: str) -> None:
    good = render_part_crop(_part(None))
    bad = render_part_crop(_part(defect))
    assert good.shape == bad.shape == (CROP_SIZE, CROP_SIZE, 3)
    changed = np.abs(good.astype(int) - bad.astype(int)).sum(axis=2) > 60
    assert changed.sum() >= 12, f"{defect} changes only {changed.sum()} pixels"
    dark_good = (good.max(axis=2) < 40).sum()
    dark_bad = (bad.max(axis=2) < 40).sum()
    if defect == "missing_notch":
        assert dark_bad == dark_good  # no ink: the notch is simply not cut out
    else:
        assert dark_bad > dark_good + 10


def test_render_part_crop_is_deterministic_and_empty_crop_is_belt() -> None:
    assert np.array_equal(
        render_part_crop(_part("crack"), phase=3), render_part_crop(_part("crack"), phase=3)
    )
    empty = render_part_crop(None, phase=5)
    assert int(np.ptp(empty.astype(int), axis=2).max()) <= 6


def test_crop_dataset() -> None:
    crops, labels = crop_dataset(300, seed=9)
    again, labels_again = crop_dataset(300, seed=9)
    assert np.array_equal(crops, again) and np.array_equal(labels, labels_again)
    assert crops.shape == (300, CROP_SIZE, CROP_SIZE, 3) and labels.dtype == np.int64
    counts = np.bincount(labels, minlength=len(CROP_LABELS))
    assert all(c > 40 for c in counts), counts


def test_pump_telemetry_is_deterministic_and_labelled() -> None:
    a = pump_telemetry(3, 5000, 0.15)
    b = pump_telemetry(3, 5000, 0.15)
    assert np.array_equal(a.readings, b.readings) and np.array_equal(a.kinds, b.kinds)
    assert a.readings.shape == (5000, len(synthetic.PUMP_FEATURES)) and a.readings.dtype == np.float32
    assert not np.array_equal(a.readings, pump_telemetry(4, 5000, 0.15).readings)
    share = a.anomalous.mean()
    assert 0.05 < share < 0.3
    assert {synthetic.CAVITATION, synthetic.BEARING_WEAR} <= set(a.kinds.tolist())
    assert not pump_telemetry(3, 1000, 0.0).anomalous.any()
    with pytest.raises(ValueError):
        pump_telemetry(0, 10, 1.0)


def test_pump_physics_correlations_and_anomaly_signatures() -> None:
    t = pump_telemetry(8, 20_000, 0.15)
    pressure, flow, temperature, vibration, current = (t.readings[:, i].astype(float) for i in range(5))
    normal = t.kinds == synthetic.NORMAL
    # Affinity laws: flow ~ speed, pressure ~ speed^2, current grows with load.
    assert np.corrcoef(flow[normal], np.sqrt(pressure[normal]))[0, 1] > 0.98
    assert np.corrcoef(flow[normal], current[normal])[0, 1] > 0.9
    assert np.corrcoef(flow[normal], vibration[normal])[0, 1] > 0.8
    assert (
        (pressure > 0).all() and (flow > 0).all() and (temperature > 15).all() and (temperature < 100).all()
    )
    # Cavitation: less flow for the head it makes; bearing wear: more vibration and heat for the flow.
    head_ratio = flow / np.sqrt(pressure)
    cav = t.kinds == synthetic.CAVITATION
    wear = t.kinds == synthetic.BEARING_WEAR
    assert head_ratio[cav].mean() < head_ratio[normal].mean() * 0.97
    assert (vibration / flow)[cav].mean() > (vibration / flow)[normal].mean() * 1.3
    assert (vibration / flow)[wear].mean() > (vibration / flow)[normal].mean() * 1.3
    assert temperature[wear].mean() > temperature[normal].mean()
