"""The official pre- and postprocessing of each deep model, driven by its model card.

Three layouts cover the models we ship (see the ``[preprocess]`` table of each card):

* ``resize``: the image is resized to ``size`` x ``size`` with OpenCV (the interpolation the
  official pipeline uses, on uint8 pixels as albumentations does), then normalised; the model's
  ``size`` x ``size`` map is resized back to the image's resolution.
* ``pad``: the image is zero-padded at the bottom and right to ``size`` x ``size``; the map is
  cropped back to the image's window. An image with a side longer than ``size`` is handled as the
  card's ``large`` says: ``crop`` (IML-ViT's official pipeline) analyses only its top-left
  ``size`` x ``size`` and leaves the rest of the map at 0; ``resize`` shrinks it so that its long
  side is ``size`` and resizes the map back.

* ``full``: the image at its own resolution, divided by ``scale`` (TruFor: 256, as its official
  test loader does) then normalised by ``mean``/``std`` (default 0 and 1: none); the map is
  already at the image's resolution. ``size`` is then only the window of the tiled mode.

``tiles`` gives the sliding windows of the optional tiled mode: windows of the model's native size
over the full-resolution image with overlap, blended by :func:`blend_weight`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

_INTERPOLATION = {"linear": cv2.INTER_LINEAR, "nearest": cv2.INTER_NEAREST, "cubic": cv2.INTER_CUBIC,
                  "area": cv2.INTER_AREA, "lanczos": cv2.INTER_LANCZOS4}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class Meta:
    """How an image was brought to the model's input, so the map can be brought back."""

    height: int
    width: int
    mode: str
    inner: tuple[int, int]  # (h, w) of the image inside the model input (pad mode)
    resized: bool
    cropped: bool = False  # pad mode, large="crop": only the top-left window was analysed


def _interp(cfg: dict[str, Any]) -> int:
    return _INTERPOLATION[str(cfg.get("interpolation", "linear"))]


def preprocess(rgb: np.ndarray, cfg: dict[str, Any]) -> tuple[np.ndarray, Meta]:
    """uint8 RGB (H, W, 3) -> normalised float32 (1, 3, S, S) model input and the :class:`Meta` to undo it."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError("preprocess expects an (H, W, 3) uint8 RGB array")
    mode, size = str(cfg.get("mode", "resize")), int(cfg["size"])
    full = mode == "full"
    mean = np.asarray(cfg.get("mean", (0.0, 0.0, 0.0) if full else IMAGENET_MEAN), np.float32)
    std = np.asarray(cfg.get("std", (1.0, 1.0, 1.0) if full else IMAGENET_STD), np.float32)
    h, w = rgb.shape[:2]
    if full:
        x = (rgb.astype(np.float32) / float(cfg.get("scale", 255.0)) - mean) / std
        meta = Meta(h, w, mode, (h, w), False)
    elif mode == "resize":
        img = rgb if (h, w) == (size, size) else cv2.resize(rgb, (size, size), interpolation=_interp(cfg))
        x = (img.astype(np.float32) / 255.0 - mean) / std
        meta = Meta(h, w, mode, (size, size), (h, w) != (size, size))
    elif mode == "pad":
        img, resized, cropped = rgb, False, False
        large = str(cfg.get("large", "resize"))
        if large not in ("crop", "resize"):
            raise ValueError(f"unknown large-image policy {large!r}")
        if max(h, w) > size and large == "crop":
            img, cropped = rgb[:size, :size], True
        elif max(h, w) > size:
            scale = size / max(h, w)
            nh, nw = min(size, max(1, round(h * scale))), min(size, max(1, round(w * scale)))
            img, resized = cv2.resize(rgb, (nw, nh), interpolation=_interp(cfg)), True
        ih, iw = img.shape[:2]
        x = np.zeros((size, size, 3), np.float32)
        if cfg.get("pad_after_normalize", False):
            x[:ih, :iw] = (img.astype(np.float32) / 255.0 - mean) / std
        else:
            x = (x - mean) / std
            x[:ih, :iw] = (img.astype(np.float32) / 255.0 - mean) / std
        meta = Meta(h, w, mode, (ih, iw), resized, cropped)
    else:
        raise ValueError(f"unknown preprocessing mode {mode!r}")
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None], dtype=np.float32), meta


def restore(prob: np.ndarray, meta: Meta) -> np.ndarray:
    """The model's (S, S) probability map back at the image's (H, W)."""
    prob = np.asarray(prob, np.float32)
    if meta.mode == "pad":
        prob = prob[: meta.inner[0], : meta.inner[1]]
    if meta.cropped:
        full = np.zeros((meta.height, meta.width), np.float32)
        full[: prob.shape[0], : prob.shape[1]] = prob
        return np.clip(full, 0.0, 1.0)
    if prob.shape != (meta.height, meta.width):
        prob = cv2.resize(prob, (meta.width, meta.height), interpolation=cv2.INTER_LINEAR)
    return np.clip(prob, 0.0, 1.0)


def tiles(height: int, width: int, size: int, overlap: float) -> list[tuple[int, int, int, int]]:
    """Windows (y0, x0, y1, x1) of side ``size`` covering the image, neighbours overlapping by ``overlap``."""
    if not 0.0 <= overlap < 1.0:
        raise ValueError("tile overlap must be in [0, 1)")
    stride = max(1, int(round(size * (1.0 - overlap))))

    def starts(n: int) -> list[int]:
        if n <= size:
            return [0]
        out = list(range(0, n - size, stride))
        out.append(n - size)
        return out

    return [(y, x, min(y + size, height), min(x + size, width)) for y in starts(height) for x in starts(width)]


def blend_weight(h: int, w: int) -> np.ndarray:
    """A window that is 1 in the middle and falls towards the edges (never 0), for overlap blending."""

    def ramp(n: int) -> np.ndarray:
        r = np.minimum(np.arange(n) + 1, np.arange(n)[::-1] + 1).astype(np.float32)
        return np.minimum(r / max(1.0, n / 4.0), 1.0)

    return np.outer(ramp(h), ramp(w)).astype(np.float32)
