"""imlforensics: find where an image was manipulated.

Library API::

    from imlforensics import load_detector
    result = load_detector("dq").predict("photo.jpg")
    result.heatmap   # float32 (H, W) in [0, 1], high = tampered
    result.score     # image-level score in [0, 1]
"""

__version__ = "0.1.0"

from .detectors.base import Detector, Prediction  # noqa: E402
from .errors import ImageError, ImlfError, NotApplicable  # noqa: E402
from .image import ImageData, load_image  # noqa: E402
from .registry import list_detectors, load_detector, register_detector  # noqa: E402

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
