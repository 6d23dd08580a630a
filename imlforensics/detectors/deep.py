"""Deep detectors: a published network with its official weights behind the common detector contract.

Every model card in ``weights/`` becomes a registered detector (``mesorch``, ``sparsevit``,
``iml-vit``, ...). The card says which ``torch.nn.Module`` to build and how the official pipeline
prepares an image and reads the output; this module only runs that recipe:

1. preprocess the stored pixels exactly as the official pipeline (``models/preprocess.py``);
2. forward under ``torch.inference_mode()`` (fp32; ``half=True`` runs under bf16 autocast);
3. sigmoid (or the model's own ``predict``: TruFor's softmax map, confidence and score), then the
   map is brought back to the image's resolution.

By default the official behaviour is kept for large images (Mesorch and SparseViT resize them to
their input size; IML-ViT analyses only the top-left 1024 x 1024 window, and the output says so). ``tile=True`` instead slides windows of the native input size over the full-resolution
image (overlap ``tile_overlap``) and blends their maps, so a 12-megapixel photo is analysed at its
own resolution. A full-resolution model (TruFor) needs memory in proportion to the pixels (the card's
``bytes_per_pixel``, measured); above ``full_res_limit_mp`` megapixels (default 2.5, so that a
12 MP photo stays under 3 GB) it is analysed in such windows automatically and the output says so
(``full_res_limit_mp=0`` keeps the whole image in one pass). The image score is the map's maximum unless the card's ``image_score`` is ``head``
(TruFor: its detection head's integrity score; with tiles, the largest over the windows). Extra
maps a model gives (TruFor's confidence) become layers of the prediction.
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
                 tile_overlap: float = 0.25, half: bool = False, full_res_limit_mp: float = 2.5) -> None:
        import torch

        from ..weights.convert import load_weights

        if not 0.0 <= float(tile_overlap) < 1.0:
            raise ValueError("tile_overlap must be in [0, 1)")
        if not float(full_res_limit_mp) >= 0:
            raise ValueError("full_res_limit_mp must be a number >= 0 (0: never split the image)")
        self.full_res_limit = float(full_res_limit_mp) * 1e6
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

    def _forward(self, x: np.ndarray) -> dict[str, Any]:
        """One forward pass: ``map`` (S, S) and any named extra maps as float32 arrays, plus
        ``score`` when the model has an image-level head. A model with a ``predict`` method
        (TruFor) gives its own probabilities; otherwise the output is a logit map (sigmoid)."""
        import torch

        t = torch.from_numpy(x).to(self.device)
        with torch.inference_mode():
            if self.half:
                with torch.autocast(device_type=self.device.split(":")[0], dtype=self._dtype):
                    out = self._run(t)
            else:
                out = self._run(t)
        res: dict[str, Any] = {"layers": {}}
        for key, value in out.items():
            if key == "score":
                res["score"] = float(value.float().reshape(-1)[0])
            else:
                arr = value[0, 0].float().cpu().numpy()
                if key == "map":
                    res["map"] = arr
                else:
                    res["layers"][key] = arr
        return res

    def _run(self, t: Any) -> dict[str, Any]:
        import torch

        if hasattr(self.model, "predict"):
            return self.model.predict(t)
        return {"map": torch.sigmoid(self.model(t).float())}

    def outputs(self, rgb: np.ndarray) -> dict[str, Any]:
        """The official pipeline on one uint8 RGB array: ``map`` and ``layers`` (float32, at its
        resolution) and, for a model with an image-level head, ``score``."""
        x, meta = preprocess(rgb, self.card.preprocess)
        self._cropped = meta.cropped
        res = self._forward(x)
        res["map"] = restore(res["map"], meta)
        res["layers"] = {k: restore(v, meta) for k, v in res["layers"].items()}
        return res

    def probability_map(self, rgb: np.ndarray) -> np.ndarray:
        """The official pipeline on one uint8 RGB array: a float32 map at its resolution."""
        return self.outputs(rgb)["map"]

    def analyse(self, img: ImageData) -> tuple[np.ndarray, float, dict[str, Any]]:
        rgb = img.pixels
        h, w = rgb.shape[:2]
        auto = self._auto_tile(h, w)
        windows = tiles(h, w, self.size, self.tile_overlap) if self.tile or auto else []
        scores: list[float] = []
        if len(windows) > 1:
            acc: dict[str, np.ndarray] = {}
            norm = np.zeros((h, w), np.float32)
            for y0, x0, y1, x1 in windows:
                wgt = blend_weight(y1 - y0, x1 - x0)
                res = self.outputs(np.ascontiguousarray(rgb[y0:y1, x0:x1]))
                for key, m in [("map", res["map"])] + list(res["layers"].items()):
                    acc.setdefault(key, np.zeros((h, w), np.float32))[y0:y1, x0:x1] += wgt * m
                norm[y0:y1, x0:x1] += wgt
                if "score" in res:
                    scores.append(res["score"])
            heat = acc.pop("map") / norm
            layers = {k: v / norm for k, v in acc.items()}
        else:
            res = self.outputs(rgb)
            heat, layers = res["map"], res["layers"]
            if "score" in res:
                scores.append(res["score"])
        notes = []
        if auto and len(windows) > 1:
            notes.append(f"the image ({h * w / 1e6:.1f} MP) is above the {self.full_res_limit / 1e6:g} MP that "
                         f"{self.name} analyses in one pass within 3 GB: analysed in {len(windows)} windows of "
                         f"{self.size} px (option full_res_limit_mp=0 for one pass)")
        if len(windows) <= 1 and getattr(self, "_cropped", False):
            notes.append(f"as in the official {self.name} pipeline, only the top-left {self.size}x{self.size} "
                         "pixels were analysed (the rest of the map is 0); --tile analyses the whole image")
        head = str(self.card.postprocess.get("image_score", "max")) == "head" and bool(scores)
        if head and len(scores) > 1:
            notes.append(f"image score: the largest of the detection head's scores over {len(scores)} windows")
        src = self.weights_info.get("source", {})
        full_res = self.card.preprocess.get("mode") == "full" and len(windows) <= 1
        extras = {"notes": notes, "device": self.device, "precision": "bf16-autocast" if self.half else "fp32",
                  "tiles": max(1, len(windows)), "input_size": "full resolution" if full_res else self.size,
                  "image_score": "detection head" if head else "map maximum",
                  "weights": {k: src.get(k) for k in ("kind", "file", "repo", "sha256") if src.get(k)}}
        if layers:
            extras["_layers"] = layers
        return heat, float(max(scores)) if head else float(heat.max()), extras

    def _full_res(self) -> bool:
        return self.card.preprocess.get("mode") == "full"

    def _auto_tile(self, h: int, w: int) -> bool:
        return self._full_res() and not self.tile and self.full_res_limit > 0 and h * w > self.full_res_limit

    def memory_needed(self, img: ImageData) -> int:
        per_px = float(self.card.preprocess.get("bytes_per_pixel", self.bytes_per_pixel))
        if not self._full_res():
            return super().memory_needed(img)
        pixels = img.width * img.height
        if self.tile or self._auto_tile(img.height, img.width):  # one window at a time, maps kept whole
            return int(min(pixels, self.size * self.size) * per_px + pixels * 16)
        return int(pixels * per_px)

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
