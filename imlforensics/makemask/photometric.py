"""Photometric alignment: undo global colour, gamma, gain and contrast changes between the copies.

Edited copies are often re-graded as a whole: brighter, warmer, more contrast. Such a change is
a smooth monotone curve per channel: here one gamma for all three, and a gain and an offset per
channel. The curve is fitted on
the pixels believed unchanged (the caller's mask): for every value of the original, the median
of the tampered copy's values there; the curve closest to these medians in absolute deviation,
weighted by the pixel counts, over a grid of gammas. The fit is repeated on the 70% of pixels the
previous curves explain best, so that an edit the mask missed does
not bend the curve. The original is then mapped through it, so that what is left of the
difference is the edit.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

MIN_PIXELS = 500
MIN_PER_VALUE = 20
MIN_GAIN = 1.0  # gray levels per channel a curve must explain to be applied
SATURATION = 7.0  # levels from 0 or 255 within which a channel counts as clipped
TRIMS, KEEP = 3, 0.7  # refits, each on the share of pixels the last curves explain best
MAX_SAMPLES = 50_000
MIN_SLOPE = 0.4  # gains outside [MIN_SLOPE, 1 / MIN_SLOPE] are not a global grading


@dataclass
class ToneCurves:
    """One 256-entry lookup table per RGB channel (original value -> tampered value)."""

    luts: np.ndarray  # (3, 256) float32

    def apply(self, rgb: np.ndarray) -> np.ndarray:
        """The image (uint8 or float in 0..255) through the curves, as float32."""
        x = np.clip(rgb, 0, 255).astype(np.float32)
        if self.strength() == 0.0:
            return x
        # linear interpolation in the tables: value at the whole part plus slope times the fraction
        whole = x.astype(np.uint8)  # (truncation: the floor of a non-negative value)
        fraction = cv2.subtract(x, whole.astype(np.float32))
        table = np.ascontiguousarray(self.luts.T[None])  # (1, 256, 3): one table per channel
        slope = np.concatenate([np.diff(table, axis=1), np.zeros((1, 1, 3), np.float32)], axis=1)
        return cv2.add(cv2.LUT(whole, table), cv2.multiply(cv2.LUT(whole, slope), fraction))

    def apply_saturated(self, original: np.ndarray, tampered: np.ndarray) -> np.ndarray:
        """``apply`` to ``original``, except that a channel the original has clipped (0 or 255, as
        an exposure or gain change leaves it) only bounds the value: where the tampered copy lies
        beyond that bound, it is taken as agreeing."""
        out = self.apply(original)
        o = np.asarray(original, np.float32)
        t = np.asarray(tampered, np.float32)
        for c in range(3):
            # (recompression and resampling leave a clipped area a few levels below the limit)
            hi_bound = float(np.interp(255.0 - SATURATION, np.arange(256), self.luts[c])) - 2.0
            lo_bound = float(np.interp(SATURATION, np.arange(256), self.luts[c])) + 2.0
            high = (o[..., c] >= 255.0 - SATURATION) & (t[..., c] >= hi_bound)
            low = (o[..., c] <= SATURATION) & (t[..., c] <= lo_bound)
            out[..., c][high | low] = t[..., c][high | low]
        return out

    def strength(self) -> float:
        """Largest departure from the identity, in gray levels."""
        return float(np.abs(self.luts - np.arange(256)[None, :]).max())

    @classmethod
    def identity(cls) -> "ToneCurves":
        return cls(np.tile(np.arange(256, dtype=np.float32), (3, 1)))


GAMMAS = np.exp(np.linspace(np.log(0.4), np.log(2.5), 61))


def _medians(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For every value of ``x`` (0..255) with enough pixels: the median of ``y`` (0..255, integers)
    there, from the joint histogram, and the pixel count; returns (values, medians, counts)."""
    joint = np.bincount(x * 256 + y, minlength=65536).reshape(256, 256)
    counts = joint.sum(axis=1)
    present = np.flatnonzero(counts >= MIN_PER_VALUE)  # a median of a handful of pixels is not trusted
    # clipped values only bound the true one (see apply_saturated): they say nothing of the curve
    present = present[(present > SATURATION) & (present < 255 - SATURATION)]
    cum = np.cumsum(joint[present], axis=1)
    med = (cum < (counts[present] / 2.0)[:, None]).sum(axis=1)  # first y whose cumulative count reaches half
    return present, med.astype(np.float64), counts[present].astype(np.float64)


def _fit_channel(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, float] | None:
    """For every gamma of the grid, the curve ``a (x / 255) ** gamma * 255 + b`` closest to the
    per-value medians of ``y`` (weighted by how many pixels have each value, least absolute
    deviations): the curves (G, 256), their L1 errors (G,), and the identity's error. None when
    too few values occur."""
    levels = np.arange(256, dtype=np.float64)
    present, med, wgt = _medians(x, y)
    if present.size < 8:
        return None
    identity_err = float(np.sum(wgt * np.abs(med - present)) / wgt.sum())
    basis = 255.0 * (present / 255.0)[None, :] ** GAMMAS[:, None]  # (G, P)
    rw = np.broadcast_to(wgt, basis.shape).copy()
    for _ in range(6):  # least absolute deviations by reweighted least squares, per gamma
        sw, sx, sy = rw.sum(1), (rw * basis).sum(1), (rw * med).sum(1)
        sxx, sxy = (rw * basis * basis).sum(1), (rw * basis * med).sum(1)
        det = sw * sxx - sx * sx
        a = np.where(det > 1e-9, (sw * sxy - sx * sy) / np.where(det > 1e-9, det, 1.0), 1.0)
        b = (sy - a * sx) / sw
        resid = np.abs(a[:, None] * basis + b[:, None] - med)
        rw = wgt / np.maximum(resid, 0.5)
    err = (wgt * resid).sum(1) / wgt.sum()
    # a grading keeps the picture: a curve that flattens or steepens it this much is an edit's fit
    err[(a < MIN_SLOPE) | (a > 1.0 / MIN_SLOPE)] = np.inf
    curves = a[:, None] * 255.0 * (levels / 255.0)[None, :] ** GAMMAS[:, None] + b[:, None]
    return curves, err, identity_err


def fit_tone(original: np.ndarray, tampered: np.ndarray, mask: np.ndarray, seed: int = 0,
             previous: ToneCurves | None = None, trusted: bool = False) -> ToneCurves:
    """Per-channel curves taking ``original`` (warped onto the tampered frame) to ``tampered`` on
    the pixels of ``mask``: a gain, an offset and a gamma each, which is what global grading does
    and leaves an edit that covers part of the value range no room to bend the curve. The
    identity when too few pixels are given, or when the curves explain the pixels less than a
    gray level better than no change does.

    ``trusted``: the mask holds pixels known to be copies (the texture agrees): the first fit
    takes them all. Otherwise it may hold an edit too, and the first fit takes the share of them
    that no change explains best (which keeps a mild grading from being fitted, and an edit from
    bending the curve). ``previous`` (the curves of an earlier pass, fitted on more of the value
    range) is kept when it explains these pixels as well as the new fit."""
    idx = np.flatnonzero(mask.ravel())
    if idx.size < MIN_PIXELS:
        return previous if previous is not None else ToneCurves.identity()
    if idx.size > MAX_SAMPLES:
        idx = np.sort(np.random.default_rng(seed).choice(idx, MAX_SAMPLES, replace=False))
    src = np.clip(np.rint(original.reshape(-1, 3)[idx]), 0, 255).astype(np.int64)
    dst = np.clip(np.rint(tampered.reshape(-1, 3)[idx]), 0, 255).astype(np.int64)
    curves: ToneCurves | None = None if trusted else ToneCurves.identity()
    keep = np.ones(len(idx), bool)
    for _ in range(TRIMS + trusted):
        if curves is not None:  # pixels the last curves explain worst (an edit the mask missed) are left out
            residual = np.abs(curves.luts[np.arange(3), src] - dst).mean(axis=1)
            keep = residual <= max(float(np.quantile(residual, KEEP)), 2.0)
        fits = [_fit_channel(src[keep, c], dst[keep, c]) for c in range(3)]
        if any(f is None for f in fits):
            return previous if previous is not None else ToneCurves.identity()
        # one gamma for the three channels (a grading's gamma is global), a gain and offset each
        k = int(np.argmin(sum(f[1] for f in fits)))
        if not np.isfinite(sum(f[1][k] for f in fits)) or sum(f[2] - f[1][k] for f in fits) < 3 * MIN_GAIN:
            curves = ToneCurves.identity()
        else:
            curves = ToneCurves(np.clip(np.stack([f[0][k] for f in fits]), 0, 255).astype(np.float32))
    if previous is not None:
        err = lambda c: float(np.abs(c.luts[np.arange(3), src[keep]] - dst[keep]).mean())  # noqa: E731
        if err(previous) <= err(curves) + 0.5:
            return previous
    return curves
