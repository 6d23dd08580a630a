"""Deep detectors: a published network with its official weights behind the common detector contract.

Every model card in ``weights/`` becomes a registered detector (``mesorch``, ``sparsevit``,
``iml-vit``, ...). The card says which ``torch.nn.Module`` to build and how the official pipeline
prepares an image and reads the output; this module only runs that recipe:

1. preprocess the stored pixels exactly as the official pipeline (``models/preprocess.py``);
2. forward under ``torch.inference_mode()`` (fp32; ``half=True`` runs under bf16 autocast);
3. sigmoid, then the map is brought back to the image's resolution.

By default the official behaviour is kept for large images (Mesorch and SparseViT resize them to
their input size; IML-ViT analyses only the top-left 1024 x 1024 window, and the output says so). ``tile=True`` instead slides windows of the native input size over the full-resolution
image (overlap ``tile_overlap``) and blends their maps, so a 12-megapixel photo is analysed at its
own resolution. No model has an image-level head, so the image score is the map's maximum.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ImlfError
from ..io.image import ImageData
from ..models.preprocess import blend_weight, preprocess, restore, tiles
from ..weights.cards import ModelCard, all_cards
from .base import Detector
from .registry import register_detector

DEVICES = ("auto", "cpu", "cuda", "mps")


def resolve_device(device: str) -> str:
    """'auto' picks cuda, then mps, then cpu; an unavailable device is a clear error."""
    import torch

    device = str(device).lower()
    if device not in DEVICES and not device.startswith("cuda:"):
        raise ValueError(f"unknown device {device!r} (use one of {', '.join(DEVICES)})")
    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ImlfError("device cuda was asked for but PyTorch sees no CUDA GPU here (use --device cpu or auto)")
    if device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ImlfError("device mps was asked for but it is not available here (use --device cpu or auto)")
    return device


class DeepDetector(Detector):
    """A network from a model card. Options: ``weights`` (a file instead of the cache), ``device``
    (auto|cpu|cuda|mps), ``tile`` (sliding windows at native resolution), ``tile_overlap`` (0.25),
    ``half`` (bf16 autocast; fp16 on mps)."""

    kind = "deep"
    card: ModelCard

    def __init__(self, weights: str | Path | None = None, device: str = "auto", tile: bool = False,
                 tile_overlap: float = 0.25, half: bool = False) -> None:
        import torch

        from ..weights.convert import load_weights

        if not 0.0 <= float(tile_overlap) < 1.0:
            raise ValueError("tile_overlap must be in [0, 1)")
        self.device = resolve_device(device)
        self.tile, self.tile_overlap, self.half = bool(tile), float(tile_overlap), bool(half)
        state, self.weights_info = load_weights(self.name, Path(weights) if weights else None)
        model = self.card.build()
        model.load_state_dict(state, strict=True)
        del state
        self.model = model.to(self.device).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.size = int(self.card.preprocess["size"])
        self._dtype = torch.float16 if self.device == "mps" else torch.bfloat16

    def _forward(self, x: np.ndarray) -> np.ndarray:
        import torch

        t = torch.from_numpy(x).to(self.device)
        with torch.inference_mode():
            if self.half:
                with torch.autocast(device_type=self.device.split(":")[0], dtype=self._dtype):
                    logits = self.model(t)
            else:
                logits = self.model(t)
            prob = torch.sigmoid(logits.float())
        return prob[0, 0].cpu().numpy()

    def probability_map(self, rgb: np.ndarray) -> np.ndarray:
        """The official pipeline on one uint8 RGB array: a float32 map at its resolution."""
        x, meta = preprocess(rgb, self.card.preprocess)
        self._cropped = meta.cropped
        return restore(self._forward(x), meta)

    def analyse(self, img: ImageData) -> tuple[np.ndarray, float, dict[str, Any]]:
        rgb = img.pixels
        h, w = rgb.shape[:2]
        windows = tiles(h, w, self.size, self.tile_overlap) if self.tile else []
        if len(windows) > 1:
            acc = np.zeros((h, w), np.float32)
            norm = np.zeros((h, w), np.float32)
            for y0, x0, y1, x1 in windows:
                wgt = blend_weight(y1 - y0, x1 - x0)
                acc[y0:y1, x0:x1] += wgt * self.probability_map(np.ascontiguousarray(rgb[y0:y1, x0:x1]))
                norm[y0:y1, x0:x1] += wgt
            heat = acc / norm
        else:
            heat = self.probability_map(rgb)
        notes = []
        if len(windows) <= 1 and getattr(self, "_cropped", False):
            notes.append(f"as in the official {self.name} pipeline, only the top-left {self.size}x{self.size} "
                         "pixels were analysed (the rest of the map is 0); --tile analyses the whole image")
        src = self.weights_info.get("source", {})
        extras = {"notes": notes, "device": self.device, "precision": "bf16-autocast" if self.half else "fp32",
                  "tiles": max(1, len(windows)), "input_size": self.size,
                  "weights": {k: src.get(k) for k in ("kind", "file", "repo", "sha256") if src.get(k)}}
        return heat, float(heat.max()), extras

    @classmethod
    def weights_status(cls) -> str:
        from ..weights.cache import cached_weights, sidecar

        if cached_weights(cls.name) is None:
            return "not cached"
        src = sidecar(cls.name).get("source", {})
        return f"cached ({src.get('repo') or src.get('file') or 'unknown source'})"


def register_cards() -> None:
    """Register one DeepDetector subclass per model card."""
    for name, card in all_cards().items():
        if card.kind != "detector":
            continue
        attrs = {"name": name, "card": card, "license": card.license, "paper": card.paper, "cite": card.cite,
                 "summary": card.summary, "needs": "any image", "__doc__": DeepDetector.__doc__}
        cls_name = "".join(p.capitalize() for p in name.replace("_", "-").split("-")) + "Detector"
        register_detector(type(cls_name, (DeepDetector,), attrs))
