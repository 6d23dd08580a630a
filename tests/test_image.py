"""Image loading: deliberate conversions, recorded orientation, one-line errors."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imlforensics.errors import ImageError
from imlforensics.io.image import as_image, load_image

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (40, 56, 3), dtype=np.uint8)


def save(tmp_path: Path, name: str, im: Image.Image, **kw) -> Path:
    p = tmp_path / name
    im.save(p, **kw)
    return p


def test_rgb_png_is_read_exactly(tmp_path):
    img = load_image(save(tmp_path, "a.png", Image.fromarray(RGB)))
    assert np.array_equal(img.pixels, RGB)
    assert img.format == "PNG" and img.conversion is None and img.sha256 and len(img.sha256) == 64


def test_grayscale_is_copied_to_three_channels(tmp_path):
    gray = RGB[..., 0]
    img = load_image(save(tmp_path, "g.png", Image.fromarray(gray)))
    assert img.pixels.shape == (40, 56, 3)
    assert all(np.array_equal(img.pixels[..., c], gray) for c in range(3))
    assert "grayscale" in img.conversion


def test_rgba_drops_alpha_without_compositing(tmp_path):
    rgba = np.dstack([RGB, np.full(RGB.shape[:2], 7, np.uint8)])  # nearly transparent
    img = load_image(save(tmp_path, "a.png", Image.fromarray(rgba, "RGBA")))
    assert np.array_equal(img.pixels, RGB)  # stored colours, not blended with a background
    assert "alpha" in img.conversion


def test_palette_is_expanded(tmp_path):
    pal = Image.fromarray(RGB).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    img = load_image(save(tmp_path, "p.png", pal))
    assert np.array_equal(img.pixels, np.asarray(pal.convert("RGB")))
    assert "palette" in img.conversion


def test_16bit_grayscale_is_scaled_not_stretched(tmp_path):
    import cv2

    a16 = np.full((20, 30), 1000, np.uint16)
    a16[5:10, 5:10] = 65535
    p = tmp_path / "g16.png"
    cv2.imwrite(str(p), a16)
    img = load_image(p)
    assert img.pixels[0, 0, 0] == round(1000 / 257) and img.pixels[6, 6, 1] == 255
    assert "16-bit" in img.conversion


def test_cmyk_jpeg_is_converted(tmp_path):
    cmyk = Image.fromarray(RGB).convert("CMYK")
    img = load_image(save(tmp_path, "c.jpg", cmyk, quality=95))
    assert img.pixels.shape == (40, 56, 3) and "CMYK" in img.conversion
    assert np.abs(img.pixels.astype(int) - RGB).mean() < 30  # colours survive roughly


def test_tiff_webp_bmp_are_read(tmp_path):
    for name, kw in (("a.tif", {}), ("a.webp", {"lossless": True}), ("a.bmp", {})):
        img = load_image(save(tmp_path, name, Image.fromarray(RGB), **kw))
        assert np.array_equal(img.pixels, RGB), name


def test_exif_orientation_is_recorded_not_applied(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6
    p = save(tmp_path, "o.jpg", Image.fromarray(RGB), quality=95, exif=exif)
    img = load_image(p)
    assert img.orientation == 6
    assert img.pixels.shape == (40, 56, 3)  # not rotated


def test_jpeg_coefficients_come_from_the_file(tmp_path):
    p = save(tmp_path, "q.jpg", Image.fromarray(RGB), quality=50)
    jpg = load_image(p).jpeg
    assert jpg.qtables[0][0, 0] == 16  # libjpeg's quality-50 luma table starts with 16
    assert jpg.coef[0].shape == (5, 7, 8, 8)


def test_png_has_no_jpeg_data(tmp_path):
    img = load_image(save(tmp_path, "a.png", Image.fromarray(RGB)))
    with pytest.raises(ImageError, match="not a JPEG"):
        img.jpeg


@pytest.mark.parametrize(
    "content, reason",
    [
        (None, "no such file"),
        (b"", "empty file"),
        (b"hello, I am text pretending to be a JPEG\n", "not a recognised image file (looks like text)"),
    ],
)
def test_bad_files_give_one_line_reasons(tmp_path, content, reason):
    p = tmp_path / "bad.jpg"
    if content is not None:
        p.write_bytes(content)
    with pytest.raises(ImageError) as info:
        load_image(p)
    assert reason in str(info.value) and "\n" not in str(info.value)


def test_truncated_jpeg_is_refused(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(RGB).save(buf, "JPEG", quality=90)
    p = tmp_path / "cut.jpg"
    p.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(ImageError, match="corrupt or truncated"):
        load_image(p)


def test_decompression_bomb_is_refused_before_decoding(tmp_path):
    p = save(tmp_path, "big.png", Image.new("L", (4000, 3000)))
    with pytest.raises(ImageError, match="over the --max-pixels limit"):
        load_image(p, max_pixels=1_000_000)
    assert load_image(p, max_pixels=20_000_000).width == 4000


def test_directory_is_refused(tmp_path):
    with pytest.raises(ImageError, match="is a directory"):
        load_image(tmp_path)


def test_arrays_and_pil_images_are_accepted():
    assert np.array_equal(as_image(RGB).pixels, RGB)
    assert as_image(RGB[..., 0]).pixels.shape == (40, 56, 3)
    assert np.array_equal(as_image(Image.fromarray(RGB)).pixels, RGB)
    with pytest.raises(ImageError):
        as_image(np.zeros((3, 4, 5, 6)))
