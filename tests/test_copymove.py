"""Tests of the copymove detector (SIFT g2NN matching, clustering, RANSAC, dense localisation)."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from conftest import EXAMPLES, jpeg_roundtrip, read_gt, read_rgb

from imlforensics.detectors.copymove import Keypoints, copy_strength, g2nn_matches
from imlforensics.evaluation.metrics import f1_iou
from imlforensics.detectors.registry import load_detector


@pytest.fixture(scope="module")
def detector():
    return load_detector("copymove")


@pytest.fixture(scope="module")
def example_prediction(detector):
    return detector.predict(EXAMPLES / "Tp" / "copymove.jpg")


def side_f1(mask: np.ndarray, region: np.ndarray) -> float:
    """F1 of the detected components that touch ``region`` against ``region``."""
    n, lab = cv2.connectedComponents(mask.astype(np.uint8))
    keep = np.zeros(n, bool)
    keep[np.unique(lab[mask & region])] = True
    keep[0] = False
    return f1_iou(keep[lab], region)[0]


def test_example_copy_and_its_source_are_both_localised(example_prediction):
    target = read_gt(EXAMPLES / "Gt" / "copymove_gt.png")
    source = read_gt(EXAMPLES / "Gt" / "copymove_source.png")
    mask = example_prediction.mask(0.5)
    assert example_prediction.score >= 0.9
    assert side_f1(mask, target) >= 0.85
    assert side_f1(mask, source) >= 0.85
    assert f1_iou(mask, target | source)[0] >= 0.85
    # against the target alone (the convention of CASIA-style masks) marking both sides halves
    # the precision: F1 about 2/3 at best
    assert 0.55 <= f1_iou(mask, target)[0] <= 0.7
    # nothing marked far from the two patches
    near = cv2.dilate((target | source).astype(np.uint8), np.ones((15, 15), np.uint8)) > 0
    assert mask[~near].mean() < 0.002
    # the recovered transform is the 21 px / 182 px shift of make_examples.py (either direction)
    json.dumps(example_prediction.extras)  # diagnostics are plain JSON
    t = example_prediction.extras["transforms"][0]
    shift = np.abs(np.array(t["matrix"])[:, 2])
    np.testing.assert_allclose(shift, [21, 182], atol=1.5)


def paste_rotated_scaled(rgb: np.ndarray, centre: tuple[int, int], to: tuple[int, int], angle: float,
                         scale: float, radius: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Copy a disc around ``centre``, rotated and scaled, onto ``to``; JPEG 92 afterwards."""
    h, w = rgb.shape[:2]
    m = cv2.getRotationMatrix2D(centre, angle, scale)
    m[:, 2] += np.array(to, float) - np.array(centre, float)
    warped = cv2.warpAffine(rgb, m, (w, h), flags=cv2.INTER_LINEAR)
    target = np.zeros((h, w), np.uint8)
    cv2.circle(target, to, radius, 1, -1)
    source = np.zeros((h, w), np.uint8)
    cv2.circle(source, centre, int(round(radius / scale)), 1, -1)
    out = rgb.copy()
    out[target > 0] = warped[target > 0]
    return jpeg_roundtrip(out, 92), target > 0, source > 0, m


@pytest.mark.parametrize("angle,scale", [(30.0, 1.2), (-45.0, 1.0)])
def test_rotated_and_scaled_copy_is_found_with_its_transform(detector, examples, angle, scale):
    rgb = read_rgb(examples["astronaut"][0])
    forged, target, source, m = paste_rotated_scaled(rgb, (150, 330), (340, 120), angle, scale, 60)
    pred = detector.predict(forged)
    mask = pred.mask(0.5)
    assert pred.score >= 0.8
    assert f1_iou(mask, target | source)[0] >= 0.8
    assert side_f1(mask, target) >= 0.75
    assert side_f1(mask, source) >= 0.75
    best = max(pred.extras["transforms"], key=lambda t: t["strength"])
    a = np.array(best["matrix"])[:, :2]
    found_scale = float(np.sqrt(abs(np.linalg.det(a))))
    found_angle = float(np.degrees(np.arctan2(a[1, 0], a[0, 0])))
    # the transform may come out as copy -> source or source -> copy
    assert min(abs(found_scale - scale), abs(1 / found_scale - scale)) < 0.03
    assert min(abs(found_angle + angle), abs(found_angle - angle)) < 2.0
    if scale == 1.0:
        # a copy rotated without rescaling was interpolated once: it is told apart from its source
        assert pred.heatmap[target].mean() > pred.heatmap[source].mean()


def test_untouched_astronaut_stays_cool(detector, examples, example_prediction):
    pred = detector.predict(examples["astronaut"][0])
    assert pred.score < 0.5
    assert pred.score < example_prediction.score
    assert pred.mask(0.5).mean() < 0.001


def tiled_texture(tile: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    patch = read_rgb(EXAMPLES / "Au" / "coffee.jpg")[100 : 100 + tile, 200 : 200 + tile]
    img = np.tile(patch, (320 // tile + 1, 400 // tile + 1, 1))[:320, :400].astype(np.float32)
    return jpeg_roundtrip(np.clip(img + rng.normal(0, 2, img.shape), 0, 255).astype(np.uint8), 90)


def facade() -> np.ndarray:
    rng = np.random.default_rng(1)
    wall = np.clip(np.full((360, 480, 3), (180, 160, 140), np.float32) + rng.normal(0, 6, (360, 480, 3)), 0, 255)
    wall = wall.astype(np.uint8)
    window = read_rgb(EXAMPLES / "Au" / "astronaut.jpg")[60:100, 180:210]
    for y in range(20, 340, 70):
        for x in range(20, 460, 60):
            wall[y : y + 40, x : x + 30] = window
            cv2.rectangle(wall, (x - 2, y - 2), (x + 31, y + 41), (90, 70, 60), 2)
    return jpeg_roundtrip(wall, 90)


def wallpaper() -> np.ndarray:
    """A pattern whose period (200 px) is more than half the frame: two repeats, one cut."""
    pattern = read_rgb(EXAMPLES / "Au" / "astronaut.jpg")[50:330, 20:220]
    return jpeg_roundtrip(np.concatenate([pattern, pattern[:, :120]], axis=1), 90)


@pytest.mark.parametrize("make", [lambda: tiled_texture(48), facade, wallpaper], ids=["tiles", "facade", "wallpaper"])
def test_repetitive_patterns_do_not_light_up(detector, example_prediction, make):
    pred = detector.predict(make())
    assert pred.score < 0.5
    assert pred.score < example_prediction.score
    assert pred.mask(0.5).mean() < 0.005


def test_flat_tiny_and_gray_inputs(detector, examples):
    flat = detector.predict(np.full((240, 320, 3), 128, np.uint8))
    assert flat.score == 0.0 and not flat.heatmap.any()
    assert any("few keypoints" in n for n in flat.notes)
    for shape in [(8, 8, 3), (1, 500, 3), (20, 20, 3)]:
        pred = detector.predict(np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8))
        assert pred.heatmap.shape == shape[:2] and np.isfinite(pred.heatmap).all()
        assert pred.score == 0.0
    gray = cv2.cvtColor(read_rgb(examples["copymove"][0]), cv2.COLOR_RGB2GRAY)
    pred = detector.predict(gray)
    assert pred.score >= 0.9
    assert f1_iou(pred.mask(0.5), examples["copymove"][1])[0] >= 0.55


def test_downscaled_analysis_keeps_the_map_at_full_size(examples):
    small = load_detector("copymove", max_pixels=100_000, dense_pixels=50_000)  # 0.2 MP image
    target = read_gt(EXAMPLES / "Gt" / "copymove_gt.png")
    source = read_gt(EXAMPLES / "Gt" / "copymove_source.png")
    pred = small.predict(examples["copymove"][0])
    assert pred.heatmap.shape == target.shape
    assert pred.score >= 0.9
    assert f1_iou(pred.mask(0.5), target | source)[0] >= 0.8
    shift = np.abs(np.array(pred.extras["transforms"][0]["matrix"])[:, 2])
    np.testing.assert_allclose(shift, [21, 182], atol=3)  # reported in the image's own pixels


def test_g2nn_keeps_successive_close_neighbours_and_ignores_scale_space_twins():
    rng = np.random.default_rng(0)
    desc = rng.normal(size=(60, 128)).astype(np.float32)
    desc /= np.linalg.norm(desc, axis=1, keepdims=True)
    # three copies of feature 5, each degraded more than the last (d1/d2 and d2/d3 below 0.5)
    for i, noise in [(10, 0.002), (20, 0.01), (30, 0.04)]:
        desc[i] = desc[5] + noise * rng.normal(size=128)
    desc[41] = desc[40] + 0.001 * rng.normal(size=128)  # a twin 3 px away: same spot, not a copy
    desc /= np.linalg.norm(desc, axis=1, keepdims=True)
    xy = rng.uniform(0, 1000, (60, 2)).astype(np.float32)
    xy[[5, 10, 20, 30]] = [[100, 100], [400, 100], [100, 400], [700, 700]]
    xy[40], xy[41] = [900, 900], [903, 900]
    pairs = {tuple(p) for p in g2nn_matches(Keypoints(xy, desc), ratio=0.5, min_distance=10)}
    assert {(5, 10), (5, 20), (5, 30)} <= pairs  # a plain 2NN test would keep only (5, 10)
    assert (40, 41) not in pairs
    assert all(i in (5, 10, 20, 30) and j in (5, 10, 20, 30) for i, j in pairs)
    # copies that are all equally close fail the first ratio: as in the authors' code, no match
    desc[[10, 20, 30]] = desc[5] + 0.01 * rng.normal(size=(3, 128))
    desc /= np.linalg.norm(desc, axis=1, keepdims=True)
    assert len(g2nn_matches(Keypoints(xy, desc), ratio=0.5, min_distance=10)) == 0


def test_strength_needs_geometry_agreement_and_no_repetition():
    assert copy_strength(8, 0.7, 0.0, 0.0) == pytest.approx(0.5, abs=0.01)
    assert copy_strength(30, 0.95, 0.0, 0.1) > 0.95
    assert copy_strength(4, 0.6, 0.0, 0.0) < 0.1
    assert copy_strength(30, 0.95, 0.7, 0.1) < 0.01  # repeats one step further: texture
    assert copy_strength(30, 0.95, 0.0, 0.9) < 0.01  # agrees over the whole frame: pattern
