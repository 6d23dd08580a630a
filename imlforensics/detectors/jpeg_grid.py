"""JPEG grid inconsistencies: regions whose 8x8 JPEG grid is misaligned with, missing from or out of
line with the image's own grid.

JPEG quantizes the DCT of non-overlapping 8x8 blocks, so in a decoded JPEG (or a PNG that once was
one) the blocks that sit on the compression grid have many DCT coefficients that are (nearly) zero;
blocks at the 63 other offsets do not. Following ZERO (Nikoukhah et al.), the detector computes the
8x8 DCT of the luma at *every* pixel position and counts, per position, the AC coefficients whose
magnitude is below a tolerance (the "zeros"). For a JPEG file the luma is the decoder's own Y plane
(no RGB round trip, so saturated colours are not clipped); otherwise the BT.601 luma of the pixels.
Per 8x8 cell of the image, the 64 blocks starting in the cell (one per grid origin) are compared.

* **The image's grid.** As in ZERO, pixels vote for the origin of the block with strictly most zeros
  among the 64 blocks covering them (ties and blocks constant along rows or columns do not vote;
  eight pixels per cell, whose row and column offsets each take all eight values, so that no origin
  is favoured). The most voted origin is the image's grid if its votes are meaningful against chance
  (a-contrario binomial test, counts divided by the votes per cell as ZERO does). Without a grid
  (never JPEG-compressed, resampled, flat) the map is zero, the score 0, and a note says so.
* **Foreign grid.** Each origin's zeros above the medians of its row and column of the 8x8 table of
  origins (so that content fixing the grid in one direction only, a ramp or stripes, does not count)
  are averaged over a window of cells. What the image's grid predicts for each other origin (a strong
  grid lifts its neighbours) is removed by a robust line fitted over the image's windows, and the
  best origin's residual is divided by the window's robust spread across the 63 origins. A region
  pasted from another JPEG at an offset that is not a multiple of 8, or an earlier misaligned
  compression surviving a high-quality save, makes one origin stand out. The map keeps the share of
  that evidence carried by the cell's own 3x3 neighbourhood, so it hugs the region.
* **Grid strength (content-aware).** The zeros on the grid minus the mean off it measure how strong
  the grid is, but depend on content (flat areas have zeros everywhere, texture few). As CAGI's
  content awareness intends, the expected strength of each window is predicted from its content (its
  off-grid zero rate and log gradient energy; quadratic robust regression over the image's own
  windows, with a content-dependent robust scale) and the residual is a robust z. Cells whose on-grid
  block holds clipped pixels are left out (clipping destroys zeros). This runs on the low and the high
  frequencies separately (a tolerance of 2 levels, about the requantization noise of a typical later
  save) and the two z are combined as an RMS. A region never compressed on the grid (lossless or
  resampled source) is weaker; one whose history differs (double compression on the grid in the host
  only, resampled content) can be stronger: both ways are inconsistencies (CAGI's normal and inverse
  maps; BLK's block artifact grid measures the same thing from pixel differences).

The strength z (RMS of the two bands) is pooled over neighbouring windows (Gaussian, sigma 1.5
cells). The heatmap is the larger of the two evidences, each squashed by a fixed logistic (0.5 at a
foreign z of 8 and at a pooled strength z of 4.5: about the 90th percentile of the per-image maximum
on authentic JPEGs), so authentic images stay cool. The image score is the mean of the hottest 1% of
the map.

Papers:
    W. Li, Y. Yuan, N. Yu, "Passive detection of doctored JPEG image via block artifact grid
    extraction", Signal Processing 89(9):1821-1829, 2009 (BLK).
    C. Iakovidou, M. Zampoglou, S. Papadopoulos, Y. Kompatsiaris, "Content-aware detection of JPEG
    grid inconsistencies for intuitive image forensics", J. Visual Communication and Image
    Representation 54:155-170, 2018 (CAGI).
    T. Nikoukhah, J. Anger, T. Ehret, M. Colom, J.-M. Morel, R. Grompone von Gioi, "JPEG grid
    detection based on the number of DCT zeros and its application to automatic and localized forgery
    detection", CVPR Workshops 2019; T. Nikoukhah, J. Anger, M. Colom, J.-M. Morel, R. Grompone von
    Gioi, "ZERO: a local JPEG grid origin detector based on the number of DCT zeros and its
    applications in image forensics", Image Processing On Line 11:396-433, 2021 (ZERO).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from PIL import Image

from ..errors import NotApplicable
from ..io.image import ImageData, pillow_limit_off
from .base import Detector
from .maps import logistic, top_mean, upsample
from .registry import register_detector

BLOCK = 8
N_ORIGINS = BLOCK * BLOCK
ZERO_TOLERANCE = 0.5  # ZERO's threshold: a DCT coefficient below it is a zero up to pixel rounding
STRENGTH_POOL = 1.5  # Gaussian sigma, in cells, pooling the grid-strength z over neighbouring windows
Y_PLANE, RGB_LUMA = "decoded JPEG Y plane", "luma of the RGB pixels"
MIN_REGION_CELLS = 4  # hot cells (and at least 0.1% of them) before a note speaks of a region
_AC = [(v, u) for v in range(BLOCK) for u in range(BLOCK) if (v, u) != (0, 0)]


def dct_matrix(n: int = BLOCK) -> np.ndarray:
    """Orthonormal DCT-II matrix: row k holds the k-th basis vector."""
    k = np.arange(n)[:, None]
    x = np.arange(n)[None, :]
    mat = np.cos(np.pi * (2 * x + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    mat[0] /= np.sqrt(2.0)
    return mat.astype(np.float32)


_DCT = dct_matrix()


def zero_counts(luma: np.ndarray, tolerances: tuple[float, ...] = (ZERO_TOLERANCE,), split: int = 6,
                strip: int = 256) -> np.ndarray:
    """Numbers of small AC coefficients in the 8x8 DCT at every position.

    Returns uint8 counts of shape (len(tolerances), 2, H - 7, W - 7): entry [t, b, y, x] counts the
    coefficients of the block whose top-left pixel is (y, x) with magnitude below ``tolerances[t]``,
    among the low frequencies (b = 0: u + v <= split) or the high ones (b = 1). Computed separably with
    OpenCV filters, in strips of rows to bound memory.
    """
    y = np.ascontiguousarray(luma, dtype=np.float32)
    h, w = y.shape
    hp, wp = max(h - BLOCK + 1, 0), max(w - BLOCK + 1, 0)
    out = np.zeros((len(tolerances), 2, hp, wp), np.uint8)
    for r0 in range(0, hp, strip):
        r1 = min(hp, r0 + strip)
        band = y[r0 : r1 + BLOCK - 1]
        rows = [cv2.filter2D(band, -1, _DCT[u][None, :], anchor=(0, 0), borderType=cv2.BORDER_CONSTANT)
                for u in range(BLOCK)]
        coef = np.empty_like(band)
        for v, u in _AC:
            cv2.filter2D(rows[u], -1, _DCT[v][:, None], dst=coef, anchor=(0, 0), borderType=cv2.BORDER_CONSTANT)
            mag = cv2.absdiff(coef[: r1 - r0, :wp], 0.0)
            for t, tol in enumerate(tolerances):
                out[t, 0 if u + v <= split else 1, r0:r1] += mag < tol
    return out


def origin_stack(per_position: np.ndarray, origin: tuple[int, int] = (0, 0)) -> np.ndarray:
    """Regroup a per-position map into cells: (cells_high, cells_wide, 64).

    Cell (i, j) holds the 64 positions (origin + 8 * (i, j) + (a, b)), a, b in 0..7, at index 8a + b:
    index 0 is the block on the grid through ``origin``, the others are blocks shifted by (a, b).
    """
    oy, ox = origin
    arr = per_position[oy:, ox:]
    hb, wb = arr.shape[0] // BLOCK, arr.shape[1] // BLOCK
    arr = arr[: hb * BLOCK, : wb * BLOCK].reshape(hb, BLOCK, wb, BLOCK)
    return arr.transpose(0, 2, 1, 3).reshape(hb, wb, N_ORIGINS)


def constant_blocks(luma: np.ndarray) -> np.ndarray:
    """1 where the 8x8 block at that top-left position is constant along every row or every column.

    Such blocks (flat areas, pure ramps, saturated patches) have zeros at every origin; ZERO lets them
    cast no vote. Shape (H - 7, W - 7), uint8.
    """
    y = np.ascontiguousarray(luma, dtype=np.float32)
    h, w = y.shape
    line_h = np.ones((1, BLOCK), np.uint8)
    line_v = np.ones((BLOCK, 1), np.uint8)
    anchor = (0, 0)
    # a row segment is constant when its max equals its min; a block is, when its eight rows are
    flat_rows = (cv2.dilate(y, line_h, anchor=anchor) == cv2.erode(y, line_h, anchor=anchor)).astype(np.uint8)
    flat_cols = (cv2.dilate(y, line_v, anchor=anchor) == cv2.erode(y, line_v, anchor=anchor)).astype(np.uint8)
    rows_ok = cv2.erode(flat_rows, line_v, anchor=anchor)
    cols_ok = cv2.erode(flat_cols, line_h, anchor=anchor)
    return (rows_ok | cols_ok)[: h - BLOCK + 1, : w - BLOCK + 1]


def cell_votes(stack: np.ndarray, constant: np.ndarray) -> np.ndarray:
    """Per cell, the origin index (0..63) whose block has strictly most zeros; -1 for no vote.

    ``constant`` is the :func:`constant_blocks` map regrouped like ``stack``: a cell whose winning
    block is constant along its rows or columns, or whose maximum is tied, does not vote.
    """
    if stack.size == 0:
        return np.full(stack.shape[:2], -1, np.int8)
    top = stack.max(axis=2)
    winner = stack.argmax(axis=2)
    unique = (stack == top[..., None]).sum(axis=2) == 1
    flat = np.take_along_axis(constant, winner[..., None], axis=2)[..., 0] > 0
    return np.where(unique & ~flat & (top > 0), winner, -1).astype(np.int8)


def grid_votes(zeros: np.ndarray, constant: np.ndarray) -> np.ndarray:
    """Votes for the absolute grid origin (0..63, row * 8 + col; -1 = none), ZERO style.

    ZERO lets every pixel vote for the origin of the block with most zeros among the 64 blocks that
    cover it. Comparing only the blocks that start inside one cell would favour origins at the cell's
    edges (they are the ones that avoid an edge inside the cell), so pixels are sampled at eight
    positions per cell whose row and column offsets each take all eight values: the bias cancels.
    """
    out = []
    for r in range(BLOCK):
        c = (3 * r + 1) % BLOCK  # a permutation: every row and column offset once
        sy, sx = r + 1, c + 1  # the blocks covering pixel p start in [p - 7, p]
        v = cell_votes(origin_stack(zeros, (sy, sx)), origin_stack(constant, (sy, sx))).astype(np.int16)
        a, b = np.divmod(v, BLOCK)
        absolute = ((a + sy) % BLOCK) * BLOCK + (b + sx) % BLOCK
        out.append(np.where(v >= 0, absolute, -1).ravel())
    return np.concatenate(out)


def binomial_log10_tail(k: np.ndarray, n: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Chernoff upper bound on log10 P(Binomial(n, p) >= k): -n KL(k/n || p) / ln 10, 0 when k <= np."""
    k = np.asarray(k, np.float64)
    n = np.maximum(np.asarray(n, np.float64), 1e-9)
    p = np.clip(np.asarray(p, np.float64), 1e-9, 1 - 1e-9)
    f = np.clip(k / n, 1e-12, 1 - 1e-12)
    kl = f * np.log(f / p) + (1 - f) * np.log((1 - f) / (1 - p))
    return np.where(f > p, -n * kl / np.log(10.0), 0.0)


@dataclass
class GlobalGrid:
    """The image's dominant grid: ``origin`` (row, col offsets 0..7) or None, its votes and log10 NFA."""

    origin: tuple[int, int] | None
    votes: int
    valid: int
    log10_nfa: float
    share: float


def global_grid(votes: np.ndarray, samples_per_cell: int = BLOCK, max_log10_nfa: float = -10.0) -> GlobalGrid:
    """Most voted origin, kept when meaningful: log10 NFA = log10(64) + log10 P(B(n, 1/64) >= k) < max.

    Votes of one cell are not independent (neighbouring pixels share blocks), so, as ZERO does, counts
    are divided by the number of votes per cell before the binomial test.
    """
    valid = votes[votes >= 0].astype(np.int64)
    if valid.size == 0:
        return GlobalGrid(None, 0, 0, 0.0, 0.0)
    counts = np.bincount(valid, minlength=N_ORIGINS)
    best = int(counts.argmax())
    k, n = counts[best] / samples_per_cell, valid.size / samples_per_cell
    lnfa = float(np.log10(N_ORIGINS) + binomial_log10_tail(k, n, 1.0 / N_ORIGINS))
    origin = divmod(best, BLOCK) if lnfa < max_log10_nfa else None
    return GlobalGrid(origin, int(counts[best]), int(valid.size), lnfa, float(counts[best] / valid.size))


def box_sum(arr: np.ndarray, k: int) -> np.ndarray:
    """Sum over a k x k window around each cell (reflected borders)."""
    return cv2.boxFilter(np.ascontiguousarray(arr, np.float32), -1, (k, k), normalize=False,
                         borderType=cv2.BORDER_REFLECT)


def peak_excess(stack: np.ndarray) -> np.ndarray:
    """Zeros of each origin (a, b) above the larger of the medians of its row a and its column b.

    Seen as an 8x8 table of origins, a grid is a single peak. Content that fixes the grid in one
    direction only (a ramp, stripes) lifts a whole row or column of the table instead; measuring each
    origin against its own row and column keeps such lines from looking like grids.
    """
    table = stack.reshape(stack.shape[:2] + (BLOCK, BLOCK))
    row_med = np.median(table, axis=3, keepdims=True)
    col_med = np.median(table, axis=2, keepdims=True)
    return (table - np.maximum(row_med, col_med)).reshape(stack.shape)


def valid_cells(clipped: np.ndarray, origin: tuple[int, int], hb: int, wb: int,
                max_clipped: int = BLOCK * BLOCK // 4) -> np.ndarray:
    """1 for cells whose on-grid block holds at most ``max_clipped`` clipped pixels, else 0.

    Clipping (a value pushed to 0 or 255 when the decoder converts to RGB, or by the decoder itself)
    moves pixels off the values the JPEG decoder computed and destroys the zeros on the grid: largely
    saturated blocks would otherwise look like a missing grid. (Clipping cannot create zeros at another
    origin, so the foreign-grid test keeps these cells.)
    """
    count = cv2.boxFilter(clipped.astype(np.float32), -1, (BLOCK, BLOCK), anchor=(0, 0), normalize=False,
                          borderType=cv2.BORDER_CONSTANT)
    oy, ox = origin
    cells = count[oy : oy + hb * BLOCK : BLOCK, ox : ox + wb * BLOCK : BLOCK][:hb, :wb]
    return (cells <= max_clipped + 0.5).astype(np.float32)


def analysis_luma(img: ImageData) -> tuple[np.ndarray, np.ndarray, str]:
    """The luma to analyse, the mask of clipped pixels, and where the luma comes from.

    For a JPEG file, the decoder's own Y plane (libjpeg asked for YCbCr output: no colour conversion,
    so no clipping of saturated colours, and exactly the values on the last compression's grid).
    Otherwise (or if that fails) BT.601 luma of the stored RGB, with a pixel clipped when any channel
    is 0 or 255.
    """
    if img.is_jpeg:
        try:
            with pillow_limit_off():
                opened = Image.open(img.path)
            with opened as im:
                if im.mode in ("RGB", "YCbCr", "L"):
                    if im.mode == "RGB":
                        im.draft("YCbCr", im.size)
                    im.load()
                    arr = np.asarray(im)
                    y = arr[..., 0] if arr.ndim == 3 else arr
                    if y.shape == (img.height, img.width):
                        return y.astype(np.float32), (y == 0) | (y == 255), Y_PLANE
        except (OSError, ValueError):
            pass
    clipped = np.any((img.pixels == 0) | (img.pixels == 255), axis=2)
    return img.gray, clipped, RGB_LUMA


def _robust_coef(x: np.ndarray, y: np.ndarray, iters: int = 4) -> np.ndarray:
    """Coefficients (intercept first) of a least-squares fit refitted on points within 2.5 robust sigmas."""
    xm = np.column_stack([np.ones(len(y)), x])
    keep = np.ones(len(y), bool)
    coef = np.zeros(xm.shape[1])
    for _ in range(iters):
        if keep.sum() <= xm.shape[1]:
            break
        coef, *_ = np.linalg.lstsq(xm[keep], y[keep], rcond=None)
        resid = y - xm @ coef
        scale = 1.4826 * np.median(np.abs(resid[keep] - np.median(resid[keep]))) + 1e-9
        keep = np.abs(resid) < 2.5 * scale
    return coef


def _weighted_mean(values: np.ndarray, weight: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Windowed mean of ``values`` over valid cells, and the number of valid cells per window."""
    n = box_sum(weight, k)
    return box_sum(values * weight, k) / np.maximum(n, 1e-6), n


def foreign_grid_evidence(stack: np.ndarray, window: int = 7,
                          max_fit: int = 2000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Robust z that a grid other than the image's (origin index 0) is present around each cell.

    Per window, the mean :func:`peak_excess` of each origin o != 0 is compared with what the image's
    own grid predicts there: a strong grid also lifts its neighbours (shifts by one pixel, by half a
    block), so each origin's windowed excess is regressed robustly on the grid's own windowed excess
    over the image's windows, and the residual is divided by the window's robust spread across origins.
    A foreign grid makes one origin stand out. Returns (z of the best origin, its index, the share of
    the window's excess for that origin that the cell's own 3x3 neighbourhood carries, in [0, 1]).
    """
    hb, wb, _ = stack.shape
    excess = np.ascontiguousarray(peak_excess(stack))
    wide = box_sum(excess, window) / (window * window)
    near = box_sum(excess, 3) / 9.0
    grid, others = wide[..., 0].ravel(), wide[..., 1:].reshape(-1, N_ORIGINS - 1)
    fit = np.linspace(0, grid.size - 1, min(grid.size, max_fit)).astype(np.int64)
    a, b = _robust_lines(grid[fit].astype(np.float64), others[fit].astype(np.float64))
    resid = (wide[..., 1:] - (a + b * wide[..., :1])).astype(np.float32)
    local = (near[..., 1:] - (a + b * near[..., :1])).astype(np.float32)
    del excess, wide, near
    centre = np.median(resid, axis=2)
    spread = 1.4826 * np.median(np.abs(resid - centre[..., None]), axis=2)
    spread = np.maximum(spread, max(float(np.median(spread)), 1e-3) * 0.5)
    best = resid.argmax(axis=2)
    top = np.take_along_axis(resid, best[..., None], axis=2)[..., 0]
    z = (top - centre) / spread
    own = np.take_along_axis(local, best[..., None], axis=2)[..., 0]
    share = np.clip(own / np.maximum(top, 1e-6), 0.0, 1.0)
    return z.astype(np.float32), (best + 1).astype(np.int16), share.astype(np.float32)


def _robust_lines(x: np.ndarray, ys: np.ndarray, iters: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Intercepts and slopes of the lines y_j = a_j + b_j x fitted to each column of ``ys``.

    Least squares, refitted on the points within 2.5 robust sigmas of each line.
    """
    keep = np.ones(ys.shape, bool)
    a = np.zeros(ys.shape[1])
    b = np.zeros(ys.shape[1])
    xc = x[:, None]
    for _ in range(iters):
        w = keep.astype(np.float64)
        sw, sx, sy = w.sum(0), (w * xc).sum(0), (w * ys).sum(0)
        sxx, sxy = (w * xc * xc).sum(0), (w * xc * ys).sum(0)
        det = sw * sxx - sx * sx
        ok = (det > 1e-12 * np.maximum(sw * sxx, 1e-30)) & (sw > 2)
        b = np.where(ok, (sw * sxy - sx * sy) / np.where(ok, det, 1.0), 0.0)
        a = np.where(sw > 0, (sy - b * sx) / np.maximum(sw, 1e-12), 0.0)
        r = ys - a - b * xc
        med = np.median(r, axis=0)
        scale = 1.4826 * np.median(np.abs(r - med), axis=0) + 1e-9
        keep = np.abs(r - med) < 2.5 * scale
    return a, b


def grid_strength_evidence(stack: np.ndarray, texture: np.ndarray, weight: np.ndarray,
                           window: int = 7) -> np.ndarray:
    """Robust z of how much weaker (positive) or stronger (negative) the grid is than the content predicts.

    Grid strength of a window = mean zeros on the grid (origin index 0) minus mean zeros off it. Its
    expected value is regressed (robustly, quadratic) on the window's off-grid zero rate and mean
    ``texture`` over the image's own windows (cells with ``weight`` 0 left out); the residual's scale
    is regressed the same way, and grows as valid cells get fewer. A region never compressed on the
    image's grid (pasted from a lossless or resampled source) has a weaker grid; one compressed twice
    on the grid when the rest was not, or whose content was resampled, can have a stronger one: both
    are inconsistencies with the rest of the image (CAGI's normal and inverse maps).
    """
    hb, wb, _ = stack.shape
    cells = window * window
    off_cell = stack[..., 1:].mean(axis=2)
    strength_cell = stack[..., 0] - off_cell
    strength, n = _weighted_mean(strength_cell, weight, window)
    off, _ = _weighted_mean(off_cell / (N_ORIGINS - 1), weight, window)
    tex, _ = _weighted_mean(texture, weight, window)
    usable = (n >= cells / 4).ravel()
    if usable.sum() < 16:
        return np.zeros((hb, wb), np.float32)
    t = tex.ravel().astype(np.float64)
    t = (t - t[usable].mean()) / (t[usable].std() + 1e-9)
    zoff = off.ravel().astype(np.float64)
    x = np.column_stack([zoff, t, zoff * zoff, t * t, zoff * t])
    y = strength.ravel().astype(np.float64)
    design = np.column_stack([np.ones(len(y)), x])
    expected = design @ _robust_coef(x[usable], y[usable])
    resid = y - expected
    # E|N(0, s^2)| = s sqrt(2 / pi)
    sigma = (design @ _robust_coef(x[usable], np.abs(resid[usable]))) / np.sqrt(2.0 / np.pi)
    floor = max(float(np.median(np.abs(resid[usable]))) / np.sqrt(2.0 / np.pi), 0.05)
    sigma = np.maximum(sigma, floor) * np.sqrt(cells / np.maximum(n.ravel(), 1.0))
    z = np.where(usable, -resid / sigma, 0.0).reshape(hb, wb)
    return z.astype(np.float32)


@register_detector
class JpegGridDetector(Detector):
    """JPEG grid inconsistencies (ZERO-style DCT zeros, content-aware grid strength).

    Options:
        window: side of the analysis window in 8x8 cells (odd, default 7, i.e. 56 pixels).
        tolerance: DCT magnitude below which a coefficient counts as a zero for the votes and the
            foreign-grid test (default 1.0; ZERO uses 0.5 for exact zeros, a little more keeps an
            earlier grid visible through a high-quality re-save).
        strength_tolerance: the same for the grid-strength test (default 2.0, about the
            requantization noise that a later save leaves on earlier zeros).
        foreign_center, foreign_width: logistic mapping the foreign-grid z to the map (default 8, 1).
        strength_center, strength_width: logistic mapping the pooled grid-strength RMS z (default
            4.5, 0.75). Both centres sit near the 90th percentile of the per-image maximum on
            authentic single-compressed JPEGs (scikit-image pictures saved at qualities 60 to 95).
        grid_log10_nfa: the image's grid is accepted below this log10 NFA (default -10).
    """

    name = "jpeg-grid"
    version = "1"
    needs = "any image"
    cite = "Nikoukhah, CVPRW 2019; +2"
    paper = ("Nikoukhah et al., ZERO, CVPRW 2019 / IPOL 2021; Iakovidou et al., CAGI, JVCIR 2018; "
             "Li, Yuan & Yu, BLK, Signal Processing 2009")
    summary = "regions whose 8x8 JPEG grid is misaligned with or missing from the image's grid (DCT zeros)"
    bytes_per_pixel = 64

    def __init__(self, window: int = 7, tolerance: float = 1.0, strength_tolerance: float = 2.0,
                 foreign_center: float = 8.0,
                 foreign_width: float = 1.0, strength_center: float = 4.5, strength_width: float = 0.75,
                 grid_log10_nfa: float = -10.0):
        if window < 3 or window % 2 == 0:
            raise ValueError("window must be an odd number of cells >= 3")
        self.window = int(window)
        self.tolerance = float(tolerance)
        self.strength_tolerance = float(strength_tolerance)
        self.foreign_center = float(foreign_center)
        self.foreign_width = float(foreign_width)
        self.strength_center = float(strength_center)
        self.strength_width = float(strength_width)
        self.grid_log10_nfa = float(grid_log10_nfa)

    def analyse(self, img: ImageData) -> tuple[np.ndarray, float, dict[str, Any]]:
        h, w = img.height, img.width
        if min(h, w) < 4 * BLOCK:
            raise NotApplicable(f"image too small for 8x8 grid analysis ({w}x{h}, needs at least 32x32)")
        luma, clipped, source = analysis_luma(img)
        counts = zero_counts(luma, (self.tolerance, self.strength_tolerance))
        zeros = counts[0, 0] + counts[0, 1]
        grid = global_grid(grid_votes(zeros, constant_blocks(luma)), BLOCK, self.grid_log10_nfa)
        extras: dict[str, Any] = {
            "grid_origin": list(grid.origin) if grid.origin else None,
            "grid_vote_share": round(grid.share, 4),
            "grid_log10_nfa": round(grid.log10_nfa, 1),
            "luma": source,
            "notes": [],
        }
        if grid.origin is None:
            extras["notes"].append("no JPEG grid found (never JPEG-compressed, resampled or flat): "
                                   "nothing to compare")
            extras["applicable"] = False  # no grid: the empty map is no evidence either way
            return np.zeros((h, w), np.float32), 0.0, extras
        if grid.origin != (0, 0):
            extras["notes"].append(f"the image's JPEG grid starts at row {grid.origin[0]}, column "
                                   f"{grid.origin[1]}, not (0, 0): the image was probably cropped")
        stack = origin_stack(zeros, grid.origin).astype(np.float32)
        hb, wb, _ = stack.shape
        k = min(self.window, _largest_odd(min(hb, wb)))
        if k < 3:
            raise NotApplicable("image too small for 8x8 grid analysis")
        # RGB clipping hides how far a channel overshot (a whole saturated colour), so any clipped pixel
        # disqualifies a block there; the decoder's Y plane clips rarely and little
        weight = valid_cells(clipped, grid.origin, hb, wb, BLOCK * BLOCK // 4 if source == Y_PLANE else 0)
        foreign, foreign_origin, foreign_share = foreign_grid_evidence(stack, k)
        texture = _cell_texture(luma, grid.origin, hb, wb)
        z_low, z_high = (grid_strength_evidence(origin_stack(counts[1, b], grid.origin).astype(np.float32),
                                                texture, weight, k) for b in range(2))
        # the two frequency bands are two tests of the same question: combine them as an RMS z, then
        # pool it over neighbouring windows (Gaussian, sigma 1.5 cells): a tapered neighbourhood about
        # twice the window, so that a region is judged on all the windows that see it
        strength = cv2.GaussianBlur(np.sqrt((z_low ** 2 + z_high ** 2) / 2.0), (0, 0), STRENGTH_POOL,
                                    borderType=cv2.BORDER_REFLECT)
        direction = np.where(np.abs(z_low) >= np.abs(z_high), z_low, z_high)
        # foreign evidence more than three widths below its centre is noise (max of 63 tests): drop it
        significant = foreign >= self.foreign_center - 3 * self.foreign_width
        heat_f = logistic(foreign, self.foreign_center, self.foreign_width) * foreign_share * significant
        heat_s = logistic(strength, self.strength_center, self.strength_width)
        cell_heat = np.maximum(heat_f, heat_s)
        heat = upsample(cell_heat, (h, w), BLOCK, origin=grid.origin, window=2 * BLOCK - 1)
        score = top_mean(heat, 0.01)
        hot_f = heat_f >= 0.5
        extras["foreign_grid_cells"] = int(hot_f.sum())
        extras["weaker_grid_cells"] = int(((heat_s >= 0.5) & (direction > 0)).sum())
        extras["stronger_grid_cells"] = int(((heat_s >= 0.5) & (direction < 0)).sum())
        extras["clipped_cells"] = int((weight == 0).sum())
        if hot_f.sum() >= max(MIN_REGION_CELLS, hb * wb // 1000):
            o = int(np.bincount(foreign_origin[hot_f].ravel()).argmax())
            dy, dx = divmod(o, BLOCK)
            extras["foreign_grid_shift"] = [dy, dx]
            extras["notes"].append(f"a region carries a JPEG grid shifted by ({dy}, {dx}) pixels from the "
                                   "image's grid")
        region = max(MIN_REGION_CELLS, hb * wb // 1000)
        for key, word in (("weaker_grid_cells", "weaker"), ("stronger_grid_cells", "stronger")):
            if extras[key] >= region:
                extras["notes"].append(f"the JPEG grid is {word} than the content predicts in {extras[key]} "
                                       f"8x8 cells (a region with a different compression history)")
        if extras["clipped_cells"] > 0.5 * hb * wb:
            extras["notes"].append("over half of the image is saturated (0 or 255): grid strength not "
                                   "tested there")
        return heat.astype(np.float32), float(score), extras


def _largest_odd(n: int) -> int:
    return n if n % 2 else n - 1


def _cell_texture(luma: np.ndarray, origin: tuple[int, int], hb: int, wb: int) -> np.ndarray:
    """log(1 + mean gradient magnitude) over the 15x15 pixels that the blocks of each cell cover."""
    gx = cv2.Sobel(luma, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(luma, cv2.CV_32F, 0, 1, ksize=3)
    np.hypot(gx, gy, out=gx)
    del gy
    span = 2 * BLOCK - 1
    cv2.boxFilter(gx, -1, (span, span), dst=gx, anchor=(0, 0), borderType=cv2.BORDER_REFLECT)
    oy, ox = origin
    cells = gx[oy : oy + hb * BLOCK : BLOCK, ox : ox + wb * BLOCK : BLOCK][:hb, :wb]
    return np.log1p(cells).astype(np.float32)
