"""jpeg-grid: misaligned, missing and inconsistent JPEG grids, localized from decoded pixels."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from conftest import EXAMPLES, jpeg_roundtrip, read_rgb
from imlforensics.evaluation.datasets import load_dataset, read_mask
from imlforensics.detectors.jpeg_grid import (
    JpegGridDetector,
    constant_blocks,
    global_grid,
    grid_votes,
    origin_stack,
    zero_counts,
)
from imlforensics.errors import NotApplicable
from imlforensics.io.image import load_image
from imlforensics.evaluation.metrics import pixel_scores
from imlforensics.detectors.registry import load_detector


@pytest.fixture(scope="module")
def detector() -> JpegGridDetector:
    return load_detector("jpeg-grid")


@pytest.fixture(scope="module")
def host() -> np.ndarray:
    """A decoded JPEG (grid at (0, 0)): the examples' authentic coffee picture."""
    return read_rgb(EXAMPLES / "Au" / "coffee.jpg")


@pytest.fixture(scope="module")
def donor() -> np.ndarray:
    """Another decoded JPEG: the examples' authentic astronaut picture, recompressed at quality 75."""
    return jpeg_roundtrip(read_rgb(EXAMPLES / "Au" / "astronaut.jpg"), 75)


def paste(host: np.ndarray, patch: np.ndarray, top: int, left: int) -> tuple[np.ndarray, np.ndarray]:
    out = host.copy()
    h, w = patch.shape[:2]
    out[top : top + h, left : left + w] = patch
    mask = np.zeros(host.shape[:2], bool)
    mask[top : top + h, left : left + w] = True
    return out, mask


def save(tmp_path: Path, name: str, rgb: np.ndarray, quality: int | None = None) -> Path:
    path = tmp_path / name
    if quality is None:
        Image.fromarray(rgb).save(path)
    else:
        Image.fromarray(rgb).save(path, "JPEG", quality=quality)
    return path


def misaligned_splice(host: np.ndarray, donor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A 128x144 piece of the donor (its grid at (0, 0)) pasted at (101, 203): its grid is off by (5, 3)."""
    return paste(host, donor[40:168, 120:264], 101, 203)


def test_png_with_misaligned_jpeg_patch_is_localized(detector, host, donor, tmp_path):
    forged, mask = misaligned_splice(host, donor)
    pred = detector.predict(save(tmp_path, "forged.png", forged))
    s = pixel_scores(pred.heatmap, mask, 0.5)
    assert pred.extras["grid_origin"] == [0, 0]
    assert pred.extras["foreign_grid_shift"] == [5, 3]
    assert s.auc > 0.95 and s.f1 > 0.75, s
    untouched = detector.predict(save(tmp_path, "host.png", host))
    assert untouched.score < 0.5 < pred.score
    assert (untouched.heatmap >= 0.5).mean() < 0.01


def test_misaligned_patch_survives_a_high_quality_jpeg_save(detector, host, donor, tmp_path):
    forged, mask = misaligned_splice(host, donor)
    pred = detector.predict(save(tmp_path, "forged95.jpg", forged, 95))
    s = pixel_scores(pred.heatmap, mask, 0.5)
    assert s.auc > 0.9 and s.f1_best > 0.6, s
    untouched = detector.predict(save(tmp_path, "host95.jpg", host, 95))
    assert untouched.score < pred.score
    assert (untouched.heatmap >= 0.5).mean() < 0.01


def test_never_compressed_patch_shows_a_missing_grid(detector, host, tmp_path):
    # a resampled piece of another picture carries no JPEG grid at all
    other = read_rgb(EXAMPLES / "Au" / "rocket.jpg")
    fresh = np.asarray(Image.fromarray(other).resize((other.shape[1] * 5 // 8, other.shape[0] * 5 // 8),
                                                     Image.LANCZOS))
    forged, mask = paste(host, fresh[100:228, 150:294], 96, 200)  # the launch tower, not the plain sky
    pred = detector.predict(save(tmp_path, "missing.png", forged))
    s = pixel_scores(pred.heatmap, mask, 0.5)
    assert s.auc > 0.9 and s.f1 > 0.7, s
    assert pred.extras["weaker_grid_cells"] > 20
    assert any("weaker" in n for n in pred.notes)


def test_examples_splice(detector, examples):
    path, mask = examples["splice"]
    pred = detector.predict(path)
    s = pixel_scores(pred.heatmap, mask, 0.5)
    assert pred.extras["luma"] == "decoded JPEG Y plane"
    assert s.auc > 0.9 and s.f1_best > 0.6, s
    authentic = detector.predict(examples["coffee"][0])
    assert authentic.score < pred.score
    assert (authentic.heatmap >= 0.5).mean() < 0.01


def test_grayscale_forgery(detector, host, donor, tmp_path):
    forged, mask = misaligned_splice(host, donor)
    gray = np.asarray(Image.fromarray(forged).convert("L"))
    path = tmp_path / "gray.png"
    Image.fromarray(gray).save(path)
    s = pixel_scores(detector.predict(path).heatmap, mask, 0.5)
    assert s.auc > 0.9, s


def test_never_compressed_image_gives_an_empty_map(detector, tmp_path):
    rgb = read_rgb(EXAMPLES / "Au" / "rocket.jpg")
    fresh = np.asarray(Image.fromarray(rgb).resize((rgb.shape[1] * 7 // 8, rgb.shape[0] * 7 // 8), Image.LANCZOS))
    pred = detector.predict(save(tmp_path, "fresh.png", fresh))
    assert pred.extras["grid_origin"] is None
    assert pred.score == 0.0 and float(pred.heatmap.max()) == 0.0
    assert any("no JPEG grid" in n for n in pred.notes)


def test_cropped_jpeg_grid_origin(detector, host, tmp_path):
    pred = detector.predict(save(tmp_path, "crop.png", host[3:, 5:]))
    assert pred.extras["grid_origin"] == [5, 3]
    assert any("cropped" in n for n in pred.notes)
    assert (pred.heatmap >= 0.5).mean() < 0.01


def test_global_grid_from_votes(host):
    luma = host.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    zeros = zero_counts(luma[2:, 6:], (1.0,))[0].sum(axis=0)
    grid = global_grid(grid_votes(zeros, constant_blocks(luma[2:, 6:])))
    assert grid.origin == (6, 2) and grid.share > 0.5
    noise = np.random.default_rng(0).normal(128, 20, luma.shape).astype(np.float32)
    zeros = zero_counts(noise, (1.0,))[0].sum(axis=0)
    assert global_grid(grid_votes(zeros, constant_blocks(noise))).origin is None


def test_zero_counts_match_a_direct_dct():
    rng = np.random.default_rng(1)
    luma = rng.integers(0, 256, (24, 30)).astype(np.float32)
    counts = zero_counts(luma, (0.5, 3.0), split=6)
    basis = np.cos(np.pi * (2 * np.arange(8)[None, :] + 1) * np.arange(8)[:, None] / 16) * np.sqrt(2 / 8)
    basis[0] /= np.sqrt(2)
    y, x = 9, 13
    coef = basis @ luma[y : y + 8, x : x + 8] @ basis.T
    v, u = np.meshgrid(np.arange(8), np.arange(8), indexing="ij")
    ac = (v + u) > 0
    for t, tol in enumerate((0.5, 3.0)):
        assert counts[t, 0, y, x] == np.sum((np.abs(coef) < tol) & ac & (u + v <= 6))
        assert counts[t, 1, y, x] == np.sum((np.abs(coef) < tol) & (u + v > 6))
    stack = origin_stack(counts[1, 1], (1, 2))
    assert stack[1, 1, 8 * 0 + 3] == counts[1, 1, 1 + 8, 2 + 8 + 3]


@pytest.mark.parametrize("shape", [(20, 20), (31, 200), (7, 7)])
def test_tiny_images_are_not_applicable(detector, shape):
    with pytest.raises(NotApplicable):
        detector.predict(np.zeros(shape + (3,), np.uint8))


def test_small_and_flat_images(detector, tmp_path):
    small = jpeg_roundtrip(read_rgb(EXAMPLES / "Au" / "coffee.jpg")[:40, :48], 80)
    pred = detector.predict(small)
    assert pred.heatmap.shape == (40, 48) and np.isfinite(pred.heatmap).all() and 0 <= pred.score <= 1
    flat = np.full((120, 160, 3), 128, np.uint8)
    for image in (flat, save(tmp_path, "flat.jpg", flat, 90)):
        pred = detector.predict(image)
        assert float(pred.heatmap.max()) == 0.0 and pred.score == 0.0
        assert pred.extras["grid_origin"] is None


def test_saturated_colours_do_not_look_like_a_missing_grid(detector, tmp_path):
    # a saturated red area: decoded to RGB, the clipped channels would destroy the zeros on the grid
    rng = np.random.default_rng(2)
    base = rng.normal(0, 12, (256, 320)).astype(np.float32)
    base = np.clip(cv2.GaussianBlur(base, (0, 0), 1.5) * 4 + 110, 0, 255)
    rgb = np.stack([base, base * 0.9, base * 0.8], axis=2).astype(np.uint8)
    rgb[64:192, 96:256, 0] = 250
    rgb[64:192, 96:256, 1:] = 5
    path = save(tmp_path, "red.jpg", rgb, 85)
    pred = detector.predict(path)
    assert pred.extras["luma"] == "decoded JPEG Y plane"
    assert (pred.heatmap >= 0.5).mean() < 0.01
    as_png = detector.predict(save(tmp_path, "red.png", np.asarray(Image.open(path).convert("RGB"))))
    assert (as_png.heatmap >= 0.5).mean() < 0.01


@pytest.mark.data
def test_casia_high_quality_splices(detector, shared_data):
    """CASIA v1 splices saved at high quality keep the pasted piece's own grid: localized well."""
    samples = [s for s in load_dataset(shared_data / "casia1") if not s.authentic]
    picked = []
    for s in samples:
        with Image.open(s.image) as im:
            if im.quantization[0][0] <= 2:  # luma DC step: quality about 95 or more
                picked.append(s)
        if len(picked) == 8:
            break
    aucs = []
    for s in picked:
        pred = detector.predict(load_image(s.image))
        aucs.append(pixel_scores(pred.heatmap, read_mask(s.mask, pred.heatmap.shape), 0.5).auc)
    assert len(picked) == 8 and float(np.mean(aucs)) > 0.85, aucs
