"""JPEG file structure: marker segments, quantization tables and what they say about the encoder.

The quantization tables come from Pillow (``Image.quantization``, natural order). Tables that are
exactly the example tables of ITU-T T.81 Annex K (K.1 luminance, K.2 chrominance) scaled by
libjpeg's quality formula are written by libjpeg and the many programs built on it (editors,
converters, web services); cameras and Photoshop use tables of their own (Kee, Johnson & Farid,
"Digital image authentication from JPEG headers", IEEE TIFS 2011). The marker list (APPn with its
identifier, COM, DQT, SOFn, DHT, DRI, SOS, RSTn counts) is read by walking the segments; nothing
inside a segment is parsed except the APPn identifier, a comment's text and the restart interval.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..io.jpegtables import STD_CHROMA, STD_LUMA, estimate_jpeg_quality, quality_scale

_SOF = {0xC0: "baseline", 0xC1: "extended sequential", 0xC2: "progressive", 0xC3: "lossless",
        0xC9: "arithmetic sequential", 0xCA: "arithmetic progressive", 0xCB: "arithmetic lossless"}
_SUBSAMPLING = {0: "4:4:4", 1: "4:2:2", 2: "4:2:0"}
MAX_SEGMENTS = 1000


def scaled_table(base: np.ndarray, quality: int) -> np.ndarray:
    """``base`` scaled as libjpeg scales it at ``quality`` (1..100), baseline-clipped to 1..255."""
    scale = int(quality_scale(quality))
    return np.clip((base * scale + 50) // 100, 1, 255)


def classify_tables(tables: dict[int, np.ndarray]) -> dict[str, Any]:
    """Estimated quality and whether the tables are libjpeg's standard ones at that quality."""
    luma = tables.get(0)
    if luma is None:
        return {"quality": None, "standard": None}
    q = estimate_jpeg_quality(luma)
    # the median estimate can be off by one at high qualities: try the neighbours too
    for cand in (q, q - 1, q + 1):
        if not 1 <= cand <= 100:
            continue
        ok = np.array_equal(luma, scaled_table(STD_LUMA, cand))
        chroma = [t for k, t in tables.items() if k != 0]
        ok = ok and all(np.array_equal(t, scaled_table(STD_CHROMA, cand)) for t in chroma)
        if ok:
            return {"quality": cand, "standard": True}
    return {"quality": q, "standard": False}


def read_segments(data: bytes) -> dict[str, Any]:
    """Walk the marker segments of a JPEG byte string: APPn identifiers, comments, SOF type,
    restart interval, number of scans and of RSTn markers in the entropy-coded data."""
    segs: list[dict[str, Any]] = []
    comments: list[str] = []
    out: dict[str, Any] = {"sof": None, "restart_interval": 0, "scans": 0, "restart_markers": 0,
                           "trailing_bytes": 0, "truncated": False}
    if data[:2] != b"\xff\xd8":
        out["truncated"] = True
        return {**out, "segments": segs, "comments": comments}
    i, n = 2, len(data)
    while i < n and len(segs) < MAX_SEGMENTS:
        if data[i] != 0xFF:
            out["truncated"] = True  # garbage where a marker should be
            break
        while i < n and data[i] == 0xFF:  # fill bytes
            i += 1
        if i >= n:
            break
        marker = data[i]
        i += 1
        if marker == 0xD9:  # EOI
            out["trailing_bytes"] = n - i
            segs.append({"marker": "EOI"})
            break
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:
            continue
        if i + 2 > n:
            out["truncated"] = True
            break
        length = int.from_bytes(data[i:i + 2], "big")
        body = data[i + 2:i + length]
        seg: dict[str, Any] = {"marker": _marker_name(marker), "length": length}
        if 0xE0 <= marker <= 0xEF:
            seg["id"] = body[:32].split(b"\0", 1)[0].decode("latin-1", "replace")[:32]
        elif marker == 0xFE:
            comments.append(body[:1000].decode("utf-8", "replace"))
        elif marker == 0xDD and len(body) >= 2:
            out["restart_interval"] = int.from_bytes(body[:2], "big")
        elif marker in _SOF:
            out["sof"] = out["sof"] or _SOF[marker]
        segs.append(seg)
        i += length
        if marker == 0xDA:  # SOS: skip the entropy-coded data up to the next real marker
            out["scans"] += 1
            while True:
                j = data.find(b"\xff", i)
                if j < 0 or j + 1 >= n:
                    i = n
                    out["truncated"] = True
                    break
                nxt = data[j + 1]
                if nxt == 0x00 or nxt == 0xFF:
                    i = j + 1 if nxt == 0xFF else j + 2
                    continue
                if 0xD0 <= nxt <= 0xD7:
                    out["restart_markers"] += 1
                    i = j + 2
                    continue
                i = j
                break
    return {**out, "segments": segs, "comments": comments}


def _marker_name(m: int) -> str:
    if 0xE0 <= m <= 0xEF:
        return f"APP{m - 0xE0}"
    names = {0xDB: "DQT", 0xC4: "DHT", 0xDA: "SOS", 0xDD: "DRI", 0xFE: "COM", 0xCC: "DAC"}
    if m in names:
        return names[m]
    if m in _SOF:
        return f"SOF{m - 0xC0}"
    return f"0xFF{m:02X}"


def read_jpeg(path: Path, im: Image.Image, data: bytes) -> dict[str, Any] | None:
    """The JPEG structure of an opened file, or None when it is not a JPEG."""
    if im.format != "JPEG":
        return None
    from PIL import JpegImagePlugin

    tables = {k: np.asarray(v, dtype=np.int64).reshape(8, 8) for k, v in getattr(im, "quantization", {}).items()}
    seg = read_segments(data)
    apps: list[str] = []
    for s in seg["segments"]:
        if s["marker"].startswith("APP"):
            label = f"{s['marker']} {s.get('id', '')}".strip()
            if label not in apps:
                apps.append(label)
    return {
        "quantization_tables": {str(k): t.tolist() for k, t in tables.items()},
        **classify_tables(tables),
        "subsampling": _SUBSAMPLING.get(JpegImagePlugin.get_sampling(im), "other") if im.layers >= 3 else "none (gray)",
        "coding": seg["sof"] or "unknown",
        "progressive": bool(im.info.get("progressive") or im.info.get("progression")),
        "scans": seg["scans"],
        "restart_interval": seg["restart_interval"],
        "restart_markers": seg["restart_markers"],
        "comments": seg["comments"],
        "app_segments": apps,
        "trailing_bytes": seg["trailing_bytes"],
        "truncated": seg["truncated"],
    }
