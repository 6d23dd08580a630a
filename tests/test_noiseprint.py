"""Noiseprint / Noiseprint++: the network, the quality choice, the blind localization, and parity with
the authors' published outputs on their demo images (real weights from ../shared/weights)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from imlforensics.detectors.noiseprint import (
    NoiseprintDetector,
    NoiseprintPPDetector,
    energy_map,
    image_quality,
    jpeg_quality,
    noiseprint_view,
)
from imlforensics.detectors.noiseprint_blind import blind_map, grid_to_image
from imlforensics.io.image import load_image
from imlforensics.models.dncnn import conv_index, noiseprint, noiseprint_pp


def _ijg_luma(q: int) -> np.ndarray:
    from imlforensics.io.jpegtables import ijg_tables

    return ijg_tables()[q - 1]


def test_jpeg_quality_inverts_libjpeg_tables():
    for q in range(51, 101):
        assert jpeg_quality(_ijg_luma(q)) == q
    assert jpeg_quality(_ijg_luma(20)) == 51  # below 51: the lowest network
    assert jpeg_quality(np.ones((8, 8))) == 100


def test_quality_of_files(tmp_path):
    from PIL import Image

    rgb = (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.jpg", quality=87)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    assert image_quality(load_image(tmp_path / "a.jpg")) == 87
    assert image_quality(load_image(tmp_path / "a.png")) == 101


def test_dncnn_layout():
    net = noiseprint()
    keys = list(net.state_dict())
    assert [conv_index(i) for i in (0, 1, 15, 16)] == [0, 2, 44, 47]
    assert "0.bias" in keys and "47.bias" in keys and "2.bias" not in keys and "3.running_var" in keys
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in net) == 15
    assert noiseprint_pp()[0].in_channels == 3
    x = torch.rand(1, 1, 40, 50)
    assert net.eval()(x).shape == (1, 1, 40, 50)


def test_blind_map_finds_a_region_of_other_statistics():
    """Two residual populations (white vs spatially correlated noise): the official map is higher on the odd square."""
    rng = np.random.default_rng(0)
    res = rng.normal(0, 0.7, (512, 512)).astype(np.float32)
    other = rng.normal(0, 0.7, (512, 512))
    other = (other + np.roll(other, 1, 1) + np.roll(other, 1, 0)) / np.sqrt(3)
    res[160:352, 160:352] = other[160:352, 160:352]
    result = blind_map(res, np.full(res.shape, 0.5, np.float32))
    grid = grid_to_image(result.grid, result.range0, result.range1, res.shape)
    inside = np.zeros(res.shape, bool)
    inside[176:336, 176:336] = True
    assert result.valid.all()
    assert np.median(grid[inside]) > 2 * np.percentile(grid[~inside], 90)


def test_blind_map_refuses_flat_images():
    res = np.zeros((256, 256), np.float32)
    assert blind_map(res, np.full(res.shape, 0.5, np.float32)).grid is None


def test_energy_map_flags_a_noisier_patch():
    rng = np.random.default_rng(1)
    res = rng.normal(0, 0.5, (256, 384)).astype(np.float32)
    res[64:128, 96:192] *= 3
    heat = energy_map(res)
    assert heat.shape == res.shape
    assert heat[72:120, 104:184].mean() > 0.9 and heat[160:, 240:].mean() < 0.1


def test_noiseprint_view_range():
    res = np.random.default_rng(2).normal(size=(100, 120)).astype(np.float32)
    view = noiseprint_view(res)
    assert view.shape == res.shape and view.dtype == np.float32
    assert view.min() == 0.0 and view.max() == 1.0


# ---------------------------------------------------------------- real weights


@pytest.fixture(scope="module")
def demo(shared_weights):
    return shared_weights / "noiseprint-demo"


@pytest.fixture(scope="module")
def np_detector(shared_weights):
    return NoiseprintDetector(weights=shared_weights / "noiseprint", device="cpu")


@pytest.mark.data
def test_noiseprint_pp_keys_match_the_official_file(shared_weights):
    state = torch.load(shared_weights / "noiseprint++" / "noiseprint++.th", weights_only=True, map_location="cpu")
    assert list(state["network"]) == list(noiseprint_pp().state_dict())


@pytest.mark.data
def test_noiseprint_matches_the_authors_output(np_detector, demo):
    """inpainting.png (PNG: net 101) against inpainting_np.mat, the official main_extraction.py output."""
    import scipy.io

    ref = scipy.io.loadmat(demo / "inpainting_np.mat")["noiseprint"]
    img = load_image(demo / "inpainting.png")
    res, _, extras = np_detector.residual(img)
    assert extras["network"] == "net_jpg101"
    assert res.shape == ref.shape
    assert np.abs(res - ref).max() <= 1e-3 * ref.std()


@pytest.fixture(scope="module", params=["splicing.png", "faceswap.jpg", "NC2016_2564.jpg"])
def demo_residual(request, np_detector, demo):
    """One residual per demo image, shared by the tests below (3 to 9 MP: minutes on a CPU)."""
    img = load_image(demo / request.param)
    res, _, extras = np_detector.residual(img)
    return request.param, img, res, extras


@pytest.mark.data
def test_blind_map_matches_the_authors_map(demo_residual, demo, np_detector):
    """The official main_blind.py map (*_map.mat): same window grid and valid windows, and the same
    ranking of windows (Spearman >= 0.99; the EM is seeded, so the fit is the authors')."""
    import scipy.io
    from scipy.stats import spearmanr

    name, img, res, extras = demo_residual
    mat = scipy.io.loadmat(demo / (name.rsplit(".", 1)[0] + "_map.mat"))
    assert extras["quality"] == min(int(np.ravel(mat["QF"])[0]), 101)
    result = blind_map(res, np_detector.luma(img))
    assert result.grid.shape == mat["map"].shape
    np.testing.assert_array_equal(result.range0, np.ravel(mat["range0"]))
    np.testing.assert_array_equal(result.range1, np.ravel(mat["range1"]))
    assert (result.valid == mat["valid"].astype(bool)).mean() > 0.999
    rho = spearmanr(result.grid.ravel(), mat["map"].ravel())[0]
    assert rho >= 0.99, rho
    assert abs(result.outlier_prob - float(np.ravel(mat["other"]["outliersProb"][0, 0])[0])) < 0.01


@pytest.mark.data
def test_detector_localizes_the_nist_forgery(demo_residual, demo, np_detector):
    """NC2016_2564 has a ground-truth mask: the heatmap ranks its pixels above the rest."""
    from imlforensics.evaluation.metrics import pixel_scores

    name, img, res, _ = demo_residual
    if name != "NC2016_2564.jpg":
        pytest.skip("only NC2016_2564 has a ground truth")
    from PIL import Image

    gt = np.asarray(Image.open(demo / "NC2016_2564_gt.png").convert("L")) > 127
    heat, _, extras = np_detector.localize(res, img)
    assert heat.shape == gt.shape and extras["map"] == "em"
    scores = pixel_scores(heat, gt)
    assert scores.auc > 0.95 and scores.f1_best > 0.8 and scores.f1 > 0.8  # measured: 0.999, 0.949, 0.913


@pytest.mark.data
def test_noiseprint_pp_runs_on_a_small_image(shared_weights, demo):
    det = NoiseprintPPDetector(weights=shared_weights / "noiseprint++" / "noiseprint++.th", device="cpu")
    img = load_image(demo / "inpainting.png")
    pred = det.predict(img)
    assert pred.heatmap.shape == (512, 512)
    assert 0.0 <= pred.score <= 1.0
    assert "noiseprint" in pred.layers
    assert pred.raw["noiseprint"].shape == (512, 512) and pred.raw["noiseprint"].dtype == np.float32
    assert "_raw" not in pred.extras


@pytest.mark.data
def test_missing_quality_uses_the_nearest_network(shared_weights, tmp_path):
    import shutil

    from PIL import Image

    for q in (75, 92):
        shutil.copytree(shared_weights / "noiseprint" / f"net_jpg{q}", tmp_path / "nets" / f"net_jpg{q}")
    rgb = (np.random.default_rng(3).random((96, 128, 3)) * 255).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.jpg", quality=87)
    det = NoiseprintDetector(weights=tmp_path / "nets", device="cpu")
    _, notes, extras = det.residual(load_image(tmp_path / "a.jpg"))
    assert extras == {"quality": 87, "network": "net_jpg92"}
    assert notes == ["no network for JPEG quality 87; used the nearest available, 92"]
