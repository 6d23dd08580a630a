"""Built-in detectors. Importing this package registers them."""

from . import copymove, dq, ela, jpeg_grid, noise  # noqa: F401  (registration)
from .base import Detector, Prediction

__all__ = ["Detector", "Prediction"]
