"""The deep-detector wrapper: card-driven preprocessing, tiling, devices, and each real model's
official container imported and reproducing the direct forward."""

from __future__ import annotations

import argparse
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from imlforensics.weights.cards import all_cards, parse_card
from imlforensics.models.preprocess import IMAGENET_MEAN, IMAGENET_STD, preprocess, restore, tiles

TOY = """
name = "toy-red"
summary = "test model: per-pixel redness"
paper = "none"
architecture = "torch.nn:Conv2d"
arch_options = { in_channels = 3, out_channels = 1, kernel_size = 1 }
license = "MIT"
redistribution = true
training = "none"
[preprocess]
mode = "resize"
size = 32
[postprocess]
restore = "resize"
image_score = "max"
"""


@pytest.fixture
def toy(tmp_path, monkeypatch):
    """The toy-red detector class (logit = 8 * (red - green) in [0,1] units) with its weights in a file."""
    from imlforensics.weights.cards import all_cards as cached_cards
    from imlforensics.detectors.deep import DeepDetector

    card = parse_card(TOY)
    monkeypatch.setattr("imlforensics.weights.cards.all_cards", lambda: {**cached_cards(), card.name: card})
    std = torch.tensor(IMAGENET_STD)
    mean = torch.tensor(IMAGENET_MEAN)
    a = torch.tensor([8.0, -8.0, 0.0])
    weight = (a * std).view(1, 3, 1, 1)  # x_c * std_c + mean_c = value in [0, 1]
    bias = (a * mean).sum().view(1) - 2.0
    torch.save({"model": OrderedDict(weight=weight, bias=bias)}, tmp_path / "toy.pth")
    cls = type("ToyRed", (DeepDetector,), {"name": card.name, "card": card})
    return cls, tmp_path / "toy.pth"


def truth(rgb: np.ndarray) -> np.ndarray:
    v = rgb.astype(np.float64) / 255.0
    return 1.0 / (1.0 + np.exp(-(8.0 * (v[..., 0] - v[..., 1]) - 2.0)))


def scene(h: int = 100, w: int = 130) -> np.ndarray:
    rng = np.random.default_rng(0)
    rgb = rng.integers(60, 120, (h, w, 3), dtype=np.uint8)
    rgb[30:60, 70:110, 0] = 250
    rgb[30:60, 70:110, 1] = 20
    return rgb


def test_tiles_cover_the_image_with_overlap():
    win = tiles(100, 130, 32, 0.25)
    cover = np.zeros((100, 130), int)
    for y0, x0, y1, x1 in win:
        assert (y1 - y0, x1 - x0) == (32, 32)
        cover[y0:y1, x0:x1] += 1
    assert cover.min() >= 1 and cover.max() >= 2
    assert tiles(20, 30, 32, 0.25) == [(0, 0, 20, 30)]


def test_pad_mode_crops_back_and_resizes_large_images():
    rgb = scene(40, 60)
    x, meta = preprocess(rgb, {"mode": "pad", "size": 64})
    assert x.shape == (1, 3, 64, 64)
    pad_value = (0.0 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    assert np.allclose(x[0, :, 50, 10], pad_value, atol=1e-6) and np.allclose(x[0, :, 10, 62], pad_value, atol=1e-6)
    assert restore(np.arange(64 * 64, dtype=np.float32).reshape(64, 64) / 4096, meta).shape == (40, 60)
    x, meta = preprocess(scene(100, 200), {"mode": "pad", "size": 64, "large": "resize"})
    assert meta.inner == (32, 64) and meta.resized
    big = scene(100, 200)
    x, meta = preprocess(big, {"mode": "pad", "size": 64, "large": "crop"})  # IML-ViT's official way
    x_direct, _ = preprocess(np.ascontiguousarray(big[:64, :64]), {"mode": "pad", "size": 64})
    assert meta.cropped and np.array_equal(x, x_direct)
    back = restore(np.full((64, 64), 0.7, np.float32), meta)
    assert back.shape == (100, 200) and np.all(back[:64, :64] == np.float32(0.7)) and back[64:].max() == 0


def test_official_mode_resizes_and_tiled_mode_works_at_native_resolution(toy):
    cls, path = toy
    rgb = scene()
    det = cls(weights=path, device="cpu")
    pred = det.predict(rgb)
    assert pred.heatmap.shape == rgb.shape[:2] and pred.detector == "toy-red"
    inside, outside = pred.heatmap[35:55, 75:105].mean(), pred.heatmap[70:, :60].mean()
    assert inside > 0.9 and outside < 0.2
    # resized to 32x32 and back: close to the truth but blurred at the square's edges
    err_official = np.abs(pred.heatmap - truth(rgb)).max()
    tiled = cls(weights=path, device="cpu", tile=True).predict(rgb)
    assert tiled.extras["tiles"] > 1
    assert np.abs(tiled.heatmap - truth(rgb)).max() < 1e-4 < err_official
    assert pred.score == pytest.approx(float(pred.heatmap.max()))


def test_half_precision_stays_close(toy):
    cls, path = toy
    rgb = scene()
    full = cls(weights=path, device="cpu").predict(rgb).heatmap
    half = cls(weights=path, device="cpu", half=True).predict(rgb).heatmap
    assert np.abs(full - half).max() < 2e-2


def test_bad_devices_are_clear_errors(toy):
    from imlforensics.errors import ImlfError

    cls, path = toy
    with pytest.raises(ValueError, match="unknown device"):
        cls(weights=path, device="tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ImlfError, match="no CUDA GPU"):
            cls(weights=path, device="cuda")


class HeadToy(torch.nn.Module):
    """A model with its own predict(): map = red, confidence = 1 - red, score = the map's mean."""

    def predict(self, x: torch.Tensor) -> dict:
        m = x[:, :1].clamp(0, 1)
        return {"map": m, "confidence": 1 - m, "score": m.mean((1, 2, 3))}


def test_a_model_head_gives_the_image_score_and_layers_also_when_tiled(toy):
    from dataclasses import replace

    cls, path = toy
    card = replace(cls.card, preprocess={"mode": "full", "scale": 255, "size": 48},
                   postprocess={"image_score": "head", "layers": ["confidence"]})
    head_cls = type("ToyHead", (cls,), {"card": card})
    rgb = scene()
    red = rgb[..., 0].astype(np.float32) / 255
    det = head_cls(weights=path, device="cpu")
    det.model = HeadToy()
    pred = det.predict(rgb)
    assert np.abs(pred.heatmap - red).max() < 1e-6 and np.abs(pred.layers["confidence"] - (1 - red)).max() < 1e-6
    assert pred.score == pytest.approx(float(red.mean()), abs=1e-6) and pred.score < pred.heatmap.max() - 0.1
    tiled = head_cls(weights=path, device="cpu", tile=True)
    tiled.model = HeadToy()
    pred = tiled.predict(rgb)
    windows = tiles(*rgb.shape[:2], 48, 0.25)
    assert len(windows) > 1 and pred.extras["tiles"] == len(windows)
    assert np.abs(pred.heatmap - red).max() < 1e-5 and np.abs(pred.layers["confidence"] - (1 - red)).max() < 1e-5
    assert pred.score == pytest.approx(max(float(red[y0:y1, x0:x1].mean()) for y0, x0, y1, x1 in windows), abs=1e-6)
    assert any("largest of the detection head's scores" in n for n in pred.notes)


# ------------------------------------------------------------------ the real models

REAL = sorted(n for n, c in all_cards().items() if c.kind == "detector")


def _container(card, sd: dict) -> dict:
    """Random weights wrapped as the authors' files wrap them (training dict with Namespace, or bare)."""
    if card.state_dict_key:
        return {card.state_dict_key: sd, "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4}]}, "epoch": 98,
                "args": argparse.Namespace(model=card.name, lr=1e-4, batch_size=2)}
    return sd


@pytest.mark.parametrize("name", REAL)
def test_official_container_imports_and_reproduces_the_direct_forward(name, tmp_path, monkeypatch, examples):
    from imlforensics.detectors.registry import load_detector
    from imlforensics.weights.convert import import_weights

    card = all_cards()[name]
    monkeypatch.setenv("IMLF_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)
    model = card.build().eval()
    sd = OrderedDict((k, v + 0.01 * torch.randn_like(v) if v.is_floating_point() else v)
                     for k, v in model.state_dict().items())
    model.load_state_dict(sd)
    src = tmp_path / (card.official.get("files") or [f"{name}.pth"])[0]
    torch.save(_container(card, sd), src)
    import_weights(name, src, verify=False)
    det = load_detector(name, device="cpu")
    rgb = np.asarray(Image.open(examples["splice"][0]).convert("RGB"))
    if card.preprocess.get("mode") == "full":  # full-resolution models: a small crop keeps CPU time low
        rgb = np.ascontiguousarray(rgb[100:228, 150:310])
    x, meta = preprocess(rgb, card.preprocess)
    with torch.inference_mode():
        t = torch.from_numpy(x)
        out = model.predict(t) if hasattr(model, "predict") else {"map": torch.sigmoid(model(t))}
        direct = restore(out["map"][0, 0].numpy(), meta)
    pred = det.predict(rgb)
    assert pred.heatmap.shape == rgb.shape[:2]
    assert np.abs(pred.heatmap - direct).max() < 1e-5
    if card.postprocess.get("image_score") == "head":  # the detection head's score, not the map's maximum
        assert pred.score == pytest.approx(float(out["score"][0]), abs=1e-6)
        assert abs(pred.score - float(pred.heatmap.max())) > 1e-3 and pred.extras["image_score"] == "detection head"
    else:
        assert pred.score == pytest.approx(float(pred.heatmap.max()), abs=1e-6)
    for layer in card.postprocess.get("layers", []):
        got = pred.layers[layer]
        assert got.shape == rgb.shape[:2] and np.abs(got - restore(out[layer][0, 0].numpy(), meta)).max() < 1e-5
