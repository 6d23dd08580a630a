"""What a file says about its history: ``inspect_file(path) -> dict`` (the work behind ``imlf inspect``).

EXIF, XMP, IPTC and ICC (:mod:`.exif`), the JPEG structure (:mod:`.jpeg`), the EXIF thumbnail
(:mod:`.thumbnail`), Content Credentials (:mod:`.c2pa`) and plain-words flags (:mod:`.flags`).
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

from ..errors import ImlfError

MAX_BYTES = 512 * 1024 * 1024


def inspect_file(path: Path | str, c2pa: bool = True) -> dict[str, Any]:
    """Metadata, JPEG structure, thumbnail, C2PA manifest and flags of one image file.

    Raises :class:`imlforensics.errors.ImlfError` with a one-line reason (the path not included)
    when the file cannot be read or is not an image. Nothing is decoded beyond the headers except
    for the thumbnail check, which decodes the main JPEG at a reduced scale.
    """
    import warnings

    from PIL import Image, UnidentifiedImageError

    from .c2pa import read_c2pa
    from .exif import date_consistency, icc_profile_name, read_exif, read_iptc, read_xmp
    from .flags import make_flags
    from .jpeg import read_jpeg
    from .thumbnail import read_thumbnail

    path = Path(path)
    try:
        if path.stat().st_size > MAX_BYTES:
            raise ImlfError(f"larger than {MAX_BYTES >> 20} MiB")
        data = path.read_bytes()
    except FileNotFoundError:
        raise ImlfError("no such file") from None
    except IsADirectoryError:
        raise ImlfError("is a folder") from None
    except OSError as exc:
        raise ImlfError(f"cannot read ({exc.strerror or exc})") from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # DecompressionBombWarning and friends: only headers are read
        try:
            im = Image.open(io.BytesIO(data))
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            raise ImlfError(f"not an image Pillow can read ({str(exc)[:120] or type(exc).__name__})") from None
        info: dict[str, Any] = {
            "file": str(path),
            "sha256": hashlib.sha256(data).hexdigest(),
            "bytes": len(data),
            "format": im.format,
            "mode": im.mode,
            "width": im.width,
            "height": im.height,
        }
        info["exif"] = read_exif(im)
        info["dates"] = date_consistency(info["exif"])
        info["xmp"] = read_xmp(im)
        info["iptc"] = read_iptc(im)
        info["icc_profile"] = icc_profile_name(im)
        info["jpeg"] = read_jpeg(path, im, data)
        info["thumbnail"] = read_thumbnail(data, Image.open(io.BytesIO(data)))
    info["c2pa"] = read_c2pa(path) if c2pa else {"available": None, "present": None, "note": "not checked"}
    info["flags"] = make_flags(info)
    return info
