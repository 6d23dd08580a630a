"""ela: error level analysis with content normalisation (Krawetz 2007)."""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from conftest import jpeg_bytes, read_rgb
from imlforensics.detectors.ela import ElaDetector, content_residual
from imlforensics.io.jpegtables import estimate_jpeg_quality
from imlforensics.errors import NotApplicable, UnknownDetector
from imlforensics.io.image import load_image
from imlforensics.evaluation.metrics import pixel_scores
from imlforensics.detectors.registry import load_detector


@pytest.fixture(scope="module")
def detector() -> ElaDetector:
    return load_detector("ela")


def write_jpeg(path: Path, rgb: np.ndarray, quality: int) -> Path:
    path.write_bytes(jpeg_bytes(rgb, quality))
    return path


def decoded(rgb: np.ndarray, quality: int) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(jpeg_bytes(rgb, quality))).convert("RGB"))


def fresh(rgb: np.ndarray) -> np.ndarray:
    """Scale by 7/8 so that no earlier JPEG grid survives (a 'never compressed' picture)."""
    h, w = rgb.shape[:2]
    return cv2.resize(rgb, (w * 7 // 8, h * 7 // 8), interpolation=cv2.INTER_AREA)


def test_quality_estimate_matches_libjpeg(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    for q in (40, 60, 75, 85, 90, 95):
        qt = load_image(write_jpeg(tmp_path / f"q{q}.jpg", rgb, q)).jpeg.qtables[0]
        assert abs(estimate_jpeg_quality(qt) - q) <= 1, q


def test_resave_quality_follows_the_file(tmp_path, detector, examples):
    rgb = read_rgb(examples["coffee"][0])
    img = load_image(write_jpeg(tmp_path / "q85.jpg", rgb, 85))
    assert detector.resave_quality(img) == (75, 85)
    # not a JPEG: default quality, and the user is told what that means
    pred = detector.predict(rgb)
    assert pred.extras["resave_quality"] == 90 and pred.extras["file_quality_estimate"] is None
    assert any("not a JPEG" in n for n in pred.notes)


def test_content_residual_removes_a_texture_trend():
    rng = np.random.default_rng(1)
    content = rng.uniform(0, 5, (40, 60)).astype(np.float32)
    feature = 0.8 * content + rng.normal(0, 0.05, content.shape).astype(np.float32)
    feature[10:20, 10:20] += 1.0  # an anomaly on top of the trend
    resid = content_residual(feature, content)
    assert abs(float(np.median(resid))) < 0.05
    assert resid[10:20, 10:20].mean() > 0.8 and np.abs(resid[25:, 30:]).mean() < 0.2


def test_splice_into_recompressed_jpeg_is_localized(detector, examples):
    """Cat's head from a lossless source pasted into a quality-75 JPEG, all saved at 90: higher error."""
    path, mask = examples["splice"]
    pred = detector.predict(path)
    s = pixel_scores(pred.heatmap, mask)
    assert s.f1 > 0.75 and s.auc > 0.95, s
    assert pred.extras["higher_share"] > 0.05
    untouched = detector.predict(examples["coffee"][0])
    assert untouched.score < pred.score - 0.3
    assert (untouched.heatmap >= 0.5).mean() < 0.03


def test_region_recompressed_at_lower_quality_reads_as_lower_error(detector, examples):
    """A block-aligned region from a quality-60 JPEG, all saved at 90: closer to the coarser lattice."""
    path, mask = examples["recompressed"]
    pred = detector.predict(path)
    s = pixel_scores(pred.heatmap, mask)
    assert s.auc > 0.85 and s.f1_best > 0.5, s
    assert pred.extras["lower_share"] > pred.extras["higher_share"]
    untouched = detector.predict(examples["rocket"][0])
    assert untouched.score < pred.score - 0.2


def test_pasted_region_from_another_picture(tmp_path, detector, examples):
    base = fresh(read_rgb(examples["rocket"][0]))
    h, w = base.shape[:2]
    donor = cv2.resize(fresh(read_rgb(examples["coffee"][0])), (w, h), interpolation=cv2.INTER_AREA)
    mask = np.zeros((h, w), np.uint8)
    cv2.ellipse(mask, (w // 2, h // 2), (w // 6, h // 5), 0, 0, 360, 1, -1)
    mask = mask.astype(bool)
    background = decoded(base, 75)  # the camera's JPEG
    forged = background.copy()
    forged[mask] = donor[mask]
    pred = detector.predict(write_jpeg(tmp_path / "forged.jpg", forged, 90))
    s = pixel_scores(pred.heatmap, mask)
    assert s.f1 > 0.6 and s.auc > 0.93, s
    untouched = detector.predict(write_jpeg(tmp_path / "untouched.jpg", background, 90))
    assert (untouched.heatmap >= 0.5).mean() < 0.03
    assert untouched.score < pred.score - 0.3


def test_grayscale_jpeg_splice(tmp_path, detector, examples):
    path, mask = examples["splice"]
    gray = np.asarray(Image.open(path).convert("L"))
    p = tmp_path / "gray.jpg"
    Image.fromarray(gray).save(p, quality=90)
    pred = detector.predict(p)
    assert load_image(p).conversion.startswith("grayscale")
    assert np.isfinite(pred.heatmap).all()
    assert pixel_scores(pred.heatmap, mask).auc > 0.8


def test_flat_and_saturated_images_stay_cool(tmp_path, detector):
    flat = np.full((64, 96, 3), 128, np.uint8)
    for arr in (flat, np.zeros_like(flat), np.full_like(flat, 255)):
        pred = detector.predict(write_jpeg(tmp_path / "flat.jpg", arr, 90))
        assert np.isfinite(pred.heatmap).all() and pred.heatmap.max() < 0.5 and pred.score < 0.5
    half = flat.copy()
    half[:, 48:] = 255  # a clipped half carries no evidence
    pred = detector.predict(write_jpeg(tmp_path / "half.jpg", half, 90))
    assert pred.heatmap.max() < 0.5


def test_small_and_odd_sizes(tmp_path, detector):
    rng = np.random.default_rng(2)
    with pytest.raises(NotApplicable):
        detector.predict(rng.integers(0, 256, (12, 40, 3), dtype=np.uint8))
    for shape in ((16, 16, 3), (37, 53, 3)):
        rgb = rng.integers(0, 256, shape, dtype=np.uint8)
        pred = detector.predict(write_jpeg(tmp_path / "odd.jpg", rgb, 80))
        assert pred.heatmap.shape == shape[:2] and np.isfinite(pred.heatmap).all()
        assert 0.0 <= pred.score <= 1.0


def test_options_are_validated():
    assert load_detector("ela", quality_drop=5, low_weight=0.0).quality_drop == 5
    with pytest.raises(UnknownDetector):
        load_detector("ela", quality=90)
    with pytest.raises(ValueError):
        ElaDetector(window=0)



@pytest.mark.data
def test_casia_subset_beats_chance_and_keeps_authentic_cool(shared_data, detector, one_torch_thread):
    from imlforensics.evaluation.datasets import load_dataset, read_mask

    samples = load_dataset(shared_data / "casia1")
    tampered = [s for s in samples if not s.authentic][::10]
    authentic = [s for s in samples if s.authentic][::20]
    aucs = [pixel_scores(detector.predict(s.image).heatmap, read_mask(s.mask)).auc for s in tampered]
    flagged = [float((detector.predict(s.image).heatmap >= 0.5).mean()) for s in authentic]
    # full CASIA v1: pixel AUC 0.76 (pyIFD's ELA: 0.62), authentic pixels flagged ~1%;
    # on this subset of 47 + 20 images: 0.73 and 0.8%
    assert np.mean(aucs) > 0.68
    assert np.mean(flagged) < 0.03

