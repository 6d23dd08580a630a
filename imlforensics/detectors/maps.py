"""Small helpers shared by the classical detectors: robust statistics and map resampling."""

from __future__ import annotations

import cv2
import numpy as np


def robust_z(values: np.ndarray, reference: np.ndarray | None = None, floor: float = 1e-6) -> np.ndarray:
    """(values - median) / (1.4826 * MAD), the statistics taken over ``reference`` (default: values)."""
    ref = values if reference is None else reference
    ref = ref[np.isfinite(ref)]
    if ref.size == 0:
        return np.zeros_like(values, dtype=np.float32)
    med = float(np.median(ref))
    mad = float(np.median(np.abs(ref - med))) * 1.4826
    return ((values - med) / max(mad, floor)).astype(np.float32)


def logistic(x: np.ndarray, center: float, width: float) -> np.ndarray:
    """Map a score onto (0, 1): 0.5 at ``center``, slope set by ``width``."""
    return (1.0 / (1.0 + np.exp(-(np.asarray(x, dtype=np.float32) - center) / width))).astype(np.float32)


def crop_to_blocks(arr: np.ndarray, block: int, origin: tuple[int, int] = (0, 0)) -> np.ndarray:
    """The part of ``arr`` (starting at ``origin``) that tiles exactly into block x block cells."""
    oy, ox = origin
    h = (arr.shape[0] - oy) // block * block
    w = (arr.shape[1] - ox) // block * block
    return arr[oy : oy + h, ox : ox + w]


def blocks(arr: np.ndarray, block: int) -> np.ndarray:
    """View an (H, W) array, H and W multiples of ``block``, as (H/b, W/b, b, b) blocks."""
    h, w = arr.shape[:2]
    return arr.reshape(h // block, block, w // block, block).swapaxes(1, 2)


def upsample(cell_map: np.ndarray, shape: tuple[int, int], cell: int, origin: tuple[int, int] = (0, 0),
             window: int | None = None, smooth: bool = True) -> np.ndarray:
    """Bring a map with one value per cell back to pixel resolution.

    Value ``[i, j]`` describes the window of size ``window`` (default ``cell``) whose top-left corner
    is at ``origin + (i, j) * cell``. The result has ``shape``; pixels outside the covered area take
    the value of the nearest cell. ``smooth`` interpolates bilinearly between cell centres,
    otherwise each cell is painted as a flat block.
    """
    window = cell if window is None else window
    h, w = shape
    cm = np.asarray(cell_map, dtype=np.float32)
    if cm.size == 0:
        return np.zeros(shape, np.float32)
    ys = (np.arange(h, dtype=np.float32) - origin[0] - (window - 1) / 2.0) / cell
    xs = (np.arange(w, dtype=np.float32) - origin[1] - (window - 1) / 2.0) / cell
    if not smooth:
        ys, xs = np.rint(ys), np.rint(xs)
    ys = np.clip(ys, 0, cm.shape[0] - 1)
    xs = np.clip(xs, 0, cm.shape[1] - 1)
    map_x, map_y = np.meshgrid(xs, ys)
    interp = cv2.INTER_LINEAR if smooth else cv2.INTER_NEAREST
    return cv2.remap(cm, map_x, map_y, interp, borderMode=cv2.BORDER_REPLICATE)


def top_mean(heatmap: np.ndarray, fraction: float = 0.02) -> float:
    """Mean of the hottest ``fraction`` of pixels: an image score that ignores isolated pixels."""
    flat = heatmap.ravel()
    k = max(1, int(round(flat.size * fraction)))
    return float(np.mean(np.partition(flat, flat.size - k)[-k:]))
