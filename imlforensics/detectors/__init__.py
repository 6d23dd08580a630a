"""Built-in detectors. Importing this package registers them."""

from . import copymove, deep, dq, ela, jpeg_grid, noise  # noqa: F401  (registration)
from .base import Detector, Prediction

deep.register_cards()

from .. import ensemble  # noqa: E402,F401  (registers the committee, which builds on the detectors above)

__all__ = ["Detector", "Prediction"]
