"""Built-in detectors. Importing this package registers them."""

from .base import Detector, Prediction

__all__ = ["Detector", "Prediction"]
