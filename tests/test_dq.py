"""dq: aligned double-JPEG localization from the file's quantized DCT coefficients."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import EXAMPLES, jpeg_roundtrip, read_gt, read_rgb
from imlforensics.detectors.dq import DoubleQuantizationDetector, comb_factor
from imlforensics.io.jpegtables import ijg_tables
from imlforensics.errors import NotApplicable
from imlforensics.io.image import load_image
from imlforensics.evaluation.metrics import pixel_scores
from imlforensics.detectors.registry import load_detector


@pytest.fixture(scope="module")
def detector() -> DoubleQuantizationDetector:
    return load_detector("dq")


@pytest.fixture(scope="module")
def predictions(detector, examples):
    """The detector's output on the examples: name -> (prediction, mask or None)."""
    names = ["splice", "recompressed", "coffee", "rocket"]
    return {n: (detector.predict(examples[n][0]), examples[n][1]) for n in names}


def save(tmp_path: Path, name: str, rgb: np.ndarray, **options) -> Path:
    path = tmp_path / name
    Image.fromarray(rgb).save(path, **options)
    return path


def test_comb_factor_is_the_double_quantization_pattern():
    x = np.arange(-40, 40)
    # q1 = 7 > q2 = 5: multiples of 7 never requantize to 2 (7 -> 1.4 -> 1, 14 -> 2.8 -> 3)
    n = comb_factor(x, 7, 5, 0.01)
    assert n[x == 2][0] < 1e-6 and n[x == 1][0] == pytest.approx(1.4, abs=1e-3)
    assert n[:35].mean() == pytest.approx(1.0, abs=1e-3)  # 35 = one period (7 / gcd(7, 5) * 5 bins)
    # q1 dividing q2 leaves no trace; noise flattens the comb
    assert np.allclose(comb_factor(x, 2, 6, 0.3), 1.0, atol=1e-3)
    assert np.ptp(comb_factor(x, 7, 5, 3.5)) < 0.02


def test_standard_tables_match_libjpeg(tmp_path):
    rgb = (np.random.default_rng(0).random((32, 32, 3)) * 255).astype(np.uint8)
    for quality in (30, 75, 90):
        qt = load_image(save(tmp_path, f"q{quality}.jpg", rgb, quality=quality)).jpeg.qtables[0]
        assert np.array_equal(qt, ijg_tables()[quality - 1])


def test_splice_into_double_compressed_background_is_localized(predictions):
    """Background: quality 75 then 90 (double); pasted head: compressed once at 90 (single)."""
    pred, mask = predictions["splice"]
    s = pixel_scores(pred.heatmap, mask, 0.5)
    assert s.f1 > 0.75 and s.auc > 0.97, s
    assert pred.extras["dominant_history"] == "double"
    assert pred.extras["tampered_history"] == "single"
    steps = {tuple(f["freq"]): f["q1"] for f in pred.extras["first_steps"]}
    assert steps[(0, 0)] == 8 and steps[(0, 1)] == 6 and steps[(1, 1)] == 6  # libjpeg quality 75


def test_recompressed_region_is_localized_as_the_minority_history(predictions):
    """Rest of the image compressed once (90); a grid-aligned region from a quality-60 JPEG is
    double compressed. Here the *double* history is the minority, so it is the one flagged."""
    pred, mask = predictions["recompressed"]
    s = pixel_scores(pred.heatmap, mask, 0.5)
    assert s.f1 > 0.75 and s.auc > 0.97, s
    assert pred.extras["dominant_history"] == "single"
    assert pred.extras["tampered_history"] == "double"
    steps = {tuple(f["freq"]): f["q1"] for f in pred.extras["first_steps"]}
    assert steps[(0, 0)] == 13 and steps[(0, 1)] == 9  # libjpeg quality 60


def test_untouched_single_and_double_compressed_images_stay_cool(predictions):
    coffee, _ = predictions["coffee"]  # quality 75 then 90: double compressed, untouched
    rocket, _ = predictions["rocket"]  # quality 90 once
    assert coffee.extras["dominant_history"] == "double"
    assert "no aligned double JPEG compression" in " ".join(rocket.notes)
    for pred in (coffee, rocket):
        assert (pred.heatmap >= 0.5).mean() < 0.01
        assert pred.score < 0.5
        assert pred.score < min(predictions["splice"][0].score, predictions["recompressed"][0].score)


def test_synthetic_unaligned_paste_into_recompressed_photo(detector, tmp_path):
    """Built here: a quality-70 host, a patch of another picture pasted off the grid, saved at 92."""
    host = jpeg_roundtrip(read_rgb(EXAMPLES / "Au" / "rocket.jpg"), 70)
    donor = read_rgb(EXAMPLES / "Au" / "astronaut.jpg")
    forged = host.copy()
    forged[83:211, 301:461] = donor[150:278, 50:210]
    mask = np.zeros(host.shape[:2], bool)
    mask[83:211, 301:461] = True
    pred = detector.predict(save(tmp_path, "forged.jpg", forged, quality=92))
    s = pixel_scores(pred.heatmap, mask, 0.5)
    assert s.auc > 0.95 and s.f1 > 0.6, s
    untouched = detector.predict(save(tmp_path, "host.jpg", host, quality=92))
    assert untouched.score < 0.5 < pred.score
    assert (untouched.heatmap >= 0.5).mean() < 0.01


def test_grayscale_progressive_odd_sized_jpeg(detector, tmp_path):
    """A gray forgery saved as a progressive JPEG whose size is not a multiple of 8."""
    host = np.asarray(Image.fromarray(read_rgb(EXAMPLES / "Au" / "rocket.jpg")).convert("L"))[:347, :517]
    host = np.asarray(Image.open(save(tmp_path, "host.jpg", host, quality=70)))
    forged = host.copy()
    forged[61:189, 250:378] = np.asarray(Image.open(EXAMPLES / "Au" / "astronaut.jpg").convert("L"))[150:278, 50:178]
    mask = np.zeros(host.shape, bool)
    mask[61:189, 250:378] = True
    path = save(tmp_path, "gray.jpg", forged, quality=90, progressive=True)
    assert load_image(path).jpeg.progressive and len(load_image(path).jpeg.coef) == 1
    pred = detector.predict(path)
    assert pred.heatmap.shape == (347, 517)
    s = pixel_scores(pred.heatmap, mask, 0.5)
    assert s.auc > 0.95 and s.f1 > 0.6, s


def test_444_chroma_and_size_off_the_grid(detector, tmp_path):
    host = jpeg_roundtrip(read_rgb(EXAMPLES / "Au" / "coffee.jpg"), 75)[:341, :509]
    forged = host.copy()
    forged[101:229, 203:331] = read_rgb(EXAMPLES / "Au" / "astronaut.jpg")[100:228, 100:228]
    mask = np.zeros(host.shape[:2], bool)
    mask[101:229, 203:331] = True
    pred = detector.predict(save(tmp_path, "f444.jpg", forged, quality=90, subsampling=0))
    assert pred.heatmap.shape == (341, 509)
    s = pixel_scores(pred.heatmap, mask, 0.5)
    assert s.auc > 0.95 and s.f1 > 0.6, s


def test_non_jpeg_input_is_not_applicable(detector, tmp_path):
    rgb = read_rgb(EXAMPLES / "Au" / "coffee.jpg")
    with pytest.raises(NotApplicable, match="needs a JPEG"):
        detector.predict(save(tmp_path, "coffee.png", rgb))
    with pytest.raises(NotApplicable, match="needs a JPEG"):
        detector.predict(rgb)


@pytest.mark.parametrize(
    "rgb, silent",
    [
        (np.full((5, 7, 3), 200, np.uint8), True),  # smaller than a block
        (np.full((120, 160, 3), 77, np.uint8), True),  # flat
        ((np.random.default_rng(1).random((64, 64, 3)) * 255).astype(np.uint8), False),  # noise, 60 then 90
    ],
    ids=["tiny", "flat", "noise"],
)
def test_odd_inputs_give_finite_quiet_output(detector, tmp_path, rgb, silent):
    pred = detector.predict(save(tmp_path, "odd.jpg", jpeg_roundtrip(rgb, 60), quality=90))
    assert pred.heatmap.shape == rgb.shape[:2]
    assert np.isfinite(pred.heatmap).all() and np.isfinite(pred.score)
    assert (pred.heatmap >= 0.5).mean() == 0 and pred.score < 0.5
    assert bool(pred.notes) == silent  # "too small" / "no double compression found"


def test_casia_splices_are_localized_where_double_compression_is_found(detector, shared_data):
    """Real CASIA v1 splices (host JPEG resaved): where the detector finds the host's double
    compression, the map ranks the pasted pixels well above chance."""
    from imlforensics.evaluation.datasets import load_dataset, read_mask

    samples = [s for s in load_dataset(shared_data / "casia1") if not s.authentic][5::120]
    aucs = []
    for s in samples:
        pred = detector.predict(s.image)
        if pred.extras.get("dominant_history") == "double":
            aucs.append(pixel_scores(pred.heatmap, read_mask(s.mask, pred.heatmap.shape), 0.5).auc)
    assert len(aucs) >= 3 and np.mean(aucs) > 0.9, aucs
