"""The EXIF thumbnail (IFD1) and whether it still shows the main image.

Cameras write a small JPEG of the picture into EXIF; many editors change the picture and leave the
thumbnail alone, so a thumbnail that shows other content is a classic sign of editing (Kee &
Farid, "Digital image authentication from thumbnails", SPIE Electronic Imaging 2010). The
thumbnail's bytes are extracted with exifread; the comparison is ours: the main image is reduced
to the thumbnail's size (after removing black bars the camera may have padded it with) and the
two are compared in gray, globally and over a 4x4 grid of cells, so that a local change shows.
"""

from __future__ import annotations

import io
import logging
from typing import Any

import numpy as np
from PIL import Image

MEAN_LIMIT = 10.0  # mean absolute gray difference (0..255) above which the thumbnail differs
CELL_LIMIT = 20.0  # the same in the worst of 4x4 cells: a local change (a matching one: ~1-5)
GRID = 4


def extract_thumbnail(data: bytes) -> bytes | None:
    """The EXIF thumbnail's JPEG bytes, or None."""
    import exifread

    logging.getLogger("exifread").setLevel(logging.ERROR)  # it logs every oddity of a file
    try:
        tags = exifread.process_file(io.BytesIO(data), details=False, extract_thumbnail=True)
    except Exception:  # noqa: BLE001  (malformed EXIF in an untrusted file)
        return None
    thumb = tags.get("JPEGThumbnail")
    return thumb if isinstance(thumb, (bytes, bytearray)) and len(thumb) > 4 else None


def _trim_bars(gray: np.ndarray, dark: float = 16.0) -> np.ndarray:
    """Remove uniform black rows/columns at the borders (letter-boxing)."""
    rows = np.where(gray.mean(axis=1) > dark)[0]
    cols = np.where(gray.mean(axis=0) > dark)[0]
    if rows.size == 0 or cols.size == 0:
        return gray
    return gray[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]


def compare(thumb: Image.Image, main: Image.Image) -> dict[str, Any]:
    """Mean and worst-cell absolute gray difference between the thumbnail and the reduced image."""
    t = np.asarray(thumb.convert("L"), dtype=np.float32)
    aspect_main = main.width / main.height
    if abs(t.shape[1] / t.shape[0] - aspect_main) / aspect_main > 0.03:
        t = _trim_bars(t)
    h, w = t.shape
    reduced = main.convert("L").resize((w, h), Image.Resampling.BOX, reducing_gap=2.0)
    diff = np.abs(t - np.asarray(reduced, dtype=np.float32))
    cells = [diff[i * h // GRID:(i + 1) * h // GRID, j * w // GRID:(j + 1) * w // GRID].mean()
             for i in range(GRID) for j in range(GRID) if h >= GRID and w >= GRID]
    aspect_ok = abs(w / h - aspect_main) / aspect_main <= 0.03
    mean, worst = float(diff.mean()), float(max(cells) if cells else diff.mean())
    return {"mean_difference": round(mean, 2), "worst_cell_difference": round(worst, 2), "aspect_matches": aspect_ok,
            "matches": aspect_ok and mean <= MEAN_LIMIT and worst <= CELL_LIMIT}


def read_thumbnail(data: bytes, main: Image.Image) -> dict[str, Any]:
    """Present or not, its size and whether it matches ``main`` (the opened main image)."""
    raw = extract_thumbnail(data)
    if raw is None:
        return {"present": False}
    try:
        thumb = Image.open(io.BytesIO(raw))
        thumb.load()
    except Exception:  # noqa: BLE001
        return {"present": True, "bytes": len(raw), "error": "the thumbnail cannot be decoded"}
    out: dict[str, Any] = {"present": True, "bytes": len(raw), "width": thumb.width, "height": thumb.height}
    try:
        main.draft("RGB", (thumb.width * 2, thumb.height * 2))  # JPEG: decode at a reduced scale, fast
        out.update(compare(thumb, main))
    except Exception as exc:  # noqa: BLE001  (the main image is undecodable: reported elsewhere)
        out["error"] = f"cannot compare: {type(exc).__name__}"
    return out
