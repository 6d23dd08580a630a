"""The contract every detector meets, classical or deep.

A detector takes one image and returns a :class:`Prediction`: a float32 heatmap in [0, 1] at the
image's own resolution (high = tampered) and an image-level score in [0, 1]. Detectors that cannot
analyse an input (a JPEG-only method given a PNG, a deep model without weights) raise
:class:`~imlforensics.errors.NotApplicable` with the reason.

A detector that can analyse the image but finds no trace of the kind it sees (``dq`` without
double-compression evidence, ``copymove`` without a duplicated region, ``jpeg-grid`` without a JPEG
grid) returns its (empty) map with ``applicable`` False, set by ``extras["applicable"] = False`` in
:meth:`Detector.analyse`: its silence then says nothing either way, and a committee counts it as an
abstention rather than as evidence that the image is authentic. The test lives with each detector.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from ..io.image import ImageData, ImageLike, as_image


@dataclass
class Prediction:
    """What a detector says about one image."""

    heatmap: np.ndarray
    score: float
    detector: str
    version: str
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    extras: dict[str, Any] = field(default_factory=dict)
    layers: dict[str, np.ndarray] = field(default_factory=dict)  # extra maps in [0, 1] (a committee's agreement, ...)
    applicable: bool = True  # False: the detector saw no trace of its kind, so its map is no evidence either way

    def mask(self, threshold: float = 0.5) -> np.ndarray:
        """Boolean mask of pixels whose heat is at or above ``threshold``."""
        return self.heatmap >= threshold


class Detector:
    """Base class. Subclasses set the class attributes and implement :meth:`analyse`."""

    name: ClassVar[str] = ""
    kind: ClassVar[str] = "classical"
    version: ClassVar[str] = "1"
    needs: ClassVar[str] = "any image"
    license: ClassVar[str] = "MIT"
    paper: ClassVar[str] = ""
    summary: ClassVar[str] = ""

    def predict(self, image: ImageLike) -> Prediction:
        """Analyse one image (path, array, PIL image or ImageData)."""
        img = as_image(image)
        start = time.perf_counter()
        heatmap, score, extras = self.analyse(img)
        seconds = time.perf_counter() - start
        heatmap = _checked_heatmap(heatmap, img, self.name)
        notes = list(img.notes) + list(extras.pop("notes", []))
        layers = extras.pop("_layers", {})
        applicable = bool(extras.pop("applicable", True))
        return Prediction(
            heatmap=heatmap,
            score=float(np.clip(score, 0.0, 1.0)),
            detector=self.name,
            version=self.version,
            seconds=seconds,
            notes=notes,
            extras=extras,
            layers=layers,
            applicable=applicable,
        )

    def analyse(self, img: ImageData) -> tuple[np.ndarray, float, dict[str, Any]]:
        """Return (heatmap at the image's resolution, image score, extras)."""
        raise NotImplementedError

    @classmethod
    def weights_status(cls) -> str:
        """'not needed' for weight-free detectors; deep detectors say whether weights are cached."""
        return "not needed"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, version={self.version!r})"


def _checked_heatmap(heatmap: np.ndarray, img: ImageData, name: str) -> np.ndarray:
    heatmap = np.asarray(heatmap, dtype=np.float32)
    if heatmap.shape != (img.height, img.width):
        raise AssertionError(f"detector {name} returned a {heatmap.shape} map for a {img.height}x{img.width} image")
    heatmap = np.nan_to_num(heatmap, nan=0.0, posinf=1.0, neginf=0.0)
    return np.clip(heatmap, 0.0, 1.0, out=heatmap)
