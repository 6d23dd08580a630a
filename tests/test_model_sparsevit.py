"""SparseViT: the official checkpoint's keys and shapes, parity with IMDL-BenCo, sparse grouping, folded BatchNorm."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from imlforensics.models.reference import build_reference, imdlbenco_available
from imlforensics.models.sparsevit import Attention, SparseViT

MANIFEST = Path(__file__).parent / "manifests" / "sparsevit.json"
needs_reference = pytest.mark.skipif(not imdlbenco_available(), reason="IMDL-BenCo (test-only reference) not installed")


def randomised(sd: dict, seed: int) -> dict:
    """Perturb every float tensor (BatchNorm variances kept positive)."""
    g = torch.Generator().manual_seed(seed)
    out = {k: v + 0.02 * torch.randn(v.shape, generator=g) if v.is_floating_point() else v for k, v in sd.items()}
    return {k: v.abs() + 0.5 if k.endswith("running_var") else v for k, v in out.items()}


def test_architecture_matches_the_official_checkpoint_exactly():
    with torch.device("meta"):
        ours = {k: list(v.shape) for k, v in SparseViT().state_dict().items()}
    official = json.loads(MANIFEST.read_text())["keys"]
    missing, unexpected = sorted(set(official) - set(ours)), sorted(set(ours) - set(official))
    wrong = sorted(k for k in set(ours) & set(official) if ours[k] != official[k])
    assert not (missing or unexpected or wrong), f"missing {missing[:5]}, unexpected {unexpected[:5]}, shapes {wrong[:5]}"
    n = sum(np.prod(s) for k, s in ours.items() if not k.endswith(("running_mean", "running_var", "num_batches_tracked")))
    assert n == pytest.approx(50.35e6, rel=2e-3)


def test_sparse_attention_only_mixes_tokens_of_the_same_dilated_group():
    torch.manual_seed(0)
    attn = Attention(64, 1).eval()
    x = torch.randn(1, 8, 8, 64)
    with torch.no_grad():
        base = attn(x, sparse=4)  # 8x8 tokens, blocks of 2: group (a, b) = tokens (2i + a, 2j + b)
        x2 = x.clone()
        x2[0, 0, 0] += 5.0  # a member of group (0, 0)
        moved = (attn(x2, sparse=4) - base).abs().sum(-1)[0] > 1e-6
    expected = torch.zeros(8, 8, dtype=torch.bool)
    expected[0::2, 0::2] = True
    assert torch.equal(moved, expected)


@needs_reference
def test_parity_with_imdlbenco_on_an_example_image(examples):
    from PIL import Image

    from imlforensics.weights.cards import load_card
    from imlforensics.models.preprocess import preprocess

    ref, predict = build_reference("sparsevit")
    ref.load_state_dict(randomised(ref.state_dict(), seed=0))
    ours = SparseViT().eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    rgb = np.asarray(Image.open(examples["copymove"][0]).convert("RGB"))
    x, _ = preprocess(rgb, load_card("sparsevit").preprocess)
    import cv2

    official = (cv2.resize(rgb, (512, 512), interpolation=cv2.INTER_LINEAR).astype(np.float32)
                - np.array([0.485, 0.456, 0.406], np.float32) * 255) / (np.array([0.229, 0.224, 0.225], np.float32) * 255)
    assert np.abs(x - official.transpose(2, 0, 1)[None]).max() < 1e-5
    x = torch.from_numpy(x)
    with torch.inference_mode():
        theirs = predict(ref, x)
        mine = torch.sigmoid(ours(x))
    assert mine.shape == theirs.shape == (1, 1, 512, 512)
    assert float(theirs.std()) > 1e-3
    assert float((mine - theirs).abs().max()) < 1e-4


def test_folded_batchnorm_equals_the_plain_path_and_follows_new_weights():
    torch.manual_seed(0)
    model = SparseViT(size=512).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    x = torch.randn(1, 3, 512, 512)
    blocks = model.encoder_net.blocks1
    feats = model.encoder_net.patch_embed1(x)
    outs = []
    for seed in (1, 2):
        model.load_state_dict(randomised(model.state_dict(), seed))
        plain = blocks[0](feats)  # grad mode on: BatchNorm applied as such
        with torch.inference_mode():
            folded = blocks[0](feats)
        assert float((plain - folded).abs().max()) < 1e-4
        outs.append(folded)
    assert float((outs[0] - outs[1]).abs().max()) > 1e-3


if __name__ == "__main__" and "--write-manifest" in sys.argv:
    ref, _ = build_reference("sparsevit")
    data = json.loads(MANIFEST.read_text())
    data["keys"] = {k: list(v.shape) for k, v in ref.state_dict().items()}
    MANIFEST.write_text(json.dumps(data, indent=0) + "\n")
