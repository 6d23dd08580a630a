"""imlforensics: find where an image was manipulated.

Library API::

    from imlforensics import load_detector
    result = load_detector("dq").predict("photo.jpg")
    result.heatmap   # float32 (H, W) in [0, 1], high = tampered
    result.score     # image-level score in [0, 1]

The sub-packages, one per concern, are described in ARCHITECTURE.md.
"""

from . import _compat, committee  # noqa: F401  (old import paths; the committee registers itself)
from ._version import __version__
from .detectors import (
    Detector,
    Prediction,
    list_detectors,
    load_detector,
    register_detector,
)
from .errors import ImageError, ImlfError, NotApplicable
from .io.image import ImageData, load_image

__all__ = [
    "Detector",
    "ImageData",
    "ImageError",
    "ImlfError",
    "NotApplicable",
    "Prediction",
    "__version__",
    "list_detectors",
    "load_detector",
    "load_image",
    "register_detector",
]
