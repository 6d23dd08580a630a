"""noise: local noise-level inconsistency (db8 wavelet HH1 median estimator, Mahdian & Saic 2009)."""

from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
from PIL import Image

from conftest import jpeg_bytes, read_rgb
from imlforensics.detectors.noise import NoiseDetector, block_noise_sigma, diagonal_detail
from imlforensics.errors import NotApplicable, UnknownDetector
from imlforensics.evaluation.metrics import pixel_scores
from imlforensics.detectors.registry import load_detector


@pytest.fixture(scope="module")
def detector() -> NoiseDetector:
    return load_detector("noise")


def q8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def ellipse(h: int, w: int) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    cv2.ellipse(m, (w // 2, h // 2), (w // 5, h // 5), 0, 0, 360, 1, -1)
    return m.astype(bool)


def picture(examples, name: str) -> np.ndarray:
    return read_rgb(examples[name][0]).astype(np.float32)


def test_wavelet_band_is_pywavelets_db8_diagonal_detail():
    import pywt

    x = np.random.default_rng(0).normal(size=(64, 80)).astype(np.float32)
    ours = diagonal_detail(x)
    ref = pywt.dwt2(x, "db8", mode="periodization")[1][2]
    assert ours.shape == ref.shape
    assert np.allclose(ours[8:-8, 8:-8], ref[8:-8, 8:-8], atol=1e-4)


def test_median_estimator_recovers_the_noise_sigma():
    rng = np.random.default_rng(1)
    for sigma in (1.0, 3.0):
        hh = diagonal_detail((128 + rng.normal(0, sigma, (256, 256))).astype(np.float32))
        est = block_noise_sigma(hh, np.zeros_like(hh), block=32, keep_fraction=1.0)
        assert np.median(est) == pytest.approx(sigma, rel=0.08)


def test_added_noise_in_a_clean_image_is_localized(detector, examples):
    rng = np.random.default_rng(2)
    for name in ("coffee", "astronaut"):
        clean = picture(examples, name)
        mask = ellipse(*clean.shape[:2])
        forged = clean.copy()
        forged[mask] += rng.normal(0, 4.0, (int(mask.sum()), 3))  # 4 grey levels
        pred = detector.predict(q8(forged))
        s = pixel_scores(pred.heatmap, mask)
        assert s.f1 > 0.8 and s.auc > 0.95, (name, s)
        untouched = detector.predict(q8(clean))
        assert untouched.score < pred.score - 0.2
        assert untouched.heatmap[mask].mean() < 0.2 < 0.6 < pred.heatmap[mask].mean()


def _paste(examples, kind: str, rng) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A camera-like base (noise sigma 2) with an ellipse from another picture, noisier or smoother."""
    base = picture(examples, "rocket")
    h, w = base.shape[:2]
    base += rng.normal(0, 2.0, base.shape)
    donor = cv2.resize(picture(examples, "coffee"), (w, h))
    donor = donor + rng.normal(0, 5.0, donor.shape) if kind == "noisier" else cv2.GaussianBlur(donor, (0, 0), 1.0)
    mask = ellipse(h, w)
    forged = base.copy()
    forged[mask] = donor[mask]
    return q8(forged), q8(base), mask


@pytest.mark.parametrize("kind, auc_bar, f1_bar", [("noisier", 0.97, 0.8), ("smoother", 0.93, 0.6)])
def test_paste_from_a_noisier_or_smoother_source(detector, examples, kind, auc_bar, f1_bar):
    forged, untouched, mask = _paste(examples, kind, np.random.default_rng(3))
    pred = detector.predict(forged)
    s = pixel_scores(pred.heatmap, mask)
    assert s.auc > auc_bar and s.f1 > f1_bar, s
    # the same region of the untouched picture is not flagged
    before = detector.predict(untouched)
    assert before.heatmap[mask].mean() < 0.2 < 0.7 < pred.heatmap[mask].mean()
    # and the map says which way the region differs
    other = "smoother" if kind == "noisier" else "noisier"
    assert pred.extras[f"{kind}_share"] > pred.extras[f"{other}_share"]


def test_survives_light_jpeg_compression(detector, examples):
    clean = picture(examples, "astronaut")
    mask = ellipse(*clean.shape[:2])
    forged = clean.copy()
    forged[mask] += np.random.default_rng(4).normal(0, 5.0, (int(mask.sum()), 3))
    jpg = np.asarray(Image.open(io.BytesIO(jpeg_bytes(q8(forged), 95))).convert("RGB"))
    assert pixel_scores(detector.predict(jpg).heatmap, mask).auc > 0.8


def test_grayscale_image(detector, examples):
    gray = picture(examples, "astronaut").mean(axis=2)
    mask = ellipse(*gray.shape)
    forged = gray.copy()
    forged[mask] += np.random.default_rng(5).normal(0, 4.0, int(mask.sum()))
    pred = detector.predict(q8(forged))  # a 2-D array: gray copied to R, G, B
    assert pred.extras["chroma_used"] is False
    s = pixel_scores(pred.heatmap, mask)
    # luma alone: the region stands out (AUC), but less far above texture than with chroma
    assert s.auc > 0.9 and s.f1_best > 0.6, s


def test_flat_saturated_and_uniformly_noisy_images_stay_cool(detector):
    rng = np.random.default_rng(6)
    flat = np.full((96, 128, 3), 128, np.uint8)
    half = flat.copy()
    half[:, 64:] = 255
    noisy = q8(128 + rng.normal(0, 3.0, flat.shape))
    half_noisy = noisy.copy()
    half_noisy[:, :64] = 128  # a flat half is not evidence of a smoother paste
    for arr in (flat, np.zeros_like(flat), half, noisy, half_noisy):
        pred = detector.predict(arr)
        assert np.isfinite(pred.heatmap).all() and pred.heatmap.max() < 0.5 and pred.score < 0.5


def test_small_and_odd_sizes(detector):
    rng = np.random.default_rng(7)
    with pytest.raises(NotApplicable):
        detector.predict(rng.integers(0, 256, (20, 100, 3), dtype=np.uint8))
    for shape in ((32, 32, 3), (45, 71, 3)):
        pred = detector.predict(rng.integers(0, 256, shape, dtype=np.uint8))
        assert pred.heatmap.shape == shape[:2] and np.isfinite(pred.heatmap).all()


def test_options_are_validated():
    assert load_detector("noise", keep_fraction=1.0, chroma=False).keep_fraction == 1.0
    with pytest.raises(UnknownDetector):
        load_detector("noise", wavelet="haar")
    with pytest.raises(ValueError):
        NoiseDetector(keep_fraction=0.0)



@pytest.mark.data
def test_casia_subset(shared_data, detector, one_torch_thread):
    from imlforensics.evaluation.datasets import load_dataset, read_mask

    samples = load_dataset(shared_data / "casia1")
    tampered = [s for s in samples if not s.authentic][::10]
    authentic = [s for s in samples if s.authentic][::20]
    aucs = [pixel_scores(detector.predict(s.image).heatmap, read_mask(s.mask)).auc for s in tampered]
    flagged = [float((detector.predict(s.image).heatmap >= 0.5).mean()) for s in authentic]
    # full CASIA v1: pixel AUC 0.66 (pyIFD's NOI1: 0.60), authentic pixels flagged ~2%;
    # on this subset of 47 + 20 images: 0.67 and 3.9%
    assert np.mean(aucs) > 0.62
    assert np.mean(flagged) < 0.06
