"""Plain-words flags drawn from what :func:`imlforensics.metadata.inspect_file` read.

Each flag is ``{"level": "warning" | "info", "flag": sentence, "evidence": what was read}``.
Warnings are signs of processing after capture; none is proof of tampering on its own (a photo
edited for exposure is edited), and their absence proves nothing either (metadata is easy to
forge or strip).
"""

from __future__ import annotations

from typing import Any

# names in Software / CreatorTool / history agents that mean an editor or converter wrote the file
EDITORS = ("photoshop", "lightroom", "gimp", "affinity", "pixelmator", "paint.net", "paintshop", "snapseed",
           "canva", "picsart", "facetune", "luminar", "capture one", "darktable", "rawtherapee", "krita",
           "photopea", "imagemagick", "graphicsmagick", "acdsee", "corel", "fotor", "meitu", "lensa", "remini",
           "midjourney", "dall-e", "stable diffusion", "firefly")


def names_editor(text: Any) -> str | None:
    """The editor named in ``text`` (e.g. "Adobe Photoshop 25.0 (Windows)" -> "photoshop"), or None."""
    if not isinstance(text, str):
        return None
    low = text.lower()
    return next((e for e in EDITORS if e in low), None)


def _span(seconds: float) -> str:
    for unit, size in (("days", 86400), ("hours", 3600), ("minutes", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"


def _add(out: list[dict[str, str]], level: str, flag: str, evidence: str) -> None:
    out.append({"level": level, "flag": flag, "evidence": evidence})


def make_flags(info: dict[str, Any]) -> list[dict[str, str]]:
    out: list[dict[str, str]] = []
    exif, xmp, iptc = info.get("exif") or {}, info.get("xmp") or {}, info.get("iptc") or {}
    jpeg, thumb, c2 = info.get("jpeg"), info.get("thumbnail") or {}, info.get("c2pa") or {}
    for field, value in (("EXIF Software", exif.get("software")), ("XMP CreatorTool", xmp.get("creator_tool")),
                         ("IPTC OriginatingProgram", iptc.get("originating_program"))):
        if names_editor(value):
            _add(out, "warning", "software field names an editor", f"{field} = {value!r}")
    dates = info.get("dates") or {}
    if dates.get("consistent") is False:
        names = {"datetime": "DateTime", "datetime_original": "DateTimeOriginal", "datetime_digitized": "DateTimeDigitized"}
        gaps = []
        for pair, secs in dates["differences_s"].items():
            if abs(secs) > 2:
                a, b = pair.split("-")
                gaps.append(f"{names[a]} is {_span(abs(secs))} {'after' if secs > 0 else 'before'} {names[b]}")
        _add(out, "warning", "dates disagree", f"{'; '.join(gaps)} (DateTime {exif.get('datetime')!r}, "
             f"DateTimeOriginal {exif.get('datetime_original')!r}, DateTimeDigitized {exif.get('datetime_digitized')!r})")
    px, py = exif.get("pixel_x"), exif.get("pixel_y")
    size = (info.get("width"), info.get("height"))
    if isinstance(px, int) and isinstance(py, int) and px > 0 and py > 0 and (px, py) != size and (py, px) != size:
        _add(out, "warning", "size differs from the size EXIF recorded (resized or cropped)",
             f"EXIF PixelXDimension x PixelYDimension = {px}x{py}, image is {size[0]}x{size[1]}")
    if thumb.get("present") and thumb.get("matches") is False:
        _add(out, "warning", "thumbnail differs from the image",
             f"EXIF thumbnail {thumb.get('width')}x{thumb.get('height')}: mean gray difference "
             f"{thumb.get('mean_difference')}, worst cell {thumb.get('worst_cell_difference')} (0-255)"
             + ("" if thumb.get("aspect_matches", True) else "; its aspect ratio differs from the image's"))
    edits = [h for h in xmp.get("history") or [] if h.get("action") not in (None, "created")]
    if edits:
        agents = sorted({h.get("softwareAgent") for h in edits if h.get("softwareAgent")})
        _add(out, "warning", "XMP history records edits",
             f"{len(edits)} event(s): " + ", ".join(sorted({str(h.get('action')) for h in edits}))
             + (f" by {', '.join(agents)}" if agents else ""))
    if xmp.get("derived_from"):
        _add(out, "warning", "XMP says the file was derived from another document", f"xmpMM:DerivedFrom = {xmp['derived_from']}")
    if jpeg and jpeg.get("standard") and exif.get("make"):
        _add(out, "warning", "camera named in EXIF but the JPEG tables are libjpeg's (re-saved by software?)",
             f"Make = {exif.get('make')!r}; quantization tables = IJG standard at quality {jpeg.get('quality')}")
    if c2.get("present"):
        if c2.get("valid") is False:
            _add(out, "warning", "Content Credentials do not validate (changed after signing?)",
                 f"C2PA state {c2.get('validation_state')}: {', '.join(map(str, c2.get('validation_failures') or []))}")
        acts = [a["action"] for a in c2.get("actions") or [] if a.get("action") not in ("c2pa.created", "c2pa.opened")]
        if acts:
            _add(out, "info", "Content Credentials record edits", f"C2PA actions: {', '.join(map(str, acts))} "
                 f"(claim generator {c2.get('claim_generator')!r})")
    if jpeg and jpeg.get("truncated"):
        _add(out, "info", "the JPEG data is cut short or corrupt", "no end-of-image marker where the segments end")
    if jpeg and jpeg.get("trailing_bytes", 0) > 0:
        _add(out, "info", "data after the end of the JPEG", f"{jpeg['trailing_bytes']} bytes after EOI")
    if not any(d.get("present") for d in (exif, xmp, iptc, c2)):
        _add(out, "info", "no EXIF, XMP, IPTC or C2PA metadata (stripped, screenshot, or generated)",
             f"{info.get('format')} file without metadata segments")
    return out
