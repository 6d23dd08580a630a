"""EXIF, XMP, IPTC and ICC metadata of an image file, read with Pillow (and defusedxml for XMP).

What is reported is what an analyst starts from (see e.g. Farid, *Photo Forensics*, MIT Press
2016, ch. 3 "Format-based" and ch. 4 on metadata): the camera (Make, Model), the software that last
wrote the file, the three EXIF dates (DateTime is rewritten by editors, DateTimeOriginal and
DateTimeDigitized are set at capture), whether GPS data is present, the orientation, the pixel
size the camera recorded, the edit history that XMP keeps (xmpMM:History, xmpMM:DerivedFrom,
photoshop:History, xmp:CreatorTool), IPTC's originating program and the ICC profile's name.
"""

from __future__ import annotations

import datetime as _dt
import io
import warnings
from typing import Any

from PIL import ExifTags, Image

_IFD0 = {"make": 0x010F, "model": 0x0110, "software": 0x0131, "datetime": 0x0132, "orientation": 0x0112,
         "artist": 0x013B, "host_computer": 0x013C}
_EXIF = {"datetime_original": 0x9003, "datetime_digitized": 0x9004, "offset_time": 0x9010,
         "offset_time_original": 0x9011, "pixel_x": 0xA002, "pixel_y": 0xA003, "lens_model": 0xA434}
ORIENTATIONS = {1: "normal", 2: "mirrored", 3: "rotated 180", 4: "mirrored vertically", 5: "mirrored, rotated 90 CCW",
                6: "rotated 90 CW", 7: "mirrored, rotated 90 CW", 8: "rotated 90 CCW"}
DATE_FORMAT = "%Y:%m:%d %H:%M:%S"


def _text(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.split(b"\0", 1)[0].decode("utf-8", "replace")
    if isinstance(value, str):
        return value.strip("\0 ").strip() or None
    if isinstance(value, tuple) and len(value) == 1:
        return _text(value[0])
    try:
        return int(value)
    except (TypeError, ValueError):
        return str(value)


def parse_date(text: str | None) -> _dt.datetime | None:
    """An EXIF date ``YYYY:MM:DD HH:MM:SS`` (a few common variants too), or None."""
    if not text:
        return None
    t = str(text).strip()[:19]
    for fmt in (DATE_FORMAT, "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S"):
        try:
            return _dt.datetime.strptime(t, fmt)
        except ValueError:
            continue
    return None


def read_exif(im: Image.Image) -> dict[str, Any]:
    """The EXIF fields listed above, None where absent; ``present``: whether the file has EXIF."""
    exif = im.getexif()
    out: dict[str, Any] = {}
    for key, tag in _IFD0.items():
        out[key] = _text(exif.get(tag))
    sub = exif.get_ifd(ExifTags.IFD.Exif) if len(exif) else {}
    for key, tag in _EXIF.items():
        out[key] = _text(sub.get(tag))
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo) if len(exif) else {}
    out["gps"] = bool(gps) and any(k in gps for k in (2, 4))  # latitude or longitude recorded
    o = out["orientation"]
    out["orientation_text"] = ORIENTATIONS.get(o) if isinstance(o, int) else None
    out["tag_count"] = len(exif) + len(sub) + len(gps)
    # a TIFF's IFD0 always holds its layout tags: EXIF counts as present when a field above is set
    out["present"] = bool(sub) or bool(gps) or any(out[k] is not None for k in _IFD0)
    return out


def date_consistency(exif: dict[str, Any], tolerance_s: float = 2.0) -> dict[str, Any]:
    """Compare DateTime (last written), DateTimeOriginal and DateTimeDigitized.

    ``consistent`` is None when fewer than two dates are readable; ``differences`` gives each
    pair's gap in seconds (positive: the first is later).
    """
    names = ("datetime", "datetime_original", "datetime_digitized")
    dates = {n: parse_date(exif.get(n)) for n in names}
    unreadable = [n for n in names if exif.get(n) and dates[n] is None]
    known = [n for n in names if dates[n] is not None]
    diffs = {f"{a}-{b}": (dates[a] - dates[b]).total_seconds() for i, a in enumerate(known) for b in known[i + 1:]}
    consistent = None if len(known) < 2 else all(abs(d) <= tolerance_s for d in diffs.values())
    return {"consistent": consistent, "differences_s": diffs, "unreadable": unreadable}


def _xmp_list(node: Any) -> list[Any]:
    """The items of an RDF container (Seq/Bag/Alt) as Pillow's getxmp returns it."""
    if node is None:
        return []
    if isinstance(node, dict):
        for key in ("Seq", "Bag", "Alt"):
            if key in node:
                inner = node[key]
                if isinstance(inner, dict):
                    inner = inner.get("li", [])
                return inner if isinstance(inner, list) else [inner]
        return [node]
    return node if isinstance(node, list) else [node]


def _find(d: Any, key: str) -> Any:
    """The first value of ``key`` anywhere in Pillow's nested XMP dict."""
    if isinstance(d, dict):
        if key in d:
            return d[key]
        for v in d.values():
            found = _find(v, key)
            if found is not None:
                return found
    elif isinstance(d, list):
        for v in d:
            found = _find(v, key)
            if found is not None:
                return found
    return None


def read_xmp(im: Image.Image) -> dict[str, Any]:
    """XMP edit history: creator tool, history events (action, software agent, when), derived-from,
    Photoshop's history text and the document ids. Parsed by Pillow with defusedxml."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            xmp = im.getxmp()
        except Exception as exc:  # noqa: BLE001  (malformed XML in an untrusted file)
            return {"present": True, "error": f"unreadable XMP ({type(exc).__name__})"}
    raw_present = any(k in im.info for k in ("xmp", "XML:com.adobe.xmp")) or bool(xmp)
    if not xmp:
        out: dict[str, Any] = {"present": raw_present}
        if raw_present:
            out["error"] = "XMP present but not parsed (defusedxml missing or malformed XML)"
        return out
    history = []
    for ev in _xmp_list(_find(xmp, "History")):
        if isinstance(ev, dict):
            history.append({k: ev.get(k) for k in ("action", "softwareAgent", "when", "changed") if ev.get(k)})
        elif isinstance(ev, str) and ev.strip():
            history.append({"action": ev.strip()})
    derived = _find(xmp, "DerivedFrom")
    if isinstance(derived, dict):
        derived = {k: v for k, v in derived.items() if isinstance(v, str)} or None
    return {
        "present": True,
        "creator_tool": _text(_find(xmp, "CreatorTool")),
        "history": history,
        "derived_from": derived,
        "document_id": _text(_find(xmp, "DocumentID")),
        "original_document_id": _text(_find(xmp, "OriginalDocumentID")),
        "create_date": _text(_find(xmp, "CreateDate")),
        "modify_date": _text(_find(xmp, "ModifyDate")),
    }


_IPTC = {(2, 65): "originating_program", (2, 70): "program_version", (2, 55): "date_created",
         (2, 80): "byline", (2, 116): "copyright", (2, 120): "caption"}


def read_iptc(im: Image.Image) -> dict[str, Any]:
    """IPTC-IIM fields (Photoshop's APP13 block) via Pillow's IptcImagePlugin."""
    from PIL import IptcImagePlugin

    try:
        info = IptcImagePlugin.getiptcinfo(im) or {}
    except Exception:  # noqa: BLE001  (a malformed block in an untrusted file)
        return {"present": True, "error": "unreadable IPTC block"}
    out: dict[str, Any] = {"present": bool(info)}
    for key, name in _IPTC.items():
        if key in info:
            value = info[key]
            out[name] = _text(value[0] if isinstance(value, list) else value)
    return out


def icc_profile_name(im: Image.Image) -> str | None:
    """The ICC profile's description (e.g. 'sRGB IEC61966-2.1', 'Display P3'), or None."""
    data = im.info.get("icc_profile")
    if not data:
        return None
    try:
        from PIL import ImageCms

        desc = ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(io.BytesIO(data)))
        return desc.strip() or "(unnamed profile)"
    except Exception:  # noqa: BLE001  (ImageCms may be missing or the profile malformed)
        return "(unreadable profile)"
