"""Built-in detectors. Importing this package registers them."""

from . import copymove, deep, dq, ela, jpeg_grid, noise  # noqa: F401  (registration)
from .base import Detector, Prediction

deep.register_cards()

__all__ = ["Detector", "Prediction"]
