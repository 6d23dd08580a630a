"""Detectors: the contract (:mod:`.base`), the registry (:mod:`.registry`) and one module per detector.

Importing this package registers the built-in detectors. A new detector is one module here whose
class is decorated with :func:`~imlforensics.detectors.registry.register_detector`, imported below.
The committee (:mod:`imlforensics.committee`) registers itself the same way; the package root
imports both, so every detector is registered before ``load_detector`` can be called.
"""

from . import copymove, deep, dq, ela, jpeg_grid, noise  # noqa: F401  (registration)
from .base import Detector, Prediction
from .registry import (
           DEFAULT_DETECTOR,
           DEFAULT_FALLBACK,
           list_detectors,
           load_detector,
           register_detector,
)

deep.register_cards()

__all__ = ["DEFAULT_DETECTOR", "DEFAULT_FALLBACK", "Detector", "Prediction", "list_detectors", "load_detector",
           "register_detector"]
