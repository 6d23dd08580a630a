"""IML-ViT (imlforensics.models.imlvit): the official checkpoint's keys, parity with IMDL-BenCo, caches.

The manifest tests/manifests/iml-vit.json lists the keys and shapes of the official checkpoint. It
is generated from IMDL-BenCo's ``IML_ViT`` (the authors' own model code, same names as their
repository's ``iml_vit_model``, into which their demo loads the released file with strict=True):

    python tests/test_model_imlvit.py --write-manifest
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import read_rgb

from imlforensics.models.imlvit import IMLViT, RelPosAttention
from imlforensics.models.reference import build_reference, imdlbenco_available

ROOT = Path(__file__).resolve().parents[1]
MANIFEST = ROOT / "tests" / "manifests" / "iml-vit.json"
SOURCE = (
    "Keys and shapes of IMDL-BenCo 0.1.45 IML_ViT(input_size=1024).state_dict() "
    "(imlforensics.models.reference.build_reference('iml-vit')). Its model files are the authors' "
    "SunnyHaze/IML-ViT iml_vit_model.py, modules/window_attention_ViT.py and modules/decoderhead.py "
    "with the same layers and names (only an unused SimpleFeaturePyramid argument differs), and the "
    "authors' Demo.ipynb loads the released iml-vit_checkpoint.pth into iml_vit_model with "
    "load_state_dict(strict=True), so the released files (bare state_dicts) hold exactly these keys: "
    "pos_embed at the MAE pre-training size (1, 197, 768) with its class token, rel_pos tables (27, 64) "
    "for window blocks and (127, 64) for the global blocks 2, 5, 8, 11, and the head's BatchNorm "
    "buffers including num_batches_tracked. The checkpoint itself cannot be downloaded here. "
    "Written by tests/test_model_imlvit.py --write-manifest."
)

needs_reference = pytest.mark.skipif(not imdlbenco_available(),
                                     reason="IMDL-BenCo (the test-only reference) is not installed")


def shapes(state_dict) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in state_dict.items()}


def reference_manifest() -> dict:
    ref, _ = build_reference("iml-vit")
    return {"model": "iml-vit", "source": SOURCE, "keys": shapes(ref.state_dict())}


def randomised(state_dict, seed: int = 0) -> dict:
    """The reference's own initialisation, with every constant-initialised tensor (zeros, ones: rel_pos,
    biases, norms, BatchNorm statistics) given random values so that every parameter matters."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, v in state_dict.items():
        if v.dtype.is_floating_point and v.numel() > 1 and bool((v == v.flatten()[0]).all()):
            noise = torch.randn(v.shape, generator=g)
            if k.endswith("running_var"):
                v = 0.5 + torch.rand(v.shape, generator=g)
            elif k.endswith("rel_pos_h") or k.endswith("rel_pos_w"):
                v = 0.5 * noise
            else:
                v = v + 0.1 * noise
        out[k] = v.clone()
    return out


@pytest.fixture(scope="module")
def model():
    return IMLViT().eval()


@pytest.fixture(scope="module")
def small():
    """A 256 x 256 variant (16 x 16 tokens: four 14 x 14 windows, bicubic position embedding) for cheap checks."""
    torch.manual_seed(0)
    m = IMLViT(input_size=256).eval()
    m.load_state_dict(randomised(m.state_dict(), seed=1))
    return m


def test_architecture_matches_the_official_checkpoint_manifest(model):
    manifest = json.loads(MANIFEST.read_text())
    assert manifest["model"] == "iml-vit"
    want, have = manifest["keys"], shapes(model.state_dict())
    missing = sorted(set(want) - set(have))
    unexpected = sorted(set(have) - set(want))
    wrong = {k: (have[k], want[k]) for k in set(want) & set(have) if have[k] != want[k]}
    assert not (missing or unexpected or wrong), (
        f"missing {missing}\nunexpected {unexpected}\nshape mismatches (ours, official) {wrong}")
    assert list(have) == list(want), "same keys, different order"


def test_card_builds_the_architecture():
    from imlforensics.weights.cards import load_card

    card = load_card("iml-vit")
    assert card.architecture == "imlforensics.models.imlvit:IMLViT"
    assert card.preprocess["mode"] == "pad" and card.preprocess["size"] == 1024
    assert card.preprocess["pad_after_normalize"] is False and card.postprocess["restore"] == "crop"
    m = card.build("meta")
    assert shapes(m.state_dict()) == json.loads(MANIFEST.read_text())["keys"]


@needs_reference
def test_manifest_is_the_reference_state_dict():
    assert json.loads(MANIFEST.read_text()) == reference_manifest()


def official_input(rgb: np.ndarray, size: int = 1024) -> np.ndarray:
    """The authors' test transform, written out: albumentations PadIfNeeded(size, top_left, value=0) on
    the uint8 image, Normalize(ImageNet) as albumentations computes it, Crop(0, 0, size, size), CHW."""
    h, w = rgb.shape[:2]
    padded = np.zeros((max(h, size), max(w, size), 3), np.uint8)
    padded[:h, :w] = rgb
    mean = np.array([0.485, 0.456, 0.406], np.float32) * 255.0
    std = np.array([0.229, 0.224, 0.225], np.float32) * 255.0
    x = (padded.astype(np.float32) - mean) * np.reciprocal(std)
    return np.ascontiguousarray(x[:size, :size].transpose(2, 0, 1)[None])


@needs_reference
def test_parity_with_imdlbenco_on_an_example_image(model, examples):
    from imlforensics.weights.cards import load_card
    from imlforensics.models.preprocess import preprocess, restore

    ref, predict = build_reference("iml-vit")
    ref.load_state_dict(randomised(ref.state_dict(), seed=0))
    model.load_state_dict(ref.state_dict(), strict=True)

    rgb = read_rgb(examples["splice"][0])
    h, w = rgb.shape[:2]
    x_card, meta = preprocess(rgb, load_card("iml-vit").preprocess)
    x_official = official_input(rgb)
    assert x_card.shape == x_official.shape == (1, 3, 1024, 1024)
    assert np.abs(x_card - x_official).max() < 1e-5

    x = torch.from_numpy(x_official)
    with torch.inference_mode():
        ours = torch.sigmoid(model(x))
        theirs = predict(ref, x)
    assert ours.shape == theirs.shape == (1, 1, 1024, 1024)
    diff = (ours - theirs).abs().max().item()
    assert diff <= 1e-4, f"max abs diff of the sigmoid maps {diff:.3g}"
    assert theirs.std().item() > 1e-3  # the random model's map is not flat: the comparison means something
    crop = restore(ours[0, 0].numpy(), meta)
    assert crop.shape == (h, w) and np.array_equal(crop, np.clip(ours[0, 0, :h, :w].numpy(), 0, 1))


@needs_reference
@pytest.mark.usefixtures("one_torch_thread")
def test_small_variant_matches_reference_with_banded_bias(small, monkeypatch):
    """At 256 x 256, also with the global attention's bias built one query row at a time."""
    from imlforensics.models.reference import import_reference

    mod = import_reference("model_zoo.iml_vit.iml_vit")
    ref = mod.IML_ViT(input_size=256).eval()
    ref.load_state_dict(small.state_dict(), strict=True)
    x = torch.randn(2, 3, 256, 256, generator=torch.Generator().manual_seed(3))
    zeros = torch.zeros(2, 1, 256, 256)
    with torch.inference_mode():
        theirs = ref(x, zeros, zeros)["pred_mask"]
        whole = torch.sigmoid(small(x))
        monkeypatch.setattr(RelPosAttention, "bias_budget", 1)
        banded = torch.sigmoid(small(x))
    assert (whole - theirs).abs().max().item() <= 1e-5
    assert (banded - whole).abs().max().item() <= 1e-6


@pytest.mark.usefixtures("one_torch_thread")
def test_position_embedding_cache_follows_the_parameter(small):
    enc = small.encoder_net
    with torch.no_grad():
        expected = F.interpolate(enc.pos_embed[:, 1:].reshape(1, 14, 14, -1).permute(0, 3, 1, 2),
                                 size=(16, 16), mode="bicubic", align_corners=False).permute(0, 2, 3, 1)
        first = enc.resized_pos_embed((16, 16))
        assert torch.equal(first, expected)
        assert enc.resized_pos_embed((16, 16)) is first  # computed once
    x = torch.randn(1, 3, 256, 256, generator=torch.Generator().manual_seed(4))
    with torch.inference_mode():
        before = small(x)
    state = small.state_dict()
    state["encoder_net.pos_embed"] = state["encoder_net.pos_embed"] + 0.5
    small.load_state_dict(state)
    with torch.inference_mode():
        after = small(x)
        again = enc.resized_pos_embed((16, 16))
    assert again is not first and torch.allclose(again, first + 0.5, atol=1e-5)
    fresh = IMLViT(input_size=256).eval()
    fresh.load_state_dict(state)
    with torch.inference_mode():
        assert (after - before).abs().max().item() > 1e-3
        assert torch.equal(after, fresh(x))
    with torch.enable_grad():  # training through the embedding bypasses the cache
        enc.resized_pos_embed((16, 16)).sum().backward()
    assert enc.pos_embed.grad is not None and enc.pos_embed.grad[:, 1:].abs().sum() > 0
    enc.pos_embed.grad = None


@pytest.mark.usefixtures("one_torch_thread")
def test_head_uses_the_live_batchnorm_and_bias(small):
    x = torch.randn(1, 3, 256, 256, generator=torch.Generator().manual_seed(5))
    head = small.predict_head
    with torch.inference_mode():
        base = small(x)
        head.linear_predict.bias += 1.0
        shifted = small(x)
        head.linear_predict.bias -= 1.0
        head.norm.running_mean += 0.3
        moved = small(x)
        head.norm.running_mean -= 0.3
    assert torch.allclose(shifted, base + 1.0, atol=1e-5)
    assert (moved - base).abs().max().item() > 1e-3


@pytest.mark.usefixtures("one_torch_thread")
def test_bfloat16_autocast_runs_and_stays_close(small):
    x = torch.randn(1, 3, 256, 256, generator=torch.Generator().manual_seed(6))
    with torch.inference_mode():
        full = torch.sigmoid(small(x))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            half = torch.sigmoid(small(x).float())
    assert torch.isfinite(half).all()
    assert (half - full).abs().max().item() < 0.05


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")
def test_cuda_matches_cpu(small):
    x = torch.randn(1, 3, 256, 256, generator=torch.Generator().manual_seed(7))
    gpu = IMLViT(input_size=256).eval().cuda()
    gpu.load_state_dict(small.state_dict())
    with torch.inference_mode():
        a = torch.sigmoid(small(x))
        b = torch.sigmoid(gpu(x.cuda())).cpu()
    assert (a - b).abs().max().item() < 1e-3


if __name__ == "__main__":
    if "--write-manifest" in sys.argv:
        MANIFEST.parent.mkdir(parents=True, exist_ok=True)
        m = reference_manifest()
        rows = ",\n".join(f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in m["keys"].items())
        MANIFEST.write_text(f'{{\n "model": {json.dumps(m["model"])},\n "source": {json.dumps(m["source"])},\n'
                            f' "keys": {{\n{rows}\n }}\n}}\n')
        print(f"wrote {MANIFEST}")


def test_card_preprocessing_of_a_large_image_is_the_official_crop():
    from imlforensics.weights.cards import load_card
    from imlforensics.models.preprocess import preprocess

    rgb = np.random.default_rng(1).integers(0, 256, (1100, 1300, 3), dtype=np.uint8)
    x, meta = preprocess(rgb, load_card("iml-vit").preprocess)
    assert meta.cropped and np.abs(x - official_input(rgb)).max() < 1e-5
