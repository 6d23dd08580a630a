"""Cleanup: from a change score to a clean binary mask.

* hysteresis: a region must reach the high threshold somewhere and is grown over the pixels above
  the low one (Canny's rule, IEEE PAMI 1986), so noise that merely crosses the low threshold
  is not kept;
* an opening removes thin seams (residual registration error along strong edges, the border of
  a crop) and specks;
* components smaller than a share of the image, or whose median evidence is not well above the
  noise, are dropped; holes enclosed by the mask are filled;
* edges are snapped to the tampered image's own edges by a guided filter of the soft map
  (He, Sun & Tang, IEEE PAMI 2013), which may move the outline by a few pixels only.
"""

from __future__ import annotations

import cv2
import numpy as np

LOW, HIGH = 3.0, 6.0  # in units of the pair's noise
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

    Regions grow over the pixels whose full-resolution evidence ``fine`` and coarse evidence
    ``coarse`` both reach ``low``, from seeds where the coarse evidence reaches ``high``. ``guide_rgb``: the tampered image
    (RGB, 0..255) whose edges the outline follows; ``valid``: the pixels the original covers
    (outside them nothing can be said: never in the mask). ``spread``: how many tampered pixels
    one pixel of the original's detail covers (1 / scale for a smaller original): the outline is
    that much less certain, and the snapping may move it that much further.
    """
    h, w = fine.shape
    unit = max(1, round(min(h, w) / 400))  # morphology grows with the image
    score = np.minimum(fine, coarse)
    weak = (fine >= low) & (coarse >= low)  # growth needs support at both scales: noise leaks no region
    mask = hysteresis(weak, weak & (coarse >= high)) & valid
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
