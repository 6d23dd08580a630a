"""Learned super-resolution for make-mask: enlarge a smaller original before it is compared.

MMM (Manipulation Mask Manufacturer, arXiv 2407.03695) super-resolves the lower-resolution copy
of a pair so that both are compared at the same level of detail. Here the original, when it is
smaller than the tampered copy, is enlarged by an ESRGAN-family or SwinIR-family model (Wang et
al., ESRGAN, ECCV-W 2018; Real-ESRGAN, ICCV-W 2021; Liang et al., SwinIR, ICCV-W 2021) before
registration's warp brings it onto the tampered frame. The checkpoint's architecture is
recognised by spandrel from its keys and shapes; weights are handled as the detectors' are
(``imlf weights import|pull``, model cards of ``kind = "super-resolution"``, a safe unpickler).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ImlfError
from .register import Registration

TILE = 256  # input tile side: memory stays bounded whatever the image size
PAD = 16  # context around each tile, cut away after enlarging


class Upscaler:
    """A super-resolution model ready to enlarge RGB images by its scale."""

    def __init__(self, model: Any, name: str, device: str):
        self.model, self.name, self.device = model, name, device
        self.scale = int(model.scale)
        self._last: tuple[np.ndarray, np.ndarray] | None = None

    @classmethod
    def load(cls, name: str, weights: str | Path | None = None, device: str = "auto") -> "Upscaler":
        """The model of card ``name`` with its cached weights (or ``weights``, a file)."""
        import spandrel
        import torch

        from ..detectors.deep import resolve_device
        from ..weights.convert import load_model

        card, tensors = load_model(name, "super-resolution", "a super-resolution model", weights)
        try:
            desc = spandrel.ModelLoader().load_from_state_dict(tensors)
        except Exception as exc:  # spandrel raises several kinds for unknown or broken state dicts
            raise ImlfError(f"{name}: spandrel cannot build the model from these weights ({exc})") from None
        want = card.arch_options.get("scale")
        if want and int(want) != int(desc.scale):
            raise ImlfError(f"{name}: the weights enlarge by {desc.scale}, the card says {want}")
        dev = resolve_device(device)
        desc.to(torch.device(dev)).eval()
        return cls(desc, name, dev)

    def upscale(self, rgb: np.ndarray) -> np.ndarray:
        """``rgb`` (uint8) enlarged by the model's scale, tile by tile, as uint8."""
        import torch

        h, w = rgb.shape[:2]
        s = self.scale
        out = np.zeros((h * s, w * s, 3), np.uint8)
        x = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].float().div(255.0)
        with torch.inference_mode():
            for y0 in range(0, h, TILE):
                for x0 in range(0, w, TILE):
                    y1, x1 = min(h, y0 + TILE), min(w, x0 + TILE)
                    py0, px0, py1, px1 = max(0, y0 - PAD), max(0, x0 - PAD), min(h, y1 + PAD), min(w, x1 + PAD)
                    tile = x[:, :, py0:py1, px0:px1].to(self.device)
                    y = self.model(tile).clamp(0, 1)[0].permute(1, 2, 0).float().cpu().numpy()
                    cy, cx = (y0 - py0) * s, (x0 - px0) * s
                    out[y0 * s:y1 * s, x0 * s:x1 * s] = np.rint(
                        255.0 * y[cy:cy + (y1 - y0) * s, cx:cx + (x1 - x0) * s])
        return out

    def enlarge(self, original: np.ndarray, reg: Registration) -> tuple[np.ndarray, Registration, dict]:
        """The original enlarged (once per image: later calls reuse it), the registration onto it,
        and a note for the report."""
        if self._last is None or self._last[0] is not original:
            self._last = (original, self.upscale(original))
        big = self._last[1]
        f = big.shape[1] / original.shape[1]
        to_big = np.array([[f, 0, 0.5 * f - 0.5], [0, f, 0.5 * f - 0.5], [0, 0, 1.0]])
        return big, replace(reg, matrix=to_big @ reg.matrix), {"model": self.name, "scale": self.scale,
                                                               "device": self.device}
