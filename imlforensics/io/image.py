"""Reading images for analysis.

Forensic analysis must look at the pixels as they are stored in the file, so this module decodes
without applying the EXIF orientation (it is recorded instead) and converts unusual pixel formats in
one documented way each:

=================  =========================================================================
stored mode        what the detectors see
=================  =========================================================================
RGB                the stored values
L, 1 (grayscale)   the gray channel copied to R, G and B
LA, RGBA, PA       the colour values as stored; the alpha channel is dropped (not composited)
P (palette)        each index replaced by its palette colour
I;16 / I (16-bit)  values divided by 257 and rounded (0..65535 onto 0..255, no stretching)
16-bit colour      reduced to 8 bits per channel by the decoder (high byte)
CMYK               Pillow's conversion to RGB (no ICC profile applied)
F (float)          clipped to 0..255 (0..1 data scaled by 255 first)
other (YCbCr, LAB) Pillow's conversion to RGB
=================  =========================================================================

Every conversion other than RGB is named in ``ImageData.conversion`` and so in the JSON report.
Multi-frame files (TIFF pages, animated WebP) are analysed on their first frame.
"""

from __future__ import annotations

import hashlib
import io
import threading
import warnings
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from ..errors import ImageError
from .files import check_input

SUPPORTED_FORMATS = {"JPEG", "MPO", "PNG", "TIFF", "WEBP", "BMP"}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".tif", ".tiff", ".webp", ".bmp"}
DEFAULT_MAX_PIXELS = 150_000_000
EXIF_ORIENTATION_TAG = 0x0112

ImageFile.LOAD_TRUNCATED_IMAGES = False
_PIL_LIMIT_LOCK = threading.Lock()


@dataclass
class JpegData:
    """Quantized DCT coefficients and quantization tables, read from the file (not the pixels).

    ``coef[c]`` has shape (blocks_high, blocks_wide, 8, 8), frequencies in natural order
    (``[v, u]``, vertical then horizontal); ``qtables[c]`` is the 8x8 table of component ``c``
    (0 = luma, 1 = Cb, 2 = Cr).
    """

    coef: list[np.ndarray]
    qtables: list[np.ndarray]
    progressive: bool


@dataclass
class ImageData:
    """An image ready for analysis: stored RGB pixels plus what the file says about itself."""

    pixels: np.ndarray
    path: Path | None = None
    format: str | None = None
    mode: str = "RGB"
    conversion: str | None = None
    orientation: int | None = None
    sha256: str | None = None
    frames: int = 1
    notes: list[str] = field(default_factory=list)

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def is_jpeg(self) -> bool:
        return self.format in ("JPEG", "MPO") and self.path is not None

    @cached_property
    def gray(self) -> np.ndarray:
        """Luma (ITU-R BT.601, as JPEG uses) as float32 in 0..255."""
        rgb = self.pixels.astype(np.float32)
        return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114

    @cached_property
    def jpeg(self) -> JpegData:
        """DCT coefficients of the JPEG file; raises ImageError when the file is not a JPEG."""
        if not self.is_jpeg:
            raise ImageError(f"not a JPEG file (format: {self.format or 'pixels only'})")
        return read_jpeg_coefficients(self.path)


ImageLike = Union[str, Path, np.ndarray, Image.Image, ImageData]


def read_jpeg_coefficients(path: str | Path) -> JpegData:
    """Read quantized DCT coefficients and quantization tables with jpeglib (libjpeg)."""
    import jpeglib

    try:
        raw = jpeglib.read_dct(str(path))
        raw.load()
    except Exception as exc:  # libjpeg reports corrupt streams in many ways
        raise ImageError(f"cannot read JPEG coefficients: {_one_line(exc)}") from None
    coef, qtables = [raw.Y], [raw.qt[raw.quant_tbl_no[0]]]
    if raw.has_chrominance and raw.Cb is not None:
        for i, comp in ((1, raw.Cb), (2, raw.Cr)):
            coef.append(comp)
            qtables.append(raw.qt[raw.quant_tbl_no[i]])
    return JpegData(
        coef=[np.asarray(c, dtype=np.int16) for c in coef],
        qtables=[np.asarray(q, dtype=np.int32) for q in qtables],
        progressive=bool(raw.progressive_mode),
    )


def load_image(path: str | Path, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> ImageData:
    """Decode an image file for analysis, or raise ImageError with a one-line reason."""
    path = Path(path)
    data = _read_bytes(path, max_pixels)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with pillow_limit_off():
                im = Image.open(io.BytesIO(data))
            fmt = im.format
            width, height = im.size
            if max_pixels is not None and width * height > max_pixels:
                raise ImageError(
                    f"image is {width}x{height} = {pixel_count(width * height)}, over the "
                    f"--max-pixels limit of {pixel_count(max_pixels)}"
                )
            if width == 0 or height == 0:
                raise ImageError(f"empty image ({width}x{height} pixels)")
            if fmt not in SUPPORTED_FORMATS:
                raise ImageError(f"unsupported image format {fmt} (supported: JPEG, PNG, TIFF, WebP, BMP)")
            frames = int(getattr(im, "n_frames", 1) or 1)
            im.load()
            orientation = _orientation(im)
            pixels, conversion = _to_rgb8(im)
            bits = _stored_bits(im, data)
            if bits > 8 and not im.mode.startswith(("I", "F")):  # 16-bit gray has its own conversion
                reduced = f"{bits}-bit colour reduced to 8 bits per channel by the decoder (high byte)"
                conversion = f"{reduced}; {conversion}" if conversion else reduced
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(f"not a recognised image file ({_sniff(data)})") from None
    except Image.DecompressionBombError as exc:
        raise ImageError(f"decompression bomb refused: {_one_line(exc)}") from None
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as exc:
        raise ImageError(f"corrupt or truncated image data: {_one_line(exc)}") from None
    notes = [f"{frames} frames: analysed the first"] if frames > 1 else []
    return ImageData(
        pixels=pixels,
        path=path,
        format=fmt,
        mode=im.mode,
        conversion=conversion,
        orientation=orientation,
        sha256=hashlib.sha256(data).hexdigest(),
        frames=frames,
        notes=notes,
    )


def as_image(image: ImageLike, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> ImageData:
    """Accept a path, an RGB/gray numpy array, a PIL image or an ImageData."""
    if isinstance(image, ImageData):
        return image
    if isinstance(image, (str, Path)):
        return load_image(image, max_pixels=max_pixels)
    if isinstance(image, Image.Image):
        if 0 in image.size:
            raise ImageError(f"empty image ({image.size[0]}x{image.size[1]} pixels)")
        pixels, conversion = _to_rgb8(image)
        return ImageData(pixels=pixels, format=image.format, mode=image.mode, conversion=conversion)
    if isinstance(image, np.ndarray):
        return ImageData(pixels=_array_to_rgb8(image), format=None, mode="array")
    raise TypeError(f"expected a path, numpy array, PIL image or ImageData, got {type(image).__name__}")


# the first bytes of every format that load_image accepts
_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+", b"BM")


def pixel_count(n: int | float) -> str:
    """``12.0 MP`` for large counts, ``1000 pixels`` below a tenth of a megapixel."""
    return f"{n / 1e6:.1f} MP" if n >= 100_000 else f"{int(n)} pixels"


def max_file_bytes(max_pixels: int | None) -> int | None:
    """The largest file an image of ``max_pixels`` can come in: 8 bytes a pixel (16-bit RGBA,
    uncompressed) plus 16 MB of metadata; None when pixels are not limited."""
    return None if max_pixels is None else max_pixels * 8 + 16_000_000


def _read_bytes(path: Path, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> bytes:
    """The file's bytes, after checks that read as little as possible: a FIFO, device or folder is
    refused before it is opened, a file that does not start like an image is refused after its
    first bytes, and no file larger than an image of ``max_pixels`` could be is read at all."""
    size = check_input(path, ImageError).st_size
    if size == 0:
        raise ImageError("empty file (0 bytes)")
    try:
        with open(path, "rb") as f:
            head = f.read(16)
            if not (head.startswith(_SIGNATURES) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")):
                raise ImageError(f"not a recognised image file ({_sniff(head + f.read(496))})")
            limit = max_file_bytes(max_pixels)
            if limit is not None and size > limit:
                raise ImageError(f"file is {size / 1e6:.0f} MB, more than an image within the --max-pixels "
                                 f"limit of {pixel_count(max_pixels)} can take")
            data = head + f.read()
    except OSError as exc:
        raise ImageError(f"cannot read file: {exc.strerror or exc}") from None
    return data


def _stored_bits(im: Image.Image, data: bytes) -> int:
    """Bits per sample as stored (PNG's IHDR, TIFF's BitsPerSample); 8 when the file does not say."""
    try:
        if im.format == "PNG" and len(data) > 25:
            return int(data[24])
        if im.format == "TIFF":
            bits = im.tag_v2.get(258)
            return int(max(bits) if isinstance(bits, tuple) else bits or 8)
    except (TypeError, ValueError, AttributeError):
        pass
    return 8


class pillow_limit_off:
    """Let our own --max-pixels check decide, instead of Pillow's fixed decompression-bomb limit
    (which warns on stderr above 89 MP and refuses above 179 MP).

    Pillow's check is switched off only while a header is opened; ``load_image`` compares the
    header's size with ``max_pixels`` before any pixel is decoded, and detectors that reopen
    an image already checked (a JPEG round trip) open it under this too."""

    def __enter__(self):
        _PIL_LIMIT_LOCK.acquire()
        self.saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None

    def __exit__(self, *exc):
        Image.MAX_IMAGE_PIXELS = self.saved
        _PIL_LIMIT_LOCK.release()
        return False


def _orientation(im: Image.Image) -> int | None:
    try:
        value = im.getexif().get(EXIF_ORIENTATION_TAG)
    except Exception:
        return None
    return int(value) if isinstance(value, int) else None


def _to_rgb8(im: Image.Image) -> tuple[np.ndarray, str | None]:
    mode = im.mode
    if mode == "RGB":
        return np.ascontiguousarray(np.asarray(im, dtype=np.uint8)), None
    if mode in ("L", "1"):
        gray = np.asarray(im.convert("L"), dtype=np.uint8)
        return np.repeat(gray[..., None], 3, axis=2), "grayscale copied to R, G, B"
    if mode == "LA":
        gray = np.asarray(im, dtype=np.uint8)[..., 0]
        return np.repeat(gray[..., None], 3, axis=2), "grayscale copied to R, G, B; alpha dropped"
    if mode in ("RGBA", "RGBa", "RGBX"):
        return np.ascontiguousarray(np.asarray(im, dtype=np.uint8)[..., :3]), "alpha channel dropped"
    if mode in ("P", "PA"):
        rgb = np.asarray(im.convert("RGBA"), dtype=np.uint8)[..., :3]
        return np.ascontiguousarray(rgb), "palette expanded to RGB"
    if mode.startswith("I;16") or mode == "I":
        arr = np.asarray(im).astype(np.float64)
        if mode == "I" and arr.max(initial=0) <= 255:
            gray = np.clip(arr, 0, 255).astype(np.uint8)
            return np.repeat(gray[..., None], 3, axis=2), "32-bit integer grayscale copied to R, G, B"
        gray = np.clip(np.rint(arr / 257.0), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2), "16-bit grayscale divided by 257, copied to R, G, B"
    if mode == "F":
        arr = np.asarray(im, dtype=np.float64)
        if np.nanmax(arr, initial=0) <= 1.0:
            arr = arr * 255.0
        gray = np.clip(np.nan_to_num(np.rint(arr)), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2), "float grayscale clipped to 0..255"
    if mode == "CMYK":
        return np.asarray(im.convert("RGB"), dtype=np.uint8), "CMYK converted to RGB (no ICC profile)"
    return np.asarray(im.convert("RGB"), dtype=np.uint8), f"{mode} converted to RGB"


def _array_to_rgb8(arr: np.ndarray) -> np.ndarray:
    if arr.size == 0 or (arr.ndim >= 2 and 0 in arr.shape[:2]):
        raise ImageError(f"empty image array (shape {arr.shape})")
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
        raise ImageError(f"expected an HxW or HxWx3 array, got shape {arr.shape}")
    if arr.dtype == np.uint16:
        arr = np.rint(arr / 257.0)
    elif arr.dtype.kind == "f":
        if np.nanmax(arr, initial=0) <= 1.0:
            arr = arr * 255.0
        arr = np.rint(np.nan_to_num(arr))
    arr = np.clip(arr, 0, 255).astype(np.uint8)
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    return np.ascontiguousarray(arr[..., :3])


def _sniff(data: bytes) -> str:
    head = data[:512]
    if not head.strip(b"\x00"):
        return "only zero bytes"
    try:
        head.decode("utf-8")
        return "looks like text"
    except UnicodeDecodeError:
        pass
    if head.startswith(b"%PDF"):
        return "looks like a PDF"
    if head.startswith(b"PK"):
        return "looks like a ZIP archive"
    return "unknown binary data"


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
