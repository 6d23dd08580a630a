"""Pictures of ``imlf make-mask`` at work: original, tampered copy, and the mask found on it.

    python benchmarks/make_mask_gallery.py [--out examples/make_mask_gallery.png]
    python benchmarks/make_mask_gallery.py --pairs ../shared/data/internet_pairs/pairs.csv --out /tmp/gallery.png

Without ``--pairs``: the project's own example edits (examples/, from freely licensed pictures),
each original degraded the way copies found online are (shrunk, re-graded, recompressed,
mirrored, rotated) and each tampered copy cropped, so the picture can ship with the project.
With ``--pairs``: every pair of the CSV (or the first ``--limit``), for looking at real edits by
eye; such pictures of third-party data stay on your machine.
"""

from __future__ import annotations

import argparse
import csv
import io
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
EX = ROOT / "examples"
HEIGHT = 220


def _jpeg(rgb: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def _read(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def example_pairs() -> list[tuple]:
    """(caption, original, tampered[, true mask]) from the project's examples, degraded as online
    copies are."""
    coffee, splice = _read(EX / "Au" / "coffee.jpg"), _read(EX / "Tp" / "splice.jpg")
    truth = np.asarray(Image.open(EX / "Gt" / "splice_gt.png").convert("L")) > 127
    astronaut, copymove = _read(EX / "Au" / "astronaut.jpg"), _read(EX / "Tp" / "copymove.jpg")
    small = cv2.resize(coffee, None, fx=0.6, fy=0.6, interpolation=cv2.INTER_AREA)
    graded = _jpeg(np.clip(255.0 * np.array([1.1, 1.0, 0.9]) * (small / 255.0) ** 0.8, 0, 255).astype(np.uint8), 70)
    h, w = astronaut.shape[:2]
    turn = cv2.warpAffine(astronaut, cv2.getRotationMatrix2D((w / 2, h / 2), 3.0, 0.8), (w, h), borderMode=cv2.BORDER_REFLECT)
    # a small picture mostly regenerated: 256 px, two thirds of it replaced by other content
    base = cv2.resize(coffee, (256, 180), interpolation=cv2.INTER_AREA)
    redone = base.copy()
    redone[:, 80:] = cv2.resize(astronaut, (256, 180), interpolation=cv2.INTER_AREA)[:, 80:]
    gone = np.zeros(base.shape[:2], bool)
    gone[:, 80:] = True
    shrunk = _jpeg(cv2.resize(base, None, fx=0.7, fy=0.7, interpolation=cv2.INTER_AREA), 75)
    return [
        ("splice: original 0.6x, re-graded, JPEG 70; copy cropped", graded, _jpeg(splice[20:-15, 30:-25], 85),
         truth[20:-15, 30:-25]),
        ("256 px, 69% regenerated: original 0.7x, JPEG 75; copy cropped, JPEG 85", shrunk,
         _jpeg(redone[8:-6, 5:-9], 85), gone[8:-6, 5:-9]),
        ("copy-move: original mirrored, JPEG 80", _jpeg(np.ascontiguousarray(astronaut[:, ::-1]), 80), copymove),
        ("copy-move: original rotated 3 deg, 0.8x", _jpeg(turn, 90), _jpeg(copymove[40:-40, 40:-40], 90)),
    ]


def _fit(img: np.ndarray) -> np.ndarray:
    return cv2.resize(img, (max(1, round(img.shape[1] * HEIGHT / img.shape[0])), HEIGHT), interpolation=cv2.INTER_AREA)


def row(caption: str, original: np.ndarray, tampered: np.ndarray, truth: np.ndarray | None = None) -> np.ndarray:
    from imlforensics.errors import ImlfError
    from imlforensics.makemask import make_mask

    try:
        res = make_mask(original, tampered)
        shade = tampered.astype(np.float32)
        shade[res.mask] = 0.45 * shade[res.mask] + 0.55 * np.array([255, 40, 40])
        found = np.clip(shade, 0, 255).astype(np.uint8)
        contours, _ = cv2.findContours(res.mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(found, contours, -1, (255, 255, 255), max(1, round(max(found.shape[:2]) / 300)))
        note = f"{100 * res.fraction:.1f}% changed, scale {res.report['scale_factor']}, {res.registration.model}"
        if truth is not None:
            note += f", IoU {float((res.mask & truth).sum() / max((res.mask | truth).sum(), 1)):.3f}"
    except ImlfError as exc:
        found, note = np.zeros_like(tampered), str(exc)[:60]
    tiles = [_fit(original), _fit(tampered), _fit(found)]
    strip = np.concatenate([np.pad(t, ((0, 0), (0, 6), (0, 0)), constant_values=255) for t in tiles], 1)
    label = Image.new("RGB", (strip.shape[1], 22), (255, 255, 255))
    ImageDraw.Draw(label).text((4, 5), f"{caption}  ->  {note}", fill=(0, 0, 0))
    return np.concatenate([np.asarray(label), strip, np.full((8, strip.shape[1], 3), 255, np.uint8)], 0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--pairs", type=Path, default=None, help="CSV with columns original, tampered")
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--out", type=Path, default=EX / "make_mask_gallery.png")
    args = ap.parse_args()
    if args.pairs:
        rows = list(csv.DictReader(open(args.pairs, newline="")))
        rows = rows[: args.limit] if args.limit else rows
        items = [(Path(r["tampered"]).name, _read(args.pairs.parent / r["original"]), _read(args.pairs.parent / r["tampered"]))
                 for r in rows]
    else:
        items = example_pairs()
    strips = [row(*it) for it in items]
    width = max(s.shape[1] for s in strips)
    sheet = np.concatenate([np.pad(s, ((0, 0), (0, width - s.shape[1]), (0, 0)), constant_values=255) for s in strips], 0)
    Image.fromarray(sheet).save(args.out, optimize=True)
    print(f"{len(strips)} pairs: original | tampered copy | mask found -> {args.out}")


if __name__ == "__main__":
    main()
