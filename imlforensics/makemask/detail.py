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


def budget_factor(shape: tuple[int, int], pixels: int) -> float:
    """The factor (at most 1) that brings an image of ``shape`` (H, W) to at most ``pixels`` pixels."""
    return min(1.0, float(np.sqrt(pixels / (shape[0] * shape[1]))))


def resample_like(img: np.ndarray, scale: float, interpolation: int = cv2.INTER_CUBIC) -> np.ndarray:
    """``img`` shrunk by ``scale`` (< 1) with area averaging and enlarged back with
    ``interpolation``: what an original ``scale`` times smaller went through on its way onto
    this frame."""
    h, w = img.shape[:2]
    small = cv2.resize(img, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=interpolation)


SIGMAS = (0.6, 1.0, 1.5)
SEARCH_PIXELS = 500_000  # the blur is chosen on a central part of the copies at most this large


def _central(shape: tuple[int, int], pixels: int) -> tuple[slice, slice]:
    """The central window of an image of ``shape`` with at most ``pixels`` pixels (same aspect)."""
    h, w = shape
    f = budget_factor(shape, pixels)
    ch, cw = max(1, round(h * f)), max(1, round(w * f))
    return slice((h - ch) // 2, (h - ch) // 2 + ch), slice((w - cw) // 2, (w - cw) // 2 + cw)


def match_blur(original: np.ndarray, tampered: np.ndarray, quiet: np.ndarray,
               decided: dict | None = None) -> tuple[np.ndarray, np.ndarray, dict]:
    """Blur the sharper copy when the other has lost detail the round trip does not explain (a
    low JPEG quality, another resampling kernel): of the Gaussians tried on either copy, the one
    that most lowers the sampling-insensitive gray difference over the ``quiet`` pixels, if it
    lowers it by more than 10%. Returns both copies and what was done. ``decided``: what an
    earlier pass did (a property of the copies, not of the edit): done again without a search."""
    from .change import tolerant_difference

    if decided is not None:
        which, s = decided["blurred"], decided["sigma"]
        if which == "original":
            original = cv2.GaussianBlur(original, (0, 0), s)
        elif which == "tampered":
            tampered = cv2.GaussianBlur(tampered, (0, 0), s)
        return original, tampered, decided
    if quiet.sum() < 256:
        return original, tampered, {"blurred": None, "sigma": 0.0}
    g = lambda x: cv2.cvtColor(np.clip(x, 0, 255).astype(np.float32), cv2.COLOR_RGB2GRAY)  # noqa: E731
    ga, gb = g(original), g(tampered)
    box = _central(quiet.shape, SEARCH_PIXELS)  # (the blur is a property of the whole copy: a part tells it)
    ga, gb, quiet = ga[box], gb[box], quiet[box]
    if quiet.sum() < 256:
        return original, tampered, {"blurred": None, "sigma": 0.0}
    base = float(tolerant_difference(ga, gb)[quiet].mean())
    best = (0.9 * base, None, 0.0)
    for which in ("original", "tampered"):
        for s in SIGMAS:
            x, y = (cv2.GaussianBlur(ga, (0, 0), s), gb) if which == "original" else (ga, cv2.GaussianBlur(gb, (0, 0), s))
            e = float(tolerant_difference(x, y)[quiet].mean())
            if e < best[0]:
                best = (e, which, s)
    _, which, s = best
    if which == "original":
        original = cv2.GaussianBlur(original, (0, 0), s)
    elif which == "tampered":
        tampered = cv2.GaussianBlur(tampered, (0, 0), s)
    return original, tampered, {"blurred": which, "sigma": s}
