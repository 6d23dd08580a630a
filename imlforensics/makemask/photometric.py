"""Photometric alignment: undo global colour, gamma, gain and contrast changes between the copies.

Edited copies are often re-graded as a whole: brighter, warmer, more contrast. Such a change is
a monotone curve per channel. The curve is fitted on the pixels believed unchanged (the caller's
mask): for every value of the original, the median of the tampered copy's values there, made
monotone by pool-adjacent-violators (isotonic regression, as Barlow et al. 1972) weighted by the
pixel counts, and interpolated where a value does not occur. The original is then mapped
through it, so that what is left of the difference is the edit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MIN_PIXELS = 500
MIN_PER_VALUE = 20
MAX_SAMPLES = 300_000


@dataclass
class ToneCurves:
    """One 256-entry lookup table per RGB channel (original value -> tampered value)."""

    luts: np.ndarray  # (3, 256) float32

    def apply(self, rgb: np.ndarray) -> np.ndarray:
        """The image (uint8 or float in 0..255) through the curves, as float32."""
        x = np.clip(rgb, 0, 255).astype(np.float32)
        out = np.empty(x.shape, np.float32)
        for c in range(3):
            out[..., c] = np.interp(x[..., c], np.arange(256, dtype=np.float32), self.luts[c])
        return out

    def strength(self) -> float:
        """Largest departure from the identity, in gray levels."""
        return float(np.abs(self.luts - np.arange(256)[None, :]).max())

    @classmethod
    def identity(cls) -> "ToneCurves":
        return cls(np.tile(np.arange(256, dtype=np.float32), (3, 1)))


def _pav(y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Weighted isotonic (non-decreasing) fit of ``y`` (pool adjacent violators)."""
    means, weights, sizes = [], [], []
    for yi, wi in zip(y, w):
        means.append(yi)
        weights.append(wi)
        sizes.append(1)
        while len(means) > 1 and means[-2] > means[-1]:
            m2, w2, s2 = means.pop(), weights.pop(), sizes.pop()
            tot = weights[-1] + w2
            means[-1] = (means[-1] * weights[-1] + m2 * w2) / tot
            weights[-1] = tot
            sizes[-1] += s2
    return np.repeat(means, sizes)


def fit_tone(original: np.ndarray, tampered: np.ndarray, mask: np.ndarray, seed: int = 0) -> ToneCurves:
    """Per-channel monotone curves taking ``original`` (warped onto the tampered frame) to
    ``tampered`` on the pixels of ``mask``; the identity when too few pixels are given."""
    idx = np.flatnonzero(mask.ravel())
    if idx.size < MIN_PIXELS:
        return ToneCurves.identity()
    if idx.size > MAX_SAMPLES:
        idx = np.sort(np.random.default_rng(seed).choice(idx, MAX_SAMPLES, replace=False))
    src = np.clip(np.rint(original.reshape(-1, 3)[idx]), 0, 255).astype(np.int64)
    dst = tampered.reshape(-1, 3)[idx].astype(np.float64)
    luts = np.empty((3, 256), np.float32)
    levels = np.arange(256)
    for c in range(3):
        x, y = src[:, c], dst[:, c]
        order = np.lexsort((y, x))
        x, y = x[order], y[order]
        counts = np.bincount(x, minlength=256)
        present = np.flatnonzero(counts >= MIN_PER_VALUE)  # a median of a handful of pixels is not trusted
        if present.size < 2:
            luts[c] = levels
            continue
        starts = np.cumsum(counts) - counts
        med = y[starts[present] + counts[present] // 2]  # per-value median
        fit = _pav(med, counts[present].astype(np.float64))
        lut = np.interp(levels, present, fit)
        # beyond the values seen, continue parallel to the identity
        lut[: present[0]] = fit[0] - (present[0] - levels[: present[0]])
        lut[present[-1] + 1:] = fit[-1] + (levels[present[-1] + 1:] - present[-1])
        luts[c] = np.clip(lut, 0, 255)
    return ToneCurves(luts)
