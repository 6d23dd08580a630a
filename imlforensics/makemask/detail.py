"""Detail matching: compare the two copies at the same level of detail.

An original smaller than the tampered copy, once enlarged onto it, lacks the finest detail:
compared as they are, every edge differs. MMM (arXiv 2407.03695) super-resolves the pair before
comparing it; the classical, offline counterpart brings the sharper copy *down* to the other's
detail instead. When the original was enlarged by 1 / s onto the tampered frame, the tampered
copy goes through the same round trip (area-shrunk by s, enlarged back with the same
interpolation), so that both have lost the same frequencies. What blur remains (JPEG at
different qualities, an interpolation kernel that is not ours) is left to the shift-tolerant,
multi-scale, noise-normalised comparison of :mod:`.change`.

A learned super-resolution model can instead enlarge the smaller original before it is warped
(:mod:`.sr`); the round trip is then not needed.
"""

from __future__ import annotations

import cv2
import numpy as np


def resample_like(img: np.ndarray, scale: float, interpolation: int = cv2.INTER_CUBIC) -> np.ndarray:
    """``img`` shrunk by ``scale`` (< 1) with area averaging and enlarged back with
    ``interpolation``: what an original ``scale`` times smaller went through on its way onto
    this frame."""
    h, w = img.shape[:2]
    small = cv2.resize(img, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=interpolation)
