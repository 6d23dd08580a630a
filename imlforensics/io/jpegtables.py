"""The JPEG standard's example luminance and chrominance tables and libjpeg's quality scaling of it.

Most software that writes JPEG (libjpeg and its descendants) uses the example tables of ITU-T T.81
Annex K scaled by a quality factor; knowing them lets detectors recognise a file's quality and
guess the tables of an earlier compression.
"""

from __future__ import annotations

import numpy as np

# ITU-T T.81 Annex K, table K.1 (luminance), natural order
STD_LUMA = np.array(
    [
        [16, 11, 10, 16, 24, 40, 51, 61],
        [12, 12, 14, 19, 26, 58, 60, 55],
        [14, 13, 16, 24, 40, 57, 69, 56],
        [14, 17, 22, 29, 51, 87, 80, 62],
        [18, 22, 37, 56, 68, 109, 103, 77],
        [24, 35, 55, 64, 81, 104, 113, 92],
        [49, 64, 78, 87, 103, 121, 120, 101],
        [72, 92, 95, 98, 112, 100, 103, 99],
    ]
)

# ITU-T T.81 Annex K, table K.2 (chrominance), natural order
STD_CHROMA = np.array(
    [
        [17, 18, 24, 47, 99, 99, 99, 99],
        [18, 21, 26, 66, 99, 99, 99, 99],
        [24, 26, 56, 99, 99, 99, 99, 99],
        [47, 66, 99, 99, 99, 99, 99, 99],
        [99, 99, 99, 99, 99, 99, 99, 99],
        [99, 99, 99, 99, 99, 99, 99, 99],
        [99, 99, 99, 99, 99, 99, 99, 99],
        [99, 99, 99, 99, 99, 99, 99, 99],
    ]
)


def quality_scale(quality: np.ndarray | int) -> np.ndarray:
    """libjpeg's scaling in percent: ``5000 / q`` below quality 50, ``200 - 2 q`` from 50 on."""
    q = np.asarray(quality)
    return np.where(q < 50, 5000 // np.maximum(q, 1), 200 - 2 * q)


def ijg_tables(base: np.ndarray = STD_LUMA) -> np.ndarray:
    """``base`` scaled as libjpeg does for qualities 1..100: array (100, 8, 8), row ``q - 1``."""
    scale = quality_scale(np.arange(1, 101))
    return np.clip((base[None] * scale[:, None, None] + 50) // 100, 1, 255)


def estimate_jpeg_quality(luma_table: np.ndarray) -> int:
    """Quality (1..100) on libjpeg's scale whose scaled standard table best matches ``luma_table``.

    The median ratio over the 64 entries is robust to rounding and to tables of other encoders.
    """
    table = np.asarray(luma_table, dtype=np.float64).reshape(8, 8)
    scale = float(np.median(table * 100.0 / STD_LUMA))
    quality = (200.0 - scale) / 2.0 if scale <= 100.0 else 5000.0 / max(scale, 1e-6)
    return int(np.clip(round(quality), 1, 100))
