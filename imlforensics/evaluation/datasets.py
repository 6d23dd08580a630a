"""Datasets in IMDL-BenCo layout.

Accepted forms:

* a JSON file holding ``[[image, mask_or_"Negative"], ...]``, paths relative to the JSON's folder;
* a folder with ``dataset.json`` (the same list);
* a folder with ``Tp/`` (tampered), ``Gt/`` (masks, ``<stem>_gt.png`` or ``<stem>.png``) and
  optionally ``Au/`` (authentic images, counted as negatives).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import DatasetError
from ..io.image import IMAGE_SUFFIXES

NEGATIVE = "Negative"


@dataclass(frozen=True)
class Sample:
    image: Path
    mask: Path | None  # None: authentic

    @property
    def authentic(self) -> bool:
        return self.mask is None


def load_dataset(path: str | Path) -> list[Sample]:
    """Read a dataset (see the module docstring) into a list of samples, checking that files exist."""
    path = Path(path)
    if path.is_file():
        samples = _from_json(path)
    elif (path / "dataset.json").is_file():
        samples = _from_json(path / "dataset.json")
    elif (path / "Tp").is_dir():
        samples = _from_folders(path)
    elif path.exists():
        raise DatasetError(f"{path}: not a dataset (expected a JSON list, dataset.json, or Tp/ and Gt/)")
    else:
        raise DatasetError(f"{path}: no such file or folder")
    missing = [s for s in samples if not s.image.is_file() or (s.mask is not None and not s.mask.is_file())]
    if missing:
        first = missing[0]
        what = first.image if not first.image.is_file() else first.mask
        raise DatasetError(f"{path}: {len(missing)} listed files are missing, e.g. {what}")
    if not samples:
        raise DatasetError(f"{path}: the dataset is empty")
    return samples


def read_mask(path: Path, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Boolean mask, resized with nearest neighbour to ``shape``. A pixel is tampered when its gray
    value is over half the range (127 of 255, 32767 of 65535); a mask whose values are only 0 and 1
    (saved without scaling) counts 1 as tampered."""
    import cv2

    try:
        with Image.open(path) as im:
            if im.mode in ("1", "L", "I;16", "I;16B", "I;16L", "I"):
                arr = np.asarray(im)
            else:
                arr = np.asarray(im.convert("L"))
    except (OSError, ValueError, SyntaxError) as exc:
        raise DatasetError(f"mask {path}: not a readable image ({exc})") from None
    if arr.dtype == bool:
        mask = arr
    else:
        top = int(arr.max(initial=0))
        mask = arr > 0 if top == 1 else arr > (32767 if arr.dtype.itemsize > 1 and top > 255 else 127)
    if mask.ndim != 2:
        mask = mask.reshape(mask.shape[0], mask.shape[1], -1).any(axis=2)
    if shape is not None and mask.shape != tuple(shape):
        mask = cv2.resize(mask.astype(np.uint8), (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST) > 0
    return mask


def _from_json(path: Path) -> list[Sample]:
    try:
        rows = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DatasetError(f"{path}: cannot read the dataset list ({exc})") from None
    if not isinstance(rows, list):
        raise DatasetError(f"{path}: expected a JSON list of [image, mask] pairs")
    root = path.parent
    samples = []
    for i, row in enumerate(rows):
        if not (isinstance(row, (list, tuple)) and len(row) == 2 and all(isinstance(x, str) for x in row)):
            raise DatasetError(f"{path}: entry {i} is not an [image, mask] pair of strings")
        image, mask = row
        samples.append(Sample(root / image, None if mask == NEGATIVE else root / mask))
    return samples


def _from_folders(root: Path) -> list[Sample]:
    masks = {}
    gt_dir = root / "Gt"
    if gt_dir.is_dir():
        for m in gt_dir.iterdir():
            stem = m.stem[:-3] if m.stem.endswith("_gt") else m.stem
            masks[stem] = m
    samples = []
    for img in sorted((root / "Tp").iterdir()):
        if img.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        if img.stem not in masks:
            raise DatasetError(f"{root}: no mask in Gt/ for {img.name}")
        samples.append(Sample(img, masks[img.stem]))
    if (root / "Au").is_dir():
        samples += [Sample(p, None) for p in sorted((root / "Au").iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES]
    return samples
