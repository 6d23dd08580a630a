"""dq: aligned double-JPEG (A-DJPG) localization from the file's quantized DCT coefficients.

When a JPEG image is decoded and compressed again on the same 8x8 grid, every DCT coefficient has
been quantized twice, first with a step ``q1`` and then with the step ``q2`` stored in the file.
The stored integers ``x`` of such a coefficient follow the singly quantized distribution multiplied
by a periodic "comb" (Bianchi & Piva):

    n(x) = q1/q2 * E[ #{k : round((k*q1 + e) / q2) = x} ],

the expected number of multiples of ``q1`` that requantize to ``x``, where ``e`` is the error that
the decoding between the two compressions added (Gaussian, as in Bianchi, De Rosa & Piva 2011).
``n`` averages to one; it has empty bins when ``q1 > q2``, a weaker ripple when ``q1 < q2``, and is
flat when ``q1`` divides ``q2`` (no evidence then). For one coefficient the likelihood ratio
"doubly vs singly compressed" is ``n(x) / Z``, ``Z`` normalising over the reference distribution.
Lin et al. (2009) read the same periodicity off the histogram and turn it into per-block
posteriors; Bianchi & Piva (2012) made the model explicit. This module follows the explicit model:

1. Everything comes from the luma coefficients and tables read from the file (``ImageData.jpeg``);
   the luma rebuilt from those coefficients serves only for the reference and the noise model.
2. Reference (no comb): calibration, i.e. the rebuilt luma shifted 4 pixels off the grid,
   transformed again and divided by the stored steps. The comb's normalisation depends on how fast
   the density falls near zero, which differs between smooth and textured blocks, so blocks (and
   calibrated blocks) are split into ``n_classes`` classes of AC activity, each with its own
   reference; for AC frequencies a one-parameter exponential tilt fitted on the image's own
   coefficients corrects the spread calibration gets slightly wrong.
3. Noise between the compressions, per block and frequency: rounding of the decoded values (1/12
   per value when the pixels round independently, up to 64/12 at DC in flat blocks, where they all
   round alike; colour images add R, G, B rounding carried into luma) plus clipping where the
   file's own decoding leaves 0..255 (saturated areas lose the comb instead of looking "single").
   Partial blocks at the right and bottom edges, padded differently by each compression, and zero
   AC coefficients carry no evidence.
4. Frequencies: the first ``n_freq`` in zig-zag order (DC included). Candidate first steps: 2 ..
   ``q1_max``, not dividing ``q2``, whose first comb tooth lies within the coefficients.
5. EM over blocks (each block doubly or singly compressed): the E-step sums a block's log-ratios
   over the frequencies in use; the M-step picks, per frequency, the step that best explains the
   doubly compressed blocks and keeps it when that gain reaches ``min_gain`` nats. With
   ``standard_tables``, libjpeg's scaled standard table that agrees with the most significant
   frequency may supply the steps of all frequencies, pooling weak evidence; a table never creates
   evidence on its own (weak ripples summed over many frequencies can mimic a slightly wrong
   reference). EM starts from "all doubly compressed" and, unless that already found a doubly
   compressed majority, from independent per-frequency fits (a doubly compressed minority); the
   more likely solution wins.
6. Existence: the log-likelihood ratio of the two-class model against "single compression only"
   must reach ``min_evidence`` nats. Below it, the image gets a zero map, a zero score and a note.
   (On our own single-compression test set the ratio that model misfit produces stayed below 50.)
7. Polarity: the image's dominant history is the class most evidence-bearing blocks follow. In the
   usual splice the background was compressed twice and the pasted region once, so the singly
   compressed blocks are the tampered ones. When only a minority shows double compression (a
   region from another JPEG pasted back on the grid, the rest compressed once), the doubly
   compressed blocks are. The map is the posterior of the minority class (prior: its EM share,
   at least 0.1%) after summing block log-ratios over a Gaussian neighbourhood of ``smooth``
   blocks, brought to full resolution bilinearly.

Image score: the same posterior for the most suspicious Gaussian window of 3 blocks (about 7x7
blocks): how strongly a coherent region contradicts the dominant compression history.

Papers:
    Z. Lin, J. He, X. Tang and C.-K. Tang, "Fast, automatic and fine-grained tampered JPEG image
    detection via DCT coefficient analysis", Pattern Recognition 42(11):2492-2501, 2009.
    T. Bianchi and A. Piva, "Image forgery localization via block-grained analysis of JPEG
    artifacts", IEEE Transactions on Information Forensics and Security 7(3):1003-1017, 2012.
    T. Bianchi, A. De Rosa and A. Piva, "Improved DCT coefficient analysis for forgery localization
    in JPEG images", IEEE ICASSP 2011, pp. 2444-2447.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from ..errors import ImageError, NotApplicable
from ..io.image import ImageData
from ..io.jpegtables import ijg_tables
from . import maps
from .base import Detector
from .registry import register_detector

# JPEG zig-zag order as (v, u) = (row, column) of the natural-order 8x8 block.
ZIGZAG: list[tuple[int, int]] = sorted(
    ((v, u) for v in range(8) for u in range(8)),
    key=lambda p: (p[0] + p[1], p[0] if (p[0] + p[1]) % 2 else p[1]),
)


def dct_matrix(n: int = 8) -> np.ndarray:
    """Orthonormal DCT-II matrix ``D`` (JPEG's 2-D transform of a block ``B`` is ``D @ B @ D.T``)."""
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    d = np.cos((2 * i + 1) * k * np.pi / (2 * n)) * np.sqrt(2.0 / n)
    d[0] /= np.sqrt(2.0)
    return d


_D = dct_matrix().astype(np.float32)


def _erf(x: np.ndarray) -> np.ndarray:
    """Error function (Abramowitz & Stegun 7.1.26, |error| < 1.5e-7); numpy has none."""
    s = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    return s * (1.0 - poly * np.exp(-a * a))


def _smoothed_count(t: np.ndarray, q1: np.ndarray, sigma: np.ndarray | float) -> np.ndarray:
    """Expected number of multiples ``k*q1`` at or below ``t`` (counted from the one at 0), each
    displaced by Gaussian noise of deviation ``sigma``: a smooth ``floor(t / q1) + 1``.

    ``sigma`` is capped at ``q1 / 2``, where the displaced lattice is already uniform to 1%.
    """
    sigma = np.minimum(np.asarray(sigma, dtype=np.float64), 0.5 * q1)
    base = np.floor(t / q1)
    r = t - base * q1  # in [0, q1)
    total = base + 1.0
    if np.all(sigma <= 0):
        return total
    s = np.maximum(sigma, 1e-9) * math.sqrt(2.0)
    for j in range(-3, 4):  # multiples within 4 sigma <= 2 q1 of t
        cdf = 0.5 * (1.0 + _erf((r - j * q1) / s))
        total = total + cdf - (1.0 if j <= 0 else 0.0)
    return total


def comb_factor(x: np.ndarray, q1: np.ndarray | float, q2: float, sigma: np.ndarray | float) -> np.ndarray:
    """Double-quantization factor n(x) of Bianchi & Piva for stored integers ``x``.

    ``n(x) = q1/q2 * E[#{k : round((k*q1 + e) / q2) = x}]`` with ``e ~ N(0, sigma^2)``; it averages
    to 1 over x, and the doubly compressed distribution is ``n(x)`` times the single one when the
    coefficient density is smooth on the scale of ``q1`` and ``q2``. Broadcasts ``x``, ``q1`` and
    ``sigma``.
    """
    x = np.asarray(x, dtype=np.float64)
    q1 = np.asarray(q1, dtype=np.float64)
    upper = _smoothed_count((x + 0.5) * q2, q1, sigma)
    lower = _smoothed_count((x - 0.5) * q2, q1, sigma)
    return np.maximum(upper - lower, 0.0) * q1 / q2


@functools.lru_cache(maxsize=2048)
def _comb_periods(q2: int, sigma: float, q1_max: int) -> np.ndarray:
    """``n(x)`` for ``x = 0 .. max period - 1`` and every ``q1 = 0 .. q1_max`` (rows 0 and 1 flat).

    Cached: the same (step, noise) pairs recur across frequencies, EM iterations and images.
    """
    q1s = np.arange(1, q1_max + 1)
    period = q1s // np.gcd(q1s, q2)
    out = np.ones((q1_max + 1, int(period.max())), np.float64)
    out[1:] = comb_factor(np.arange(out.shape[1])[None, :], q1s[:, None], q2, sigma)
    out.setflags(write=False)
    return out


@functools.lru_cache(maxsize=8192)
def _comb_period(q1: int, q2: int, sigma: float) -> np.ndarray:
    """One period of ``n(x)``, x = 0 .. q1/gcd(q1, q2) - 1, for one step pair and noise (cached)."""
    out = comb_factor(np.arange(q1 // math.gcd(q1, q2)), float(q1), q2, sigma)
    out.setflags(write=False)
    return out


def _with_floor(n: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """``n_eps = (1 - eps) n + eps`` and its logarithm, both read-only."""
    n_eps = (1.0 - eps) * n + eps
    log_n = np.log(n_eps)
    n_eps.setflags(write=False)
    log_n.setflags(write=False)
    return n_eps, log_n


@functools.lru_cache(maxsize=512)
def _comb_periods_eps(q2: int, sigma: float, q1_max: int, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_comb_periods` with an off-comb floor ``eps``, and its logarithm (cached)."""
    return _with_floor(_comb_periods(q2, sigma, q1_max), eps)


@functools.lru_cache(maxsize=8192)
def _comb_period_eps(q1: int, q2: int, sigma: float, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_comb_period` with an off-comb floor ``eps``, and its logarithm (cached)."""
    return _with_floor(_comb_period(q1, q2, sigma), eps)


def comb_table(q1s: np.ndarray, q2: int, sigma: float, xs: np.ndarray, q1_max: int = 100) -> np.ndarray:
    """``comb_factor`` for every candidate step in ``q1s`` (C,) and integer in ``xs`` (B,), as (C, B).

    ``n`` is periodic in ``x`` with period ``q1 / gcd(q1, q2)``: one period is computed (and cached
    for steps up to ``q1_max``) and tiled.
    """
    q1s = np.asarray(q1s, dtype=np.int64)
    period = q1s // np.gcd(q1s, q2)
    index = np.mod(np.asarray(xs)[None, :], period[:, None])
    if q1s.size and int(q1s.max()) <= q1_max:
        base = _comb_periods(int(q2), float(sigma), int(q1_max))[q1s]
    else:
        base = comb_factor(np.arange(int(period.max()))[None, :], q1s[:, None], q2, sigma)
    return np.take_along_axis(base, index, axis=1)


def _separable(img: np.ndarray, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """``left @ B @ right`` for every 8x8 block ``B`` of ``img`` (sides multiples of 8), as (bh, bw, 8, 8).

    Two large matrix products (rows, then columns) instead of many tiny ones.
    """
    h, w = img.shape
    rows = np.ascontiguousarray(img, dtype=np.float32).reshape(h * (w // 8), 8) @ right  # (h, w/8, 8)
    rows = rows.reshape(h // 8, 8, (w // 8) * 8)
    cols = np.matmul(left, rows)  # (h/8, 8, w): left applied to the 8 rows of each block
    return cols.reshape(h // 8, 8, w // 8, 8).transpose(0, 2, 1, 3)


def blockwise_idct(coef: np.ndarray, qtable: np.ndarray) -> np.ndarray:
    """Pixels (levels around 0, float32) of dequantized coefficients ``(bh, bw, 8, 8)`` as an image."""
    bh, bw = coef.shape[:2]
    deq = coef.astype(np.float32) * qtable.astype(np.float32)
    img = deq.transpose(0, 2, 1, 3).reshape(bh * 8, bw * 8)  # coefficients laid out as an image
    out = _separable(img, _D.T, _D)  # D^T X D per block
    return np.ascontiguousarray(out.transpose(0, 2, 1, 3)).reshape(bh * 8, bw * 8)


def blockwise_dct(pixels: np.ndarray) -> np.ndarray:
    """8x8 block DCT of an image whose sides are multiples of 8, as ``(bh, bw, 8, 8)`` float32."""
    return np.ascontiguousarray(_separable(pixels, _D, _D.T))


def calibrated_coefficients(luma: np.ndarray, qtable: np.ndarray, shift: int = 4) -> np.ndarray:
    """Coefficients of the same picture without the double-quantization comb (the reference).

    ``luma`` is the picture rebuilt from the file's coefficients (see :func:`blockwise_idct`, levels
    0..255, not rounded); it is rounded and clipped as a decoder would, shifted by ``shift`` pixels
    off the JPEG grid and transformed again. Divided by the stored steps, these values follow the
    distribution of a singly quantized image (calibration).
    """
    pix = np.clip(np.rint(luma[shift:, shift:]), 0.0, 255.0)
    shifted = maps.crop_to_blocks(pix, 8) - 128.0
    if shifted.shape[0] < 8 or shifted.shape[1] < 8:
        return np.zeros((0, 0, 8, 8), np.float32)
    return blockwise_dct(shifted) / qtable.astype(np.float32)


def rounding_variance(pixels: np.ndarray) -> np.ndarray:
    """Per-block, per-frequency variance of the DCT error made by rounding ``pixels`` to integers.

    With independent errors every coefficient gets 1/12; in flat blocks all pixels round the same
    way and the error piles up in the low frequencies (up to 64/12 at DC). The rounding error is a
    sawtooth of the pixel value; averaged over an unknown offset, two pixels' errors have the
    sawtooth's autocorrelation as covariance. Keeping the first harmonic of that autocorrelation,
    rescaled so that both extremes (independent, flat) stay exact, gives
    ``var_k = |DCT_k(exp(2 pi i p))|^2 / 12``. Returns ``(bh, bw, 8, 8)`` float32.
    """
    phase = np.float32(2.0 * np.pi) * (pixels - np.floor(pixels))
    var = np.square(blockwise_dct(np.cos(phase)))
    var += np.square(blockwise_dct(np.sin(phase)))
    var *= np.float32(1.0 / 12.0)
    return var


def clipping_error(
    luma: np.ndarray, coef: list[np.ndarray], qtables: list[np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """Luma DCT error caused by clipping colours to 0..255 when decoding, in the blocks that clip.

    In saturated areas this error is far larger than the rounding error and erases the comb that
    a recompression would otherwise keep. The error the file's own decoding makes (colour rebuilt
    from all components, chroma upsampled bilinearly) estimates the one its earlier decoding made at
    the same place. ``luma`` is the unrounded luma rebuilt from ``coef[0]``. Returns the mask of
    blocks that clip, (bh, bw), and their errors, (n, 8, 8) float32.
    """
    if len(coef) < 3:
        dy = np.clip(luma, 0.0, 255.0) - luma
    else:
        dy = np.zeros_like(luma)
        chroma = []
        for c in (1, 2):
            pix = blockwise_idct(coef[c], qtables[c])
            fy = max(1, int(round(coef[0].shape[0] / coef[c].shape[0])))
            fx = max(1, int(round(coef[0].shape[1] / coef[c].shape[1])))
            if fy > 1 or fx > 1:
                pix = cv2.resize(pix, (pix.shape[1] * fx, pix.shape[0] * fy), interpolation=cv2.INTER_LINEAR)
            pix = pix[: luma.shape[0], : luma.shape[1]]
            if pix.shape != luma.shape:
                pad_y, pad_x = luma.shape[0] - pix.shape[0], luma.shape[1] - pix.shape[1]
                pix = cv2.copyMakeBorder(pix, 0, pad_y, 0, pad_x, cv2.BORDER_REPLICATE)
            chroma.append(pix)
        cb, cr = chroma
        colour = np.empty_like(luma)
        for weight, kb, kr in ((0.299, 0.0, 1.402), (0.587, -0.344136, -0.714136), (0.114, 1.772, 0.0)):
            np.multiply(cb, np.float32(kb), out=colour)
            colour += luma
            if kr:
                colour += np.float32(kr) * cr
            clipped = np.clip(colour, 0.0, 255.0)
            clipped -= colour
            dy += np.float32(weight) * clipped
    blocks = maps.blocks(dy, 8)
    mask = np.any(blocks != 0, axis=(2, 3))
    sel = blocks[mask]
    return mask, np.matmul(np.matmul(_D, sel), _D.T)


@dataclass
class FrequencyModel:
    """One DCT frequency: stored integers, block classes, reference histograms, candidate tables.

    Tables are kept only for the integers that occur (``xs``); ``xi`` indexes them per block.
    """

    v: int
    u: int
    q2: int
    xi: np.ndarray  # (N,) index of each block's stored integer in ``xs``
    level: np.ndarray  # (N,) noise level index; -1 = no evidence (zero AC, partial block)
    cls: np.ndarray  # (N,) activity class of the block
    xs: np.ndarray  # (B,) the stored integers that occur
    ref: np.ndarray  # (L, R) per class: reference probability of every integer in ``ref_xs``
    ref_xs: np.ndarray  # (R,) the integers the reference covers (lo .. hi)
    q1s: np.ndarray  # (C,) candidate first steps whose comb is not flat
    table0: np.ndarray  # (C, L, B) log(n / Z) per class at the base noise level
    base: np.ndarray  # (M,) the blocks at the base noise level
    cell: np.ndarray  # (M,) their cell ``class * B + xi`` in the (L, B) histograms
    hist0: np.ndarray  # (L, B) histogram of the base-level coefficients per class
    q1: int = 0  # chosen first step (0: frequency not used)
    eps: float = 0.0  # share of its doubly compressed coefficients off the comb
    gain: float = 0.0
    ll: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))  # (N,) current log-ratios


def _noise_levels(sd: np.ndarray, sigma: float, n_levels: int) -> np.ndarray:
    """Level index of each coefficient's noise deviation ``sd``: ``sigma * sqrt(2)^level``, level >= 0."""
    ratio = np.maximum(sd / sigma, 1.0)
    return np.clip(np.rint(2.0 * np.log2(ratio)), 0, n_levels - 1).astype(np.int8)


def _log_ratio_table(n_eps: np.ndarray, log_n_eps: np.ndarray, ref: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``log(n_eps / Z)`` with ``n_eps = (1-eps) n + eps`` and ``Z = sum(ref * n_eps)`` per class.

    ``n_eps``: (C, R) floored comb factors over the reference's integers, ``log_n_eps``: their
    logarithms at the columns ``cols`` (C, len(cols)); ``ref``: (L, R) reference probabilities.
    Returns (C, L, len(cols)) float32, zero where the reference has no mass (uninformative
    integers).
    """
    z = np.maximum(n_eps @ ref.T, 1e-12)  # (C, L)
    out = np.empty(z.shape + (len(cols),), np.float32)
    # the difference is taken in float64 and rounded once
    np.subtract(log_n_eps[:, None, :], np.log(z)[:, :, None], out=out, casting="unsafe")
    empty = ref[:, cols] <= 0
    if empty.any():
        out[:, empty] = 0.0
    return out


def _candidate_tables(
    q1s: np.ndarray, q2: int, sigma: float, eps: float, xs: np.ndarray, cols: np.ndarray, q1_max: int
) -> tuple[np.ndarray, np.ndarray]:
    """Floored comb factors ``n_eps`` (C, R) of every candidate step over ``xs`` and their logarithms
    at ``xs[cols]`` (C, len(cols)), gathered from the cached periods (see :func:`comb_table`)."""
    n_eps, log_n = _comb_periods_eps(int(q2), float(sigma), int(q1_max), float(eps))
    index = np.mod(xs[None, :], (q1s // np.gcd(q1s, q2))[:, None])
    index += (q1s * n_eps.shape[1])[:, None]  # into the flattened tables
    return n_eps.ravel().take(index), log_n.ravel().take(index[:, cols])


def block_activity(coef: np.ndarray, qtable: np.ndarray, n_ac: int = 14) -> np.ndarray:
    """Sum of the dequantized magnitudes of the first ``n_ac`` AC frequencies of every block."""
    vs = np.array([v for v, _ in ZIGZAG[1 : n_ac + 1]])
    us = np.array([u for _, u in ZIGZAG[1 : n_ac + 1]])
    return (np.abs(coef[..., vs, us].astype(np.float32)) * qtable[vs, us].astype(np.float32)).sum(axis=-1)


def _spread_tilt(ref: np.ndarray, observed: np.ndarray, size: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Factors ``exp(-a * size)`` that best fit ``ref * factor`` to the ``observed`` counts (ML, per row).

    Calibration gets the spread of the coefficients slightly wrong, and a comb with a first step
    below the second can mimic that error; a one-parameter exponential tilt per class absorbs it
    first. ``ref``, ``observed``, ``size``: rows laid end to end (1-D), row ``i`` starting at
    ``starts[i]`` (rows not empty); rows with fewer than 50 observations are left alone.
    The log-likelihood is concave in ``a`` (an exponential family): a few Newton steps suffice.
    """
    row = np.repeat(np.arange(starts.size), np.diff(np.append(starts, ref.size)))
    n = np.add.reduceat(observed, starts)
    mean_obs = np.add.reduceat(observed * size, starts) / np.maximum(n, 1)
    a = np.zeros(starts.size)
    for _ in range(8):
        w = np.exp(-a[row] * size)
        w *= ref
        mass = np.maximum(np.add.reduceat(w, starts), 1e-300)
        w *= size
        mean = np.add.reduceat(w, starts) / mass
        w *= size
        var = np.add.reduceat(w, starts) / mass - mean * mean
        a = np.clip(a + (mean - mean_obs) / np.maximum(var, 1e-9), -2.0, 2.0)
    a = np.where(n >= 50, a, 0.0)
    return np.exp(-a[row] * size)


def _classes(values: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """How many of the sorted ``bounds`` lie at or below each value, i.e.
    ``np.searchsorted(bounds, values, side="right")``: a few comparisons are faster."""
    out = np.zeros(values.shape, np.intp)
    for b in bounds:
        out += values >= b
    return out


def _central_range(x: np.ndarray, tail: float) -> tuple[int, int]:
    """Smallest and largest integer once a share ``tail`` is cut from each end (at least -1 .. 1)."""
    if x.size == 0:
        return -1, 1
    lo0 = int(x.min())
    cum = np.cumsum(np.bincount(x - lo0))
    lo = lo0 + int(np.searchsorted(cum, tail * x.size, side="right"))
    hi = lo0 + int(np.searchsorted(cum, (1.0 - tail) * x.size, side="left"))
    return min(lo, -1), max(hi, 1)


@dataclass
class _Prepared:
    """One frequency between the passes of :func:`build_frequency_models`."""

    v: int
    u: int
    q2: int
    x: np.ndarray  # (N,) stored integers, clipped to lo .. hi
    xs: np.ndarray  # (R,) the integers lo .. hi
    level: np.ndarray  # (N,) noise level index, -1: no evidence
    cls: np.ndarray  # (N,) activity class of the block
    ref: np.ndarray  # (L, R) reference counts per class (not normalised)
    q1s: np.ndarray  # (C,) candidate first steps
    own_hist: np.ndarray | None  # (L, R) base-level counts per class (AC: the spread tilt fits them)


def _tilt_references(prepared: list[_Prepared]) -> None:
    """Correct the calibration's spread (:func:`_spread_tilt`) on the image's own coefficients, for
    every frequency that has ``own_hist`` at once: one row per frequency and class."""
    todo = [p for p in prepared if p.own_hist is not None]
    if not todo:
        return
    ref = np.concatenate([p.ref.ravel() for p in todo])
    observed = np.concatenate([p.own_hist.ravel() for p in todo]).astype(np.float64)
    size = np.concatenate([np.tile(np.abs(p.xs), p.ref.shape[0]) for p in todo]).astype(np.float64)
    lengths = np.concatenate([np.full(p.ref.shape[0], p.xs.size) for p in todo])
    factor = _spread_tilt(ref, observed, size, np.cumsum(lengths) - lengths)
    start = 0
    for p in todo:
        p.ref = p.ref * factor[start : start + p.ref.size].reshape(p.ref.shape)
        start += p.ref.size


def _frequency_model(p: _Prepared, sigma: float, eps: float, q1_max: int) -> FrequencyModel | None:
    """The model of one prepared frequency: normalised reference, candidates and their tables
    (None when no candidate's comb reaches the coefficients)."""
    ref = p.ref / p.ref.sum(axis=1, keepdims=True)
    # a comb whose first tooth lies beyond the coefficients says nothing (AC zeros are skipped)
    # (the reference mass at |x| * q2 >= q1 / 2, i.e. |x| >= ceil(q1 / (2 q2)), for every q1)
    tail = np.cumsum(np.bincount(np.abs(p.xs), weights=ref.mean(axis=0))[::-1])[::-1]
    first = -(-p.q1s // (2 * p.q2))
    beyond = np.where(first < tail.size, tail[np.minimum(first, tail.size - 1)], 0.0)
    keep = beyond >= 0.01
    if not keep.any():
        return None
    q1s = p.q1s[keep]
    lo = int(p.xs[0])
    occurs = np.bincount(p.x - lo, minlength=p.xs.size) > 0
    cols = np.flatnonzero(occurs)  # the integers that occur
    xi = (np.cumsum(occurs) - 1)[p.x - lo]
    n_eps, log_n = _candidate_tables(q1s, p.q2, sigma, eps, p.xs, cols, q1_max)
    table0 = _log_ratio_table(n_eps, log_n, ref, cols)
    base = np.flatnonzero(p.level == 0)
    cell = p.cls[base].astype(np.int64) * cols.size + xi[base]
    hist0 = np.bincount(cell, minlength=ref.shape[0] * cols.size).reshape(ref.shape[0], cols.size).astype(np.float64)
    return FrequencyModel(p.v, p.u, p.q2, xi, p.level, p.cls, p.xs[cols], ref, p.xs, q1s, table0, base, cell, hist0)


def build_frequency_models(
    coef: np.ndarray,
    qtable: np.ndarray,
    cal: np.ndarray,
    valid: np.ndarray,
    noise_sd: np.ndarray | None,
    sigma: float,
    n_freq: int,
    q1_max: int,
    eps: float,
    n_levels: int,
    n_classes: int = 4,
) -> list[FrequencyModel]:
    """Prepare the first ``n_freq`` zig-zag frequencies of one component for the EM.

    The comb's normalisation depends on the shape of the coefficient density near zero, which
    differs between smooth and textured blocks: blocks are split into ``n_classes`` classes of
    activity (measured without the frequency itself), each with its own reference histogram,
    whose spread is then tilted to fit the image (AC). ``noise_sd`` (bh, bw, 8, 8) is each
    coefficient's error deviation between the compressions, binned into levels of ``sigma``.
    Candidate first steps: 2 .. ``q1_max``, not dividing the stored step, with a first comb tooth
    inside the coefficients.
    """
    ok = valid.ravel()
    act = block_activity(coef, qtable).ravel()
    cal_q = np.rint(cal).astype(np.int32) if cal.size else np.zeros((0, 0, 8, 8), np.int32)
    act_cal = block_activity(cal_q, qtable).ravel()
    cand_all = np.arange(2, q1_max + 1)
    # activity class bounds: quantiles of this image's block activity
    bounds = np.unique(np.quantile(act[ok], np.arange(1, n_classes) / n_classes)) if n_classes > 1 else np.zeros(0)
    n_cls = len(bounds) + 1
    zigzag = ZIGZAG[:n_freq]
    # every frequency's values over the blocks, (F, N)
    flat = [8 * v + u for v, u in zigzag]
    coef_f = coef.reshape(-1, 64).T[flat].astype(np.int32)
    cal_f = cal_q.reshape(-1, 64).T[flat]
    levels = None if noise_sd is None else _noise_levels(noise_sd.reshape(-1, 64).T[flat], sigma, n_levels)
    prepared = []
    for idx, (v, u) in enumerate(zigzag):
        q2 = int(qtable[v, u])
        x = coef_f[idx]
        c = cal_f[idx]
        # the bulk of the coefficients: the outermost 0.1% on either side are left out
        lo, hi = _central_range(x[ok], 0.001)
        if c.size < 30:
            continue
        xs = np.arange(lo, hi + 1)
        level = np.zeros(x.size, np.int8) if levels is None else levels[idx].copy()
        level[~ok | (x < lo) | (x > hi)] = -1
        x = np.clip(x, lo, hi)
        informative = np.ones(xs.size, bool)
        if idx > 0:
            level[x == 0] = -1  # a zero AC coefficient says nothing about the history
            informative[xs == 0] = False
        if np.count_nonzero(level == 0) < 30:
            continue
        q1s = cand_all[q2 % cand_all != 0]  # a step dividing q2 leaves a flat comb: no evidence
        if q1s.size == 0:
            continue
        # activity classes (leave-one-out), bounds from this image's blocks
        own = 0 < idx <= 14
        a = act - (np.abs(x) * q2 if own else 0)
        a_cal = act_cal - (np.abs(c) * q2 if own else 0)
        cls = _classes(a, bounds).astype(np.int8)
        cls_cal = _classes(a_cal, bounds)
        inside = (c >= lo) & (c <= hi)
        counts = np.bincount(cls_cal[inside] * xs.size + (c[inside] - lo), minlength=n_cls * xs.size)
        counts = counts.reshape(n_cls, xs.size)
        # classes with too few calibrated blocks use the histogram of all of them
        ref = np.where(counts.sum(axis=1, keepdims=True) >= 200, counts, counts.sum(axis=0)).astype(np.float64)
        ref = np.where(informative, ref + 0.5, 0.0)
        own_hist = None
        if idx > 0:  # AC: the spread of the reference is corrected on these (below)
            use = level == 0
            own_hist = np.bincount(cls[use].astype(np.int64) * xs.size + (x[use] - lo), minlength=ref.size)
            own_hist = own_hist.reshape(ref.shape)
        prepared.append(_Prepared(v, u, q2, x, xs, level, cls, ref, q1s, own_hist))
    _tilt_references(prepared)
    models = []
    for p in prepared:
        model = _frequency_model(p, sigma, eps, q1_max)
        if model is not None:
            models.append(model)
    return models


def _set_step(m: FrequencyModel, q1: int, sigma: float, eps: float, n_levels: int) -> None:
    """Use step ``q1`` (0: frequency unused) and off-comb share ``eps``; refresh the log-ratios."""
    if q1 == m.q1 and eps == m.eps and m.ll.size:
        return
    m.q1, m.eps = q1, eps
    if q1 == 0:
        m.ll = np.zeros(m.xi.size, np.float32)
        return
    levels = np.flatnonzero(np.bincount(m.level.astype(np.int64) + 1, minlength=n_levels + 1)[1:])
    index = np.mod(m.ref_xs, q1 // math.gcd(q1, m.q2))
    cols = m.xs - m.ref_xs[0]
    periods = [_comb_period_eps(q1, m.q2, sigma * 2.0 ** (lv / 2.0), eps) for lv in levels]
    n_eps = np.stack([n for n, _ in periods])[:, index]
    log_n = np.stack([log for _, log in periods])[:, index[cols]]
    tab = np.zeros((n_levels + 1, m.ref.shape[0], m.xs.size), np.float32)  # level row 0: no evidence
    tab[levels + 1] = _log_ratio_table(n_eps, log_n, m.ref, cols)
    m.ll = tab[m.level.astype(np.int64) + 1, m.cls.astype(np.int64), m.xi]


def _off_comb_share(m: FrequencyModel, q1: int, sigma: float, hist: np.ndarray, floor: float) -> float:
    """ML share of the doubly compressed coefficients that fall off the comb (at least ``floor``).

    Between the two compressions more can happen than rounding (filters, other DCT code, colour
    handling): the comb is then blurred, and fitting how much of it holds keeps such an image's
    off-comb coefficients from reading as strong evidence of single compression.
    """
    grid = np.array([floor, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9])
    grid = grid[grid >= floor]
    n = _comb_period(q1, m.q2, sigma)[np.mod(m.ref_xs, q1 // math.gcd(q1, m.q2))]
    n_eps = (1.0 - grid[:, None]) * n[None, :] + grid[:, None]  # (E, R)
    z = n_eps @ m.ref.T  # (E, L)
    cols = m.xs - m.ref_xs[0]
    ll = (hist[None, :, :] * np.log(n_eps[:, None, cols])).sum(axis=(1, 2)) - (np.log(z) * hist.sum(axis=1)).sum(axis=1)
    return float(grid[int(np.argmax(ll))])


def _screen(t: np.ndarray, h: np.ndarray, keep: int = 8, spare: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """The ``keep`` candidates (rows of the float32 log-ratios ``t``) whose half-and-half mixture
    explains the counts ``h`` best, in ascending order, and their ratios ``exp(t)`` (float64).

    All candidates are ranked in float32 first; the ``keep + spare`` leaders again in float64.
    """
    rough = np.exp(t)
    rough *= 0.5
    rough += 0.5
    lead = np.argsort(np.log(rough, out=rough) @ h.astype(np.float32))[-(keep + spare) :]
    ratio = np.exp(t[lead], dtype=np.float64)
    order = np.argsort(np.log(0.5 + 0.5 * ratio) @ h)[-keep:]
    return lead[order], ratio[order]


def _stacked_cells(models: list[FrequencyModel]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The base-level blocks and histogram cells of all models laid end to end (cells offset so
    that model ``i`` has the range ``bounds[i] .. bounds[i + 1]``), and those ``bounds``."""
    bounds = np.concatenate([[0], np.cumsum([m.hist0.size for m in models], dtype=np.int64)])
    base = np.concatenate([m.base for m in models] + [np.zeros(0, np.int64)])
    cells = np.concatenate([m.cell + off for m, off in zip(models, bounds)] + [np.zeros(0, np.int64)])
    return base, cells, bounds


def _weighted_hists(
    models: list[FrequencyModel], stacked: tuple[np.ndarray, np.ndarray, np.ndarray], weights: np.ndarray
) -> list[np.ndarray]:
    """Histogram (L, B) of every model's base-level coefficients per class, weighted by ``weights``
    (per block), with one bincount (``stacked``: see :func:`_stacked_cells`)."""
    base, cells, bounds = stacked
    flat = np.bincount(cells, weights=weights[base], minlength=int(bounds[-1]))
    return [flat[bounds[i] : bounds[i + 1]].reshape(m.hist0.shape) for i, m in enumerate(models)]


def _independent_fits(models: list[FrequencyModel], iters: int = 20) -> list[tuple[int, float, float]]:
    """Mixture fit of every frequency alone: ``(1-beta) ref + beta ref n / Z`` for every candidate.

    Returns, per model, the best ``(q1, beta, gain)``: the first step, the doubly compressed share,
    and the log-likelihood gain over the reference alone (nats); zeros without usable counts.
    """
    out = [(0, 0.0, 0.0)] * len(models)
    screened = []
    for i, m in enumerate(models):
        hist = m.hist0.ravel()
        used = np.flatnonzero((hist > 0) & (m.ref[:, m.xs - m.ref_xs[0]].ravel() > 0))
        if used.size:
            h = hist[used]
            # screen with the half-and-half mixture, then fit the share of the most promising candidates
            top, ratio = _screen(m.table0.reshape(m.q1s.size, -1)[:, used], h)
            screened.append((i, top, ratio, h))
    if not screened:
        return out
    betas, gains = _mixture_fit([r for _, _, r, _ in screened], [h for _, _, _, h in screened], iters)
    for (i, top, _, _), beta, gain in zip(screened, betas, gains):
        best = int(np.argmax(gain))
        out[i] = (int(models[i].q1s[top[best]]), float(beta[best]), float(gain[best]))
    return out


def _mixture_fit(
    ratios: list[np.ndarray], counts: list[np.ndarray], iters: int
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """EM for the share ``beta`` of the mixture ``(1 - beta) + beta * ratio`` behind the ``counts``
    (U,), for every row of every ``ratios`` (K, U); returns the shares and log-likelihood gains.

    All problems at once: their cells laid end to end, one row per candidate rank (problems with
    fewer candidates padded at the top with flat ratios, which are left out of the results).
    """
    k = max(r.shape[0] for r in ratios)
    sizes = np.array([h.size for h in counts])
    starts = np.cumsum(sizes) - sizes
    ratio = np.ones((k, int(sizes.sum())))
    for r, start in zip(ratios, starts):
        ratio[k - r.shape[0] :, start : start + r.shape[1]] = r
    h = np.concatenate(counts)
    total = np.array([c.sum() for c in counts])
    excess = ratio - 1.0

    def mixture(beta: np.ndarray) -> np.ndarray:  # 1 - beta + beta * ratio, per cell
        mix = np.repeat(beta, sizes, axis=1)
        mix *= excess
        mix += 1.0
        return mix

    beta = np.full((k, len(ratios)), 0.5)
    for _ in range(iters):
        mix = np.divide(ratio, mixture(beta))
        mix *= h
        beta = beta * np.add.reduceat(mix, starts, axis=1) / total
    mix = np.log(np.maximum(mixture(beta), 1e-300))
    mix *= h
    gain = np.add.reduceat(mix, starts, axis=1)
    rows = [slice(k - r.shape[0], k) for r in ratios]
    return [beta[r, i] for i, r in enumerate(rows)], [gain[r, i] for i, r in enumerate(rows)]


def _posterior(total: np.ndarray, share: float) -> np.ndarray:
    """Posterior of "doubly compressed" given summed log-ratios and the prior share."""
    share = min(max(share, 1e-4), 1 - 1e-4)
    return 1.0 / (1.0 + np.exp(-np.clip(total + math.log(share / (1 - share)), -60, 60)))


def _choose_steps(models: list[FrequencyModel], gains: list[np.ndarray], min_gain: float,
                  tables: np.ndarray | None) -> list[int]:
    """M-step choice of the first step of every frequency from its candidates' gains.

    Free choice: a frequency's best step, when its gain reaches ``min_gain``. With ``tables``
    (candidate quantization tables, (T, 8, 8)), the best whole table that agrees with the most
    significant frequency and beats the free choice in summed gain gives every frequency a default
    step, kept where its gain is positive (weak frequencies then add up); a frequency whose free
    best beats it by ``min_gain`` overrides it. Tables never create evidence on their own: weak
    ripples pooled over many frequencies can mimic a slightly wrong reference spread.
    """
    by_step = np.full((len(models), 256), -np.inf, np.float32)  # (K, step): the gains, -inf where not searched
    for i, (m, g) in enumerate(zip(models, gains)):
        by_step[i, m.q1s] = g
    best = np.argmax(by_step, axis=1)  # the smallest of equally good steps, as np.argmax(g)
    best_gain = by_step[np.arange(len(models)), best]
    free = [(int(q), float(g)) if g >= min_gain else (0, 0.0) for q, g in zip(best, best_gain)]
    if tables is None or not models:
        return [q for q, _ in free]
    anchor = int(np.argmax([g for _, g in free]))
    if free[anchor][0] == 0:
        return [0] * len(models)  # tables only extend evidence a frequency shows on its own
    # flat or unsearched steps: no evidence either way
    lookup = np.where(by_step > -np.inf, by_step, 0.0).astype(np.float64)
    steps = tables[:, [m.v for m in models], [m.u for m in models]]  # (T, K)
    per = lookup[np.arange(len(models)), steps]
    total = np.where(steps[:, anchor] == free[anchor][0], per.sum(axis=1), -np.inf)
    t = int(np.argmax(total))
    if total[t] < min_gain or total[t] <= sum(g for _, g in free):
        return [q for q, _ in free]
    out = []
    for i, (q_free, g_free) in enumerate(free):
        q_tab, g_tab = int(steps[t, i]), float(per[t, i])
        if q_free and g_free - max(g_tab, 0.0) >= min_gain:
            out.append(q_free)
        else:
            out.append(q_tab if g_tab > 0 else 0)
    return out


def joint_em(
    models: list[FrequencyModel],
    weights: np.ndarray,
    share: float,
    sigma: float,
    eps: float,
    n_levels: int,
    min_gain: float,
    tables: np.ndarray | None = None,
    iters: int = 12,
) -> tuple[float, float, np.ndarray]:
    """EM over blocks from initial posteriors ``weights``; returns (log-likelihood, share, log-ratios)."""
    steps: list[int] = []
    total = np.zeros(weights.size, np.float32)
    stacked = _stacked_cells(models)
    for _ in range(iters):
        # M-step: first steps from the doubly compressed blocks' coefficients
        hists = _weighted_hists(models, stacked, weights)
        gains = [m.table0.reshape(m.q1s.size, -1) @ h.ravel().astype(np.float32) for m, h in zip(models, hists)]
        new_steps = _choose_steps(models, gains, min_gain, tables)
        for m, g, q1, hist in zip(models, gains, new_steps, hists):
            e = _off_comb_share(m, q1, sigma, hist, eps) if q1 else eps
            _set_step(m, q1, sigma, e, n_levels)
            m.gain = float(g[np.searchsorted(m.q1s, q1)]) if q1 else 0.0
        total = np.zeros(weights.size, np.float32)
        for m in models:
            if m.q1:
                total += m.ll
        weights = _posterior(total, share)
        new_share = float(weights.mean())
        if new_steps == steps and abs(new_share - share) < 5e-3:
            share = new_share
            break
        steps, share = new_steps, new_share
    share = min(max(share, 1e-4), 1 - 1e-4)
    loglik = float(np.sum(np.logaddexp(np.log(share) + total, np.log(1 - share))))
    return loglik, share, total


def _gaussian_sum(arr: np.ndarray, sigma_blocks: float) -> np.ndarray:
    """Sum of ``arr`` over a Gaussian neighbourhood (centre weight 1), edges reflected."""
    if sigma_blocks <= 0:
        return arr.astype(np.float32)
    k = int(math.ceil(3 * sigma_blocks))
    g = np.exp(-0.5 * (np.arange(-k, k + 1) / sigma_blocks) ** 2).astype(np.float32)
    return cv2.sepFilter2D(arr.astype(np.float32), -1, g, g, borderType=cv2.BORDER_REFLECT)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-np.clip(x, -60, 60)))).astype(np.float32)


@register_detector
class DoubleQuantizationDetector(Detector):
    """Aligned double-JPEG localization (Lin et al. 2009; Bianchi & Piva 2012); see the module docs.

    Options:
        n_freq: DCT frequencies analysed, in zig-zag order with DC first, default 28.
        q1_max: largest first quantization step searched, default 100.
        min_gain: log-likelihood gain (nats) the doubly compressed blocks of a frequency must show
            for its comb to count as evidence, default 10.
        eps: share of coefficients of a doubly compressed block allowed off the comb (bounds the
            evidence of a single coefficient), default 0.1.
        smooth: deviation, in blocks, of the Gaussian neighbourhood over which block evidence is
            summed for the map, default 2.0.
        standard_tables: let libjpeg's scaled standard tables supply the first steps of all
            frequencies at once (pooling weak evidence), default True.
        n_classes: classes of block activity, each with its own reference distribution, default 4.
        min_evidence: log-likelihood ratio (nats) of "two compression histories" against "single
            compression only" below which the image is reported as without evidence, default 50.
    """

    name = "dq"
    version = "1"
    needs = "JPEG only"
    cite = "Lin, PR 2009; +2"
    paper = (
        "Lin et al., Pattern Recognition 2009; Bianchi & Piva, IEEE TIFS 2012; "
        "Bianchi, De Rosa & Piva, ICASSP 2011"
    )
    bytes_per_pixel = 48
    summary = (
        "aligned double JPEG compression: 8x8 blocks whose DCT coefficients contradict the image's dominant history"
    )

    N_LEVELS = 16  # noise levels: sigma * sqrt(2)^l, l < 16, enough to flatten any comb

    def __init__(
        self,
        n_freq: int = 28,
        q1_max: int = 100,
        min_gain: float = 10.0,
        eps: float = 0.1,
        smooth: float = 2.0,
        standard_tables: bool = True,
        n_classes: int = 4,
        min_evidence: float = 50.0,
    ):
        self.n_freq = int(n_freq)
        self.q1_max = int(q1_max)
        self.min_gain = float(min_gain)
        self.eps = float(eps)
        self.smooth = float(smooth)
        self.standard_tables = bool(standard_tables)
        self.n_classes = max(1, int(n_classes))
        self.min_evidence = float(min_evidence)

    def memory_needed(self, img: ImageData) -> int:
        return super().memory_needed(img) if img.is_jpeg else 0  # refuses a non-JPEG at once

    def analyse(self, img: ImageData) -> tuple[np.ndarray, float, dict[str, Any]]:
        if not img.is_jpeg:
            raise NotApplicable(
                "dq needs a JPEG file: it reads the quantized DCT coefficients "
                f"(got {img.format or 'pixels without a file'})"
            )
        try:
            jpg = img.jpeg
        except ImageError as exc:
            raise NotApplicable(f"dq cannot read the JPEG's DCT coefficients: {exc}") from None
        h, w = img.height, img.width
        bh, bw = min(jpg.coef[0].shape[0], -(-h // 8)), min(jpg.coef[0].shape[1], -(-w // 8))
        coef, qt = jpg.coef[0][:bh, :bw], jpg.qtables[0]
        extras: dict[str, Any] = {"progressive": jpg.progressive, "applicable": False}
        zero = np.zeros((h, w), np.float32)
        valid = np.ones((bh, bw), bool)
        if h % 8:
            valid[-1, :] = False  # partial blocks were padded differently by each compression
        if w % 8:
            valid[:, -1] = False
        if valid.sum() < 16:
            extras["notes"] = ["dq: image too small for DCT coefficient statistics"]
            return zero, 0.0, extras

        colour = len(jpg.coef) >= 3
        # rounding between the compressions: colour values (3 x 1/12, carried into luma) and luma
        sigma = math.sqrt((1.0 + (0.447 if colour else 0.0)) / 12.0)
        luma = blockwise_idct(coef, qt) + 128.0
        cal = calibrated_coefficients(luma, qt)
        # each coefficient's own error between compressions: rounding (correlated in flat blocks)
        # of R, G, B and luma, plus clipping in saturated areas
        noise_var = rounding_variance(luma)
        noise_var *= np.float32(1.0 + (0.447 if colour else 0.0))
        clipping, clip_dct = clipping_error(luma, [coef] + list(jpg.coef[1:]), jpg.qtables)
        noise_var[clipping] += np.square(clip_dct)
        np.sqrt(noise_var, out=noise_var)
        models = build_frequency_models(
            coef, qt, cal, valid, noise_var, sigma, self.n_freq, self.q1_max, self.eps, self.N_LEVELS,
            self.n_classes,
        )
        del luma, cal, noise_var, clip_dct  # the models keep what they need (per frequency)
        best = self._fit(models, sigma, bh * bw)
        extras["sigma"] = round(sigma, 3)
        if best is None or best[0] < self.min_evidence:
            extras["notes"] = ["dq: no aligned double JPEG compression found, so no evidence either way"]
            if best is not None:
                extras["evidence_nats"] = round(best[0], 1)
            return zero, 0.0, extras
        loglik, share, llr_dq, steps = best
        llr_dq = llr_dq.reshape(bh, bw)
        double_dominant = share >= 0.5
        t_llr = -llr_dq if double_dominant else llr_dq  # log-ratio "minority class vs dominant"
        prior = min(max(min(share, 1.0 - share), 1e-3), 0.5)
        logit_prior = math.log(prior / (1 - prior))
        block_map = _sigmoid(_gaussian_sum(t_llr, self.smooth) + logit_prior)
        # image score: scan statistic over windows of about 7x7 blocks (a Gaussian of 3 blocks,
        # effective area 2 pi 3^2): the best window's evidence against one prior chance in as
        # many windows as the image holds
        region = _gaussian_sum(t_llr, 3.0)
        windows = max(float(valid.sum()) / (2.0 * math.pi * 9.0), 1.0)
        score = float(_sigmoid(np.array(region.max() - math.log(windows))))
        heat = maps.upsample(block_map, (h, w), 8)
        extras.update(
            {
                "applicable": True,  # double compression seen: the map is evidence either way
                "dominant_history": "double" if double_dominant else "single",
                "tampered_history": "single" if double_dominant else "double",
                "double_share": round(share, 3),
                "evidence_nats": round(loglik, 1),
                "first_steps": steps,
            }
        )
        return heat, score, extras

    def _fit(self, models: list[FrequencyModel], sigma: float, n_blocks: int):
        """Block EM from "all doubly compressed" and, unless that already found strong evidence of
        a doubly compressed majority, from independent per-frequency fits (a doubly compressed
        minority); the more likely solution wins. None when no frequency shows significant evidence.
        """
        if not models:
            return None
        tables = ijg_tables() if self.standard_tables else None
        best = self._em(models, np.ones(n_blocks), 0.9, sigma, tables)
        if best is not None and best[0] >= self.min_evidence and best[1] >= 0.5:
            return best
        init_total = np.zeros(n_blocks, np.float32)
        shares = []
        for m, (q1, beta, gain) in zip(models, _independent_fits(models)):
            if q1 and gain >= self.min_gain / 3:  # seeds only: the EM below decides
                _set_step(m, q1, sigma, self.eps, self.N_LEVELS)
                init_total += m.ll
                shares.append(beta)
        if shares:
            share0 = float(np.median(shares))
            other = self._em(models, _posterior(init_total, share0), share0, sigma, tables)
            if other is not None and (best is None or other[0] > best[0]):
                best = other
        return best

    def _em(self, models: list[FrequencyModel], weights: np.ndarray, share: float, sigma: float,
            tables: np.ndarray | None):
        """One EM run; (log-likelihood, share, per-block log-ratios, steps) or None if nothing found."""
        for m in models:
            _set_step(m, 0, sigma, self.eps, self.N_LEVELS)
        loglik, share, total = joint_em(models, weights, share, sigma, self.eps, self.N_LEVELS, self.min_gain, tables)
        used = [m for m in models if m.q1]
        if not used:
            return None
        steps = [
            {"freq": [m.v, m.u], "q2": m.q2, "q1": m.q1, "off_comb": m.eps, "gain": round(m.gain, 1)} for m in used
        ]
        return loglik, share, total.copy(), steps
