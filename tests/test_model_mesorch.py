"""Mesorch: the official checkpoint's keys and shapes, parity with IMDL-BenCo, folded inference weights."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from imlforensics.models.mesorch import Mesorch, MesorchP
from imlforensics.models.reference import build_reference, imdlbenco_available

MANIFEST = Path(__file__).parent / "manifests" / "mesorch.json"
MANIFEST_P = Path(__file__).parent / "manifests" / "mesorch-p.json"
needs_reference = pytest.mark.skipif(not imdlbenco_available(), reason="IMDL-BenCo (test-only reference) not installed")


def randomised(sd: dict, seed: int) -> dict:
    """Perturb every float tensor so that no weight keeps its (often zero or one) initial value."""
    g = torch.Generator().manual_seed(seed)
    return {k: v + 0.02 * torch.randn(v.shape, generator=g) if v.is_floating_point() else v for k, v in sd.items()}


def test_architecture_matches_the_official_checkpoint_exactly():
    with torch.device("meta"):
        ours = {k: list(v.shape) for k, v in Mesorch().state_dict().items()}
    official = json.loads(MANIFEST.read_text())["keys"]
    missing, unexpected = sorted(set(official) - set(ours)), sorted(set(ours) - set(official))
    wrong = sorted(k for k in set(ours) & set(official) if ours[k] != official[k])
    assert not (missing or unexpected or wrong), f"missing {missing[:5]}, unexpected {unexpected[:5]}, shapes {wrong[:5]}"
    assert "convnext.head.fc.weight" in ours and "convnext.stem.0.bias" not in ours
    assert sum(np.prod(s) for k, s in ours.items() if "num_batches" not in k) == pytest.approx(85.75e6, rel=1e-3)


def official_input(rgb: np.ndarray) -> np.ndarray:
    """The authors' test transform written out: cv2 linear resize to 512 on uint8, then
    albumentations' Normalize ((x - 255 mean) / (255 std)), CHW."""
    import cv2

    img = cv2.resize(rgb, (512, 512), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    x = (img - np.array([0.485, 0.456, 0.406], np.float32) * 255) / (np.array([0.229, 0.224, 0.225], np.float32) * 255)
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])


@needs_reference
def test_parity_with_imdlbenco_on_an_example_image(examples):
    from PIL import Image

    from imlforensics.weights.cards import load_card
    from imlforensics.models.preprocess import preprocess

    ref, predict = build_reference("mesorch")
    ref.load_state_dict(randomised(ref.state_dict(), seed=0))
    ours = Mesorch().eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    rgb = np.asarray(Image.open(examples["splice"][0]).convert("RGB"))
    x, _ = preprocess(rgb, load_card("mesorch").preprocess)
    assert np.abs(x - official_input(rgb)).max() < 1e-5
    x = torch.from_numpy(x)
    with torch.inference_mode():
        theirs = predict(ref, x)
        mine = torch.sigmoid(ours(x))
        hi_ref, lo_ref = ref.high_dct(x), ref.low_dct(x)
        hi, lo = ours.dct(x)
    assert mine.shape == theirs.shape == (1, 1, 512, 512)
    assert float(theirs.std()) > 1e-3  # a map with structure, not a constant
    assert float((mine - theirs).abs().max()) < 1e-4
    assert float((hi - hi_ref).abs().max()) < 1e-4 and float((lo - lo_ref).abs().max()) < 1e-4


def test_folded_inference_equals_the_layer_by_layer_path_and_follows_new_weights():
    torch.manual_seed(0)
    model = Mesorch(size=128).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    x = torch.randn(1, 3, 128, 128)
    outputs = []
    for seed in (1, 2):
        model.load_state_dict(randomised(model.state_dict(), seed))
        plain = model(x)  # grad mode on: the plain path
        with torch.inference_mode():
            folded = model(x)
        assert float((plain - folded).abs().max()) < 1e-4
        outputs.append(folded)
    assert float((outputs[0] - outputs[1]).abs().max()) > 1e-3  # the cache followed the new weights


def test_bf16_autocast_runs_and_stays_close():
    torch.manual_seed(0)
    model = Mesorch(size=128).eval()
    x = torch.randn(1, 3, 128, 128)
    with torch.inference_mode():
        full = torch.sigmoid(model(x))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            half = torch.sigmoid(model(x).float())
    assert torch.isfinite(half).all() and float((full - half).abs().max()) < 0.05


def test_mesorch_p_matches_its_official_keys_and_the_authors_assembly():
    with torch.device("meta"):
        ours = {k: list(v.shape) for k, v in MesorchP().state_dict().items()}
    official = json.loads(MANIFEST_P.read_text())["keys"]
    assert ours == official, f"differs: {sorted(set(ours) ^ set(official))[:5]}"
    assert not any(k.startswith(("convnext.head", "convnext.stages.3", "gate")) for k in ours)
    assert sum(np.prod(s) for s in ours.values()) == pytest.approx(62.24e6, rel=1e-3)


@needs_reference
def test_mesorch_p_parity_with_the_authors_assembly_of_imdlbenco_parts():
    ref, predict = build_reference("mesorch-p")
    ref.load_state_dict(randomised(ref.state_dict(), seed=3))
    ours = MesorchP().eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(1, 3, 512, 512, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        theirs, mine = predict(ref.eval(), x), torch.sigmoid(ours(x))
    assert float(theirs.std()) > 1e-3 and float((mine - theirs).abs().max()) < 1e-4


if __name__ == "__main__" and "--write-manifest" in sys.argv:
    for name, path in (("mesorch", MANIFEST), ("mesorch-p", MANIFEST_P)):
        ref, _ = build_reference(name)
        data = json.loads(path.read_text())
        data["keys"] = {k: list(v.shape) for k, v in ref.state_dict().items()}
        path.write_text(json.dumps(data, indent=0) + "\n")
