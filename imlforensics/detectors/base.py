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

from ..errors import ImageError
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
    raw: dict[str, np.ndarray] = field(default_factory=dict)  # extra float arrays for --save-raw (Noiseprint's residual)
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
    cite: ClassVar[str] = ""  # short citation for `imlf models`: first author, venue, year
    summary: ClassVar[str] = ""
    # peak working memory of analyse() per pixel of the image, in bytes (measured at 12 MP by
    # benchmarks/speed.py, with a margin); an image that would need more than is available is refused
    bytes_per_pixel: ClassVar[float] = 48.0

    def memory_needed(self, img: ImageData) -> int:
        """Bytes :meth:`analyse` needs for ``img`` at its peak, about."""
        return int(img.width * img.height * self.bytes_per_pixel)

    def predict(self, image: ImageLike) -> Prediction:
        """Analyse one image (path, array, PIL image or ImageData)."""
        img = as_image(image)
        _check_memory(self.memory_needed(img), img, self.name)
        start = time.perf_counter()
        heatmap, score, extras = self.analyse(img)
        seconds = time.perf_counter() - start
        heatmap = _checked_heatmap(heatmap, img, self.name)
        notes = list(img.notes) + list(extras.pop("notes", []))
        layers = extras.pop("_layers", {})
        raw = extras.pop("_raw", {})
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
            raw=raw,
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


def available_memory() -> int | None:
    """Bytes this process may still take: the least of the memory the system has available, the
    room left under a cgroup (container) limit and under an address-space limit (``ulimit -v``);
    None when none can be read."""
    limits: list[int] = []
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    limits.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    try:
        top = open("/sys/fs/cgroup/memory.max").read().strip()
        used = int(open("/sys/fs/cgroup/memory.current").read().strip())
        if top != "max":
            limits.append(int(top) - used)
    except (OSError, ValueError):
        pass
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_AS)[0]
        if soft != resource.RLIM_INFINITY:
            with open("/proc/self/statm") as f:
                size = int(f.read().split()[0]) * resource.getpagesize()
            limits.append(soft - size)
    except (ImportError, OSError, ValueError):
        pass
    return max(0, min(limits)) if limits else None


def _check_memory(needed: int, img: ImageData, name: str) -> None:
    if needed < 256_000_000:  # small images are never refused (and the check costs nothing)
        return
    free = available_memory()
    if free is not None and needed > free:
        raise ImageError(f"too large for the memory available: analysing this {img.width}x{img.height} image with "
                         f"{name} needs about {needed / 1e9:.1f} GB, {free / 1e9:.1f} GB is available (a smaller "
                         "--max-pixels refuses such images before they are decoded)")


def _checked_heatmap(heatmap: np.ndarray, img: ImageData, name: str) -> np.ndarray:
    heatmap = np.asarray(heatmap, dtype=np.float32)
    if heatmap.shape != (img.height, img.width):
        raise AssertionError(f"detector {name} returned a {heatmap.shape} map for a {img.height}x{img.width} image")
    heatmap = np.nan_to_num(heatmap, nan=0.0, posinf=1.0, neginf=0.0)
    return np.clip(heatmap, 0.0, 1.0, out=heatmap)
