"""TruFor: the official checkpoint's keys and shapes, parity with IMDL-BenCo (random weights, and
the real Noiseprint++ weights when ../shared/weights holds them), the folded decoders."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from imlforensics.models.reference import build_reference, imdlbenco_available
from imlforensics.models.trufor import TruFor

MANIFEST = Path(__file__).parent / "manifests" / "trufor.json"
# ../shared as the other tests find it; $IMLF_SHARED names it elsewhere (e.g. from a git worktree)
SHARED = Path(os.environ.get("IMLF_SHARED") or Path(__file__).resolve().parents[1].parent / "shared")
NOISEPRINTPP = SHARED / "weights" / "noiseprint++" / "noiseprint++.th"
needs_reference = pytest.mark.skipif(not imdlbenco_available(), reason="IMDL-BenCo (test-only reference) not installed")
needs_npp = pytest.mark.skipif(not NOISEPRINTPP.is_file(), reason="../shared/weights/noiseprint++/noiseprint++.th is absent")


def randomised(sd: dict, seed: int, scale: float = 0.02) -> dict:
    """Perturb every float tensor so that no weight keeps its (often zero or one) initial value;
    BatchNorm variances stay positive."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, v in sd.items():
        if not v.is_floating_point():
            out[k] = v
        elif k.endswith("running_var"):
            out[k] = v * torch.empty(v.shape).uniform_(0.5, 1.5, generator=g)
        else:
            out[k] = v + scale * torch.randn(v.shape, generator=g)
    return out


def small_image(examples, h: int = 72, w: int = 104) -> torch.Tensor:
    """A crop of the spliced example as RGB / 256 (the official input convention), (1, 3, h, w)."""
    from PIL import Image

    rgb = np.asarray(Image.open(examples["splice"][0]).convert("RGB"))[40:40 + h, 60:60 + w]
    return torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1))[None].astype(np.float32) / 256.0)


def test_architecture_matches_the_official_checkpoint_exactly():
    with torch.device("meta"):
        ours = {k: list(v.shape) for k, v in TruFor().state_dict().items()}
    official = json.loads(MANIFEST.read_text())["keys"]
    missing, unexpected = sorted(set(official) - set(ours)), sorted(set(ours) - set(official))
    wrong = sorted(k for k in set(ours) & set(official) if ours[k] != official[k])
    assert not (missing or unexpected or wrong), f"missing {missing[:5]}, unexpected {unexpected[:5]}, shapes {wrong[:5]}"
    assert sum(np.prod(s) for k, s in ours.items() if "num_batches" not in k) == pytest.approx(68.71e6, rel=1e-3)


def _compare(ref, predict, ours: TruFor, x: torch.Tensor) -> dict[str, float]:
    with torch.inference_mode():
        theirs = predict(ref, x)
        mine = ours.predict(x)
    assert mine["map"].shape == theirs["map"].shape == (1, 1) + tuple(x.shape[-2:])
    assert float(theirs["map"].std()) > 1e-4 and float(theirs["confidence"].std()) > 1e-4  # maps with structure
    return {k: float((mine[k] - theirs[k]).abs().max()) for k in ("map", "confidence", "score")}


@needs_reference
def test_parity_with_imdlbenco_random_weights(examples):
    ref, predict = build_reference("trufor")
    ref.load_state_dict(randomised(ref.state_dict(), seed=0))
    ref.eval()
    ours = TruFor().eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    diffs = _compare(ref, predict, ours, small_image(examples))
    assert max(diffs.values()) <= 1e-4, diffs
    # the decoders' BatchNorm epsilon is the release's: 1e-3 (anomaly head), 1e-5 (confidence head)
    assert ref.decode_head.linear_fuse[1].eps == ours.decode_head.linear_fuse[1].eps == 1e-3
    assert ref.decode_head_conf.linear_fuse[1].eps == ours.decode_head_conf.linear_fuse[1].eps == 1e-5


@needs_reference
@needs_npp
def test_real_noiseprintpp_weights_load_and_match_the_reference(examples):
    from imlforensics.weights import extract_state_dict, read_checkpoint

    state, _ = extract_state_dict(read_checkpoint(NOISEPRINTPP)["network"])  # weights-only unpickling, cuda:0 -> cpu
    ref, predict = build_reference("trufor")
    ref.load_state_dict(randomised(ref.state_dict(), seed=1))
    ref.dncnn.load_state_dict(state, strict=True)
    ref.eval()
    ours = TruFor().eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = small_image(examples)
    with torch.inference_mode():
        npp, npp_ref = ours.noiseprint(x), ref.dncnn(x)
    assert float((npp - npp_ref).abs().max()) <= 1e-5
    # a noise residual, not the image: small, zero-mean, nearly uncorrelated with the luminance
    luma = x.mean(1, keepdim=True)
    corr = torch.corrcoef(torch.stack([npp.flatten(), luma.flatten()]))[0, 1]
    assert 0.01 < float(npp.std()) < 1.0 and abs(float(npp.mean())) < 0.5 and abs(float(corr)) < 0.5
    diffs = _compare(ref, predict, ours, x)
    assert max(diffs.values()) <= 1e-4, diffs


def test_folded_decoders_equal_the_layer_by_layer_path_and_follow_new_weights():
    torch.manual_seed(0)
    model = TruFor().eval()
    for p in model.parameters():
        p.requires_grad_(False)
    x = torch.rand(1, 3, 64, 96)
    scores = []
    for seed in (1, 2):
        model.load_state_dict(randomised(model.state_dict(), seed))
        plain = model(x)  # grad mode on: the plain path
        with torch.inference_mode():
            folded = model(x)
        for a, b in zip(plain, folded):
            assert float((a - b).abs().max()) < 1e-4
        scores.append(folded[0])
    assert float((scores[0] - scores[1]).abs().max()) > 1e-3  # the folded weights followed the new ones
    # Noiseprint++ in tiles with 17 px of context gives the same residual (24 px tiles here: 3 x 4 of them)
    model.npp_tile = 24
    with torch.inference_mode():
        tiled_npp, whole = model.noiseprint(x), model.dncnn(x)
    assert float((tiled_npp - whole).abs().max()) < 1e-5 and float(whole.std()) > 1e-3


if __name__ == "__main__" and "--write-manifest" in sys.argv:
    ref, _ = build_reference("trufor")
    MANIFEST.write_text(json.dumps({
        "model": "trufor",
        "source": "Keys and shapes of the TruFor network of IMDL-BenCo 0.1.45 (model_zoo/trufor: its copy of the "
                  "authors' test_docker builder, configured by its trufor.yaml), which load_state_dict(strict=True) "
                  "reads the official trufor.pth.tar's ['state_dict'] into (grip-unina/TruFor test_docker/src/"
                  "trufor_test.py). Regenerate with: python tests/test_model_trufor.py --write-manifest",
        "keys": {k: list(v.shape) for k, v in ref.state_dict().items()}}, indent=0) + "\n")


def test_a_large_image_is_split_into_windows_to_bound_memory(tmp_path, monkeypatch):
    """Full-resolution TruFor needs memory in proportion to the pixels: above full_res_limit_mp the
    detector analyses windows of the card's size (and says so), and its memory estimate is one
    window's; full_res_limit_mp=0 keeps one pass and the estimate grows with the image."""
    from safetensors.torch import save_file

    from imlforensics import load_detector
    from imlforensics.io.image import as_image

    path = tmp_path / "trufor.safetensors"
    save_file({k: v.contiguous() for k, v in TruFor().state_dict().items()}, str(path))
    seen: list[tuple[int, int]] = []

    def fake_outputs(self, rgb):
        seen.append(rgb.shape[:2])
        return {"map": np.full(rgb.shape[:2], 0.25, np.float32), "layers": {"confidence": np.ones(rgb.shape[:2], np.float32)},
                "score": 0.5}

    from imlforensics.detectors.deep import DeepDetector

    monkeypatch.setattr(DeepDetector, "outputs", fake_outputs)
    big = as_image(np.zeros((1500, 1400, 3), np.uint8))  # 2.1 MP
    det = load_detector("trufor", weights=str(path), device="cpu", full_res_limit_mp=1.0)
    pred = det.predict(big)
    assert len(seen) == 4 and all(s[0] <= 1024 and s[1] <= 1024 for s in seen)
    assert pred.heatmap.shape == (1500, 1400) and np.allclose(pred.heatmap, 0.25)
    assert any("windows of 1024 px" in n for n in pred.notes)
    assert det.memory_needed(big) < 1024 * 1024 * 900 + 1500 * 1400 * 16
    seen.clear()
    one = load_detector("trufor", weights=str(path), device="cpu", full_res_limit_mp=0)
    pred = one.predict(big)
    assert seen == [(1500, 1400)] and not any("windows" in n for n in pred.notes)
    assert one.memory_needed(big) >= 1500 * 1400 * 800
    small = as_image(np.zeros((600, 500, 3), np.uint8))  # under the limit: one pass, as the authors run it
    seen.clear()
    det.predict(small)
    assert seen == [(600, 500)]
    from imlforensics.errors import ImlfError

    with pytest.raises(ImlfError, match="full_res_limit_mp"):
        load_detector("trufor", weights=str(path), device="cpu", full_res_limit_mp=-1)
