"""The committee: calibrated detectors vote on every pixel.

:mod:`.fusion` holds the voting and fusion arithmetic (CV-DD's prior weighting, isotonic
calibration), :mod:`.calibrate` measures members on a labelled dataset (``imlf calibrate``), and
:mod:`.detector` is the ``committee`` detector, registered on import.
"""

from . import detector  # noqa: F401  (registers the committee)
from .fusion import FUSIONS, VOTERS, Calibration, fit_isotonic, fuse, member_weights

__all__ = ["FUSIONS", "VOTERS", "Calibration", "fit_isotonic", "fuse", "member_weights"]
