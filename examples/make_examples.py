"""Build the example forgeries in this folder from freely licensed pictures.

The pictures are the public-domain / CC0 samples that scikit-image ships (``skimage.data``):
``coffee`` (CC0, Rachel Michetti), ``chelsea`` (CC0, Stefan van der Walt), ``astronaut`` (public
domain, NASA) and ``rocket`` (public domain, SpaceX). Every edit is made here with a known mask,
so the folder is a tiny dataset in IMDL-BenCo layout (Tp/, Gt/, Au/, dataset.json) that
``imlf eval examples`` can score.

    pip install scikit-image && python examples/make_examples.py

The script is deterministic: rerunning it rewrites identical files.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

HERE = Path(__file__).resolve().parent


def jpeg(rgb: np.ndarray, quality: int) -> np.ndarray:
    """Round trip through a baseline JPEG at ``quality`` (4:2:0, libjpeg's standard tables)."""
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def fresh(rgb: np.ndarray) -> np.ndarray:
    """Scale by 7/8 so that no trace of the picture's own earlier JPEG compression stays aligned."""
    h, w = rgb.shape[:2]
    return np.asarray(Image.fromarray(rgb).resize((w * 7 // 8, h * 7 // 8), Image.LANCZOS))


def ellipse_mask(shape: tuple[int, int], box: tuple[int, int, int, int]) -> np.ndarray:
    im = Image.new("L", (shape[1], shape[0]), 0)
    ImageDraw.Draw(im).ellipse(box, fill=255)
    return np.asarray(im) > 0


def save(rel: str, rgb: np.ndarray, quality: int | None = None) -> None:
    path = HERE / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(rgb)
    if quality is None:
        im.save(path, optimize=True)
    else:
        im.save(path, "JPEG", quality=quality)


def splice(coffee: np.ndarray, chelsea: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The cat's head (from a lossless source, scaled by 0.8) pasted into a camera-like JPEG."""
    host = jpeg(coffee, 75)  # the "camera original": already JPEG-compressed once
    h, w = chelsea.shape[:2]
    donor = np.asarray(Image.fromarray(chelsea).resize((w * 4 // 5, h * 4 // 5), Image.LANCZOS))
    mask = ellipse_mask(host.shape[:2], (357, 43, 517, 203))  # 160 x 160 at an odd offset
    src = ellipse_mask(donor.shape[:2], (92, 32, 252, 192))
    out = host.copy()
    out[mask] = donor[src]
    return out, mask


def copy_move(astronaut: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The mission patch on the suit copied onto the plain background."""
    img = astronaut.copy()
    sy, sx, h, w = 299, 114, 72, 72  # source
    ty, tx = 117, 93  # target (odd offset, so the copy is off the JPEG grid)
    img[ty : ty + h, tx : tx + w] = astronaut[sy : sy + h, sx : sx + w]
    target = np.zeros(img.shape[:2], bool)
    target[ty : ty + h, tx : tx + w] = True
    source = np.zeros(img.shape[:2], bool)
    source[sy : sy + h, sx : sx + w] = True
    return img, target, source


def recompressed(rocket: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A region taken from a quality-60 JPEG of the same scene, then the whole saved at quality 90."""
    low = jpeg(rocket, 60)
    mask = np.zeros(rocket.shape[:2], bool)
    mask[120:280, 232:440] = True  # on the 8x8 grid: the region is aligned double JPEG
    out = rocket.copy()
    out[mask] = low[mask]
    return out, mask


def main() -> None:
    from skimage import data

    coffee, chelsea, astronaut, rocket = (fresh(f()) for f in (data.coffee, data.chelsea, data.astronaut, data.rocket))
    entries = []

    img, mask = splice(coffee, chelsea)
    save("Tp/splice.jpg", img, 90)
    save("Gt/splice_gt.png", (mask * 255).astype(np.uint8))
    entries.append(["Tp/splice.jpg", "Gt/splice_gt.png"])

    img, target, source = copy_move(astronaut)
    save("Tp/copymove.jpg", img, 92)
    save("Gt/copymove_gt.png", (target * 255).astype(np.uint8))
    save("Gt/copymove_source.png", (source * 255).astype(np.uint8))
    entries.append(["Tp/copymove.jpg", "Gt/copymove_gt.png"])

    img, mask = recompressed(rocket)
    save("Tp/recompressed.jpg", img, 90)
    save("Gt/recompressed_gt.png", (mask * 255).astype(np.uint8))
    entries.append(["Tp/recompressed.jpg", "Gt/recompressed_gt.png"])

    save("Au/coffee.jpg", jpeg(coffee, 75), 90)
    save("Au/astronaut.jpg", astronaut, 92)
    save("Au/rocket.jpg", rocket, 90)
    entries += [["Au/coffee.jpg", "Negative"], ["Au/astronaut.jpg", "Negative"], ["Au/rocket.jpg", "Negative"]]

    (HERE / "dataset.json").write_text(json.dumps(entries, indent=1) + "\n")
    print(f"wrote {len(entries)} images under {HERE}")


if __name__ == "__main__":
    main()
