"""Learned feature comparison for make-mask: deep features of both copies, compared place by place.

MMM (Manipulation Mask Manufacturer, arXiv 2407.03695) compares the embeddings of the two images
of a pair to model context that pixel differences miss. Here the intermediate feature maps of an
ImageNet-trained backbone (by default ConvNeXt-T, Liu et al., "A ConvNet for the 2020s", CVPR
2022, through timm) are computed for the registered, tone- and detail-matched copies, and their
cosine distance at strides 8 and 16 says where the *content* differs: a measure that
recompression and resampling barely move, and that sees an object replaced by a similar-looking
one. It enters change detection (:func:`.change.change_map`) as one more coarse measure, read
against its own tail on the unchanged pixels like the others.

The backbone's weights are handled like the detectors' (model cards of ``kind = "features"``,
``imlf weights import|pull``, safetensors, a safe unpickler); without them make-mask runs its
classical measures only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .detail import budget_factor

MAX_PIXELS = 500_000  # copies are compared at most this large (the features are coarse anyway)


def backbone(model: str, **options: Any):
    """The architecture of a ``features`` card: the timm model ``model``, random weights."""
    import timm

    return timm.create_model(model, pretrained=False, **options)


class FeatureComparer:
    """A backbone ready to compare two aligned copies."""

    def __init__(self, net: Any, name: str, device: str, indices: list[int], mean: list[float], std: list[float]):
        self.net, self.name, self.device = net, name, device
        self.indices = indices
        self.mean = np.array(mean, np.float32) * 255.0
        self.std = np.array(std, np.float32) * 255.0

    @classmethod
    def load(cls, name: str, weights: str | Path | None = None, device: str = "auto") -> "FeatureComparer":
        """The backbone of card ``name`` with its cached weights (or ``weights``, a file)."""
        import torch

        from ..detectors.deep import resolve_device
        from ..weights.convert import load_model

        card, tensors = load_model(name, "features", "a feature backbone", weights)
        net = card.build()
        net.load_state_dict(tensors, strict=True)
        dev = resolve_device(device)
        net.to(torch.device(dev)).eval()
        pre = card.preprocess
        return cls(net, name, dev, list(pre.get("indices", [1, 2])), list(pre.get("mean", [0.485, 0.456, 0.406])),
                   list(pre.get("std", [0.229, 0.224, 0.225])))

    def distance(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """One minus the cosine similarity of the two copies' features (RGB float or uint8 in 0..255,
        one shape), averaged over the feature levels, at every pixel: (H, W) float32 in [0, 2]."""
        import torch

        h, w = a.shape[:2]
        f = budget_factor((h, w), MAX_PIXELS)
        size = (max(32, round(w * f)), max(32, round(h * f)))
        batch = np.stack([(cv2.resize(np.asarray(x, np.float32), size, interpolation=cv2.INTER_AREA) - self.mean) / self.std
                          for x in (a, b)])
        x = torch.from_numpy(batch).permute(0, 3, 1, 2).to(self.device)
        with torch.inference_mode():
            levels = self.net.forward_intermediates(x, indices=self.indices, intermediates_only=True)
            out = torch.zeros((1, 1, h, w), device=self.device)
            for fmap in levels:
                cos = torch.nn.functional.cosine_similarity(fmap[0:1].float(), fmap[1:2].float(), dim=1, eps=1e-6)
                out += torch.nn.functional.interpolate((1.0 - cos)[:, None], size=(h, w), mode="bilinear",
                                                       align_corners=False)
        return (out[0, 0] / len(levels)).cpu().numpy().astype(np.float32)
