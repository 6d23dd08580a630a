"""Cleanup: from a change score to a clean binary mask.

* segmentation by a minimum graph cut (Boykov & Jolly, ICCV 2001; the contrast-sensitive
  smoothness of GrabCut, Rother et al., SIGGRAPH 2004): a pixel's evidence of change pulls it
  into the mask, its lack of evidence out of it, and neighbours of similar colour in the
  tampered image pay to be split, so the outline runs along the image's own edges and the gaps
  between thin changed structures (the spokes of a wheel that was painted in) close;
* hysteresis: a region must reach the high threshold somewhere (Canny's rule, IEEE PAMI 1986),
  so noise that merely crosses the low threshold is not kept;
* an opening removes thin seams (residual registration error along strong edges, the border of
  a crop) and specks;
* components smaller than a share of the image, or whose median evidence is not well above the
  noise, are dropped; holes enclosed by the mask are filled;
* edges are snapped to the tampered image's own edges by a guided filter of the soft map
  (He, Sun & Tang, IEEE PAMI 2013), which may move the outline by a few pixels only.
"""

from __future__ import annotations

import cv2
import maxflow
import numpy as np

from .change import lab, squared_norm

# evidence x: the unchanged pixels beyond it are a share 0.05 exp(-x) of all (see change.tail_model)
LOW, HIGH = 2.0, 6.0  # coarse evidence: regions grow where it reaches LOW and hold a seed at HIGH
FINE = 1.0  # the full-resolution evidence a pixel of the mask needs
FIRST_LOW, FIRST_HIGH = 3.0, 6.0  # the first pass, in units of the lowest quarter of all differences
CAP = 3.0  # evidence beyond this says no more about where the outline runs
SMOOTH = 2.0  # cost of splitting two neighbours of the same colour, in units of evidence
MIN_SHARE = 5e-4  # components smaller than this share of the image are specks


def soft_map(score: np.ndarray, low: float = LOW, high: float = HIGH) -> np.ndarray:
    """Score mapped to [0, 1]: 0 at or below ``low``, 1 at or above ``high``."""
    return np.clip((score - low) / (high - low), 0.0, 1.0).astype(np.float32)


def hysteresis(weak: np.ndarray, strong: np.ndarray) -> np.ndarray:
    """The 8-connected regions of ``weak`` that contain a pixel of ``strong``."""
    n, labels = cv2.connectedComponents(weak.astype(np.uint8), connectivity=8)
    if n <= 1:
        return np.zeros(weak.shape, bool)
    keep = np.zeros(n, bool)
    keep[np.unique(labels[strong & weak])] = True
    keep[0] = False
    return keep[labels]


def _disk(radius: int) -> np.ndarray:
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))


def remove_small(mask: np.ndarray, min_area: int) -> np.ndarray:
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    keep = stats[:, cv2.CC_STAT_AREA] >= min_area
    keep[0] = False
    return keep[labels]


def significant(mask: np.ndarray, evidence: np.ndarray, least: float) -> np.ndarray:
    """The components of ``mask`` whose median ``evidence`` reaches ``least``: a region of noise
    can touch the high threshold at a pixel or two, an edit is above it throughout."""
    n, labels = cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)
    if n <= 1:
        return mask
    flat = labels.ravel()
    order = np.argsort(flat, kind="stable")
    values = evidence.ravel()[order]
    starts = np.searchsorted(flat[order], np.arange(n))
    ends = np.r_[starts[1:], flat.size]
    keep = np.array([k > 0 and ends[k] > starts[k] and float(np.median(values[starts[k]:ends[k]])) >= least
                     for k in range(n)])
    return keep[labels]


def fill_holes(mask: np.ndarray, max_area: int) -> np.ndarray:
    """Fill background regions enclosed by the mask (not touching the border) up to ``max_area``."""
    inv = (~mask).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(inv, connectivity=4)
    h, w = mask.shape
    x, y, bw, bh, area = (stats[:, i] for i in range(5))
    border = (x == 0) | (y == 0) | (x + bw == w) | (y + bh == h)
    hole = ~border & (area <= max_area)
    hole[0] = False
    return mask | hole[labels]


def guided_filter(guide: np.ndarray, src: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """Gray-guide guided filter (box windows of side 2 radius + 1); ``guide`` in 0..1."""
    k = (2 * radius + 1, 2 * radius + 1)
    box = lambda z: cv2.boxFilter(z, -1, k, borderType=cv2.BORDER_REFLECT)  # noqa: E731
    mi, mp = box(guide), box(src)
    cov = box(guide * src) - mi * mp
    var = box(guide * guide) - mi * mi
    a = cov / (var + eps)
    b = mp - a * mi
    return box(a) * guide + box(b)


def clean(fine: np.ndarray, coarse: np.ndarray, guide_rgb: np.ndarray, valid: np.ndarray, low: float = LOW,
          high: float = HIGH, spread: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Binary mask and soft map from the change evidence (see the module docstring).

    A pixel's evidence is the smaller of its full-resolution evidence ``fine`` above ``FINE`` and
    its coarse evidence ``coarse`` above ``low`` (both must agree); regions must hold a seed,
    where the coarse evidence reaches ``high``. ``guide_rgb``: the tampered image
    (RGB, 0..255) whose edges the outline follows; ``valid``: the pixels the original covers
    (outside them nothing can be said: never in the mask). ``spread``: how many tampered pixels
    one pixel of the original's detail covers (1 / scale for a smaller original): the outline is
    that much less certain, and the snapping may move it that much further.
    """
    h, w = fine.shape
    unit = max(1, round(min(h, w) / 400))  # morphology grows with the image
    score = np.minimum(fine, coarse)
    evidence = np.clip(np.minimum(fine - FINE, coarse - low), -CAP, CAP)  # both scales must agree
    evidence[~valid] = -CAP
    seeds = (coarse >= high) & valid
    mask = segment(evidence, guide_rgb, seeds)
    mask = hysteresis(mask, mask & seeds)
    mask = cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_OPEN, _disk(unit)) > 0
    mask = remove_small(mask, max(16 * unit * unit, int(MIN_SHARE * h * w)))
    mask = significant(mask, coarse, high / 2)
    mask = fill_holes(mask, int(0.02 * h * w))
    soft = soft_map(score, low, high)
    if mask.any():
        g = cv2.cvtColor(np.clip(guide_rgb, 0, 255).astype(np.float32), cv2.COLOR_RGB2GRAY) / 255.0
        band = max(1, round(unit * (1 + 2 * max(spread, 1.0))))
        snapped = guided_filter(g, mask.astype(np.float32), band, 1e-3) >= 0.5
        inner = cv2.erode(mask.astype(np.uint8), _disk(band)) > 0
        outer = cv2.dilate(mask.astype(np.uint8), _disk(band)) > 0
        mask = (snapped & outer) | inner
        mask = remove_small(mask & valid, max(16 * unit * unit, int(MIN_SHARE * h * w)))
    return mask, soft


def _contrast(cielab: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Squared CIELAB differences of each pixel to its right and lower neighbour (0 at the border)."""
    dx = np.zeros(cielab.shape[:2], np.float32)
    dy = np.zeros(cielab.shape[:2], np.float32)
    dx[:, :-1] = squared_norm(cv2.subtract(cielab[:, 1:], cielab[:, :-1]))
    dy[:-1] = squared_norm(cv2.subtract(cielab[1:], cielab[:-1]))
    return dx, dy


_RIGHT = np.array([[0, 0, 0], [0, 0, 1], [0, 0, 0]])
_DOWN = np.array([[0, 0, 0], [0, 0, 0], [0, 1, 0]])


def _cut(evidence: np.ndarray, right: np.ndarray, down: np.ndarray) -> np.ndarray:
    """Minimum cut of one grid (``right``, ``down``: the costs of splitting each pixel from its
    neighbours): the pixels labelled changed."""
    g = maxflow.Graph[float]()
    ids = g.add_grid_nodes(evidence.shape)
    g.add_grid_edges(ids, weights=right, structure=_RIGHT, symmetric=True)
    g.add_grid_edges(ids, weights=down, structure=_DOWN, symmetric=True)
    # a pixel labelled changed pays its lack of evidence, one labelled unchanged its evidence
    g.add_grid_tedges(ids, np.maximum(-evidence, 0), np.maximum(evidence, 0))
    g.maxflow()
    return g.get_grid_segments(ids)


def segment(evidence: np.ndarray, rgb: np.ndarray, seeds: np.ndarray, smooth: float = SMOOTH) -> np.ndarray:
    """The changed pixels: the labelling that minimises the evidence against each pixel's label
    plus ``smooth`` times exp(-beta |colour difference|^2) for every pair of 4-neighbours given
    different labels (beta: the inverse of twice the image's mean squared difference, as in
    GrabCut), found exactly by a minimum cut (Boykov-Kolmogorov max-flow, PyMaxflow).

    Only the regions that can become part of the mask are cut: the bounding boxes of the
    connected regions of pixels with evidence (grown a little) that hold a seed (anything else
    is dropped by the hysteresis anyway).
    """
    support = cv2.dilate((evidence > 0).astype(np.uint8), _disk(3))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(support, connectivity=8)
    keep = np.zeros(n, bool)
    keep[np.unique(labels[seeds & (support > 0)])] = True
    keep[0] = False
    out = np.zeros(evidence.shape, bool)
    if not keep.any():
        return out
    dx, dy = _contrast(lab(rgb))
    beta = 1.0 / (2.0 * max(float(dx[:, :-1].mean() + dy[:-1].mean()) / 2.0, 1e-6))
    right = cv2.exp(dx * -beta) * smooth
    down = cv2.exp(dy * -beta) * smooth
    for k in np.flatnonzero(keep):
        x, y, w, h = stats[k, :4]
        box = (slice(y, y + h), slice(x, x + w))
        others = (labels[box] != k) & (labels[box] > 0)  # (they get boxes of their own if they hold a seed)
        out[box] |= _cut(np.where(others, -CAP, evidence[box]), right[box], down[box])
    return out


OUTLINE_BAND = 2  # the outline is decided again this many pixels either side of it
OUTLINE_REACH = 7  # the levels on either side are read this far around
OUTLINE_SHARE = 0.25  # a pixel of the band is changed where its difference passes this share of the way


def _local_mean(values: np.ndarray, where: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean of ``values`` over the pixels ``where`` within a box of side 2 radius + 1, and the count."""
    k = (2 * radius + 1, 2 * radius + 1)
    w = where.astype(np.float32)
    total = cv2.boxFilter(values * w, -1, k, normalize=False, borderType=cv2.BORDER_CONSTANT)
    count = cv2.boxFilter(w, -1, k, normalize=False, borderType=cv2.BORDER_CONSTANT)
    return total / np.maximum(count, 1.0), count


def refine_outline(mask: np.ndarray, diff: np.ndarray, valid: np.ndarray, band: int = OUTLINE_BAND) -> np.ndarray:
    """The mask with its outline decided again from the tampered image's own pixels.

    The evidence is pooled over windows and the snapping is smooth, so an outline found from them
    lies where the difference *starts*: recompression rings a pixel or two out from every pasted
    edge (a difference a tenth of the edit's), and a smaller original's blur spreads it. Here
    each pixel within ``band`` of the outline is changed when its own full-resolution
    difference ``diff`` (the registered, tone-matched original against the tampered image as it
    is) lies more than OUTLINE_SHARE of the way from the level of the unchanged pixels around it
    (beyond the band, outside) to that of the changed ones (beyond the band, inside): the
    outline moves to the tampered image's own edge, where the difference jumps. Pixels with no
    level on either side nearby keep their label.
    """
    if not mask.any():
        return mask
    k = _disk(band)
    m8 = mask.astype(np.uint8)
    inner = cv2.erode(m8, k, borderType=cv2.BORDER_REPLICATE) > 0
    outer = ~(cv2.dilate(m8, k) > 0) & valid
    ring = ~inner & (cv2.dilate(m8, k) > 0) & valid
    level_in, n_in = _local_mean(diff, inner, OUTLINE_REACH)
    level_out, n_out = _local_mean(diff, outer, OUTLINE_REACH)
    known = (n_in >= 3) & (n_out >= 3) & (level_in > level_out)
    decided = diff >= level_out + OUTLINE_SHARE * (level_in - level_out)
    out = np.where(ring & known, decided, mask)
    # the outline stays one piece with the mask: pixels the band adds must touch the mask
    out = hysteresis(out, out & mask)
    return fill_holes(out, int(0.002 * mask.size) + 4)


BAY_REACH = 4  # unchanged pixels this close to the outline may be carved out of the mask
BAY_QUANTILE = 0.95  # "unchanged" is at most this quantile of the difference outside the mask


def carve_bays(mask: np.ndarray, diff: np.ndarray, valid: np.ndarray, reach: int = BAY_REACH) -> np.ndarray:
    """The mask without the unchanged pixels it swallowed along its outline.

    The graph cut's smoothness and the snapping fill a mask's bays (the gap between two limbs, a
    concave edge) with pixels that did not change. Those whose own difference lies at the level of
    the unchanged pixels outside the mask (its ``BAY_QUANTILE``), within ``reach`` of the outline and
    joined to the outside through such pixels, are given back; nothing is carved where the edit's
    difference is not well above that level.
    """
    if not mask.any():
        return mask
    m8 = mask.astype(np.uint8)
    away = valid & ~(cv2.dilate(m8, _disk(2)) > 0)
    if away.sum() < 64:
        return mask
    tau = float(np.quantile(diff[away], BAY_QUANTILE))
    if not tau < 0.25 * float(np.median(diff[mask])):
        return mask
    band = mask & ~(cv2.erode(m8, _disk(reach), borderType=cv2.BORDER_REPLICATE) > 0)
    quiet = band & (diff <= tau) & valid
    reach_out = (quiet | (valid & ~mask)).astype(np.uint8)
    n, labels = cv2.connectedComponents(reach_out, connectivity=4)
    outside_labels = np.unique(labels[valid & ~mask])
    carved = quiet & np.isin(labels, outside_labels[outside_labels > 0])
    return mask & ~carved
