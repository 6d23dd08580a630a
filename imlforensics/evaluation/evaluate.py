"""Run a detector (or read saved maps) over a dataset and score it with :mod:`imlforensics.evaluation.metrics`."""

from __future__ import annotations

import csv
import io
import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from ..errors import ImlfError
from .datasets import Sample, read_mask


# What each pixel F1 of a summary means (the field reports all of these under the name "F1").
PROTOCOLS = {
    "f1_fixed": "IMDL-BenCo: one fixed threshold for every image (per-image CSV column: f1)",
    "f1_best": "best threshold per image (optimistic: the threshold is chosen with the ground truth)",
    "f1_grip_fixed": "GRIP/TruFor protocol: better of the map and the inverted map per image, fixed threshold",
    "f1_grip_best": "GRIP/TruFor protocol: better of the map and the inverted map per image, best threshold "
                    "(optimistic)",
    "f1_soft": "soft F1, no threshold: the heatmap read as a probability, 2 sum(h g) / (sum h + sum g)",
}


@dataclass
class ImageRecord:
    image: str
    authentic: bool
    score: float | None = None
    f1: float | None = None
    iou: float | None = None
    f1_best: float | None = None
    iou_best: float | None = None
    threshold_best: float | None = None
    auc: float | None = None
    f1_grip_fixed: float | None = None
    f1_grip_best: float | None = None
    f1_soft: float | None = None
    flagged: float | None = None
    seconds: float | None = None
    error: str | None = None
    warning: str | None = None


# A source turns a sample into (heatmap, image score, seconds); it raises ImlfError on failure.
Source = Callable[[Sample], "tuple[np.ndarray, float, float]"]


class DetectorSource:
    """Runs a registered detector on each sample's image."""

    def __init__(self, name: str, **options):
        from ..detectors.registry import load_detector

        self.name, self.options = name, options
        self.detector = load_detector(name, **options)

    def __call__(self, sample: Sample) -> tuple[np.ndarray, float, float]:
        pred = self.detector.predict(sample.image)
        return pred.heatmap, pred.score, pred.seconds


class DirectorySource:
    """Reads maps written earlier by ``imlf detect`` (``<stem>.heatmap.npy`` or ``<stem>.heatmap.png``,
    in the folder or, for runs of more than 10,000 images, in its ``ab/cd/`` sub-folders).

    The image score comes from ``<stem>.json`` when present, else from the map's maximum.
    """

    def __init__(self, pred_dir: str | Path):
        self.pred_dir = Path(pred_dir)
        if not self.pred_dir.is_dir():
            raise ImlfError(f"{self.pred_dir}: no such folder of predictions")

    def __call__(self, sample: Sample) -> tuple[np.ndarray, float, float]:
        from PIL import Image

        from ..io.inputs import fanout_stem

        stem = sample.image.stem
        base = self.pred_dir / stem
        if not any(base.with_name(stem + s).is_file() for s in (".heatmap.npy", ".heatmap.png")):
            base = self.pred_dir / fanout_stem(stem)  # a large run's two levels of sub-folders
        raw, png, meta = (base.with_name(stem + s) for s in (".heatmap.npy", ".heatmap.png", ".json"))
        if raw.is_file():
            heat = np.load(raw, allow_pickle=False).astype(np.float32)
        elif png.is_file():
            with Image.open(png) as im:
                arr = np.asarray(im)
            heat = arr.astype(np.float32) / (65535.0 if arr.dtype == np.uint16 else 255.0)
            if heat.ndim == 3:
                heat = heat[..., 0]
        else:
            raise ImlfError(f"no prediction {stem}.heatmap.npy or {stem}.heatmap.png in {self.pred_dir}")
        if heat.ndim != 2 or heat.size == 0:
            raise ImlfError(f"prediction for {stem} is not a 2-D map (shape {heat.shape})")
        bad = int(np.count_nonzero(~np.isfinite(heat)))
        if bad:
            raise ImlfError(f"prediction for {stem} has {bad} NaN or infinite values of {heat.size}")
        score = float(heat.max())
        if meta.is_file():
            try:
                score = float(json.loads(meta.read_text()).get("score", score))
            except (OSError, ValueError, TypeError, AttributeError):
                raise ImlfError(f"{meta}: not a readable imlf detect report") from None
        return heat, score, 0.0


def score_sample(sample: Sample, source: Source, threshold: float, device: str | None = None) -> ImageRecord:
    """Predict (or load) one sample's map and compute its metrics; errors become the record's error."""
    from .metrics import pixel_scores

    rec = ImageRecord(image=str(sample.image), authentic=sample.authentic)
    warnings: list[str] = []
    try:
        heat, score, seconds = source(sample)
        heat = np.asarray(heat, np.float32)
        if not np.isfinite(heat).all():
            raise ImlfError("the map has NaN or infinite values")
        size = _image_size(sample.image)
        if size is not None and heat.shape != size:
            warnings.append(f"map is {heat.shape[1]}x{heat.shape[0]}, the image {size[1]}x{size[0]}: map resized")
            heat = _resize(heat, size)
        if sample.mask is None:
            gt = np.zeros(heat.shape, bool)
        else:
            gt_raw = read_mask(sample.mask)
            if gt_raw.shape != heat.shape:
                warnings.append(f"mask is {gt_raw.shape[1]}x{gt_raw.shape[0]}, the image {heat.shape[1]}x{heat.shape[0]}: "
                                "mask resized (nearest)")
                gt = read_mask(sample.mask, heat.shape)
            else:
                gt = gt_raw
            if not gt.any():
                warnings.append("the ground-truth mask marks no pixel: left out of the pixel metrics")
    except ImlfError as exc:
        rec.error = str(exc)
        return rec
    except MemoryError:
        rec.error = "out of memory"
        return rec
    except (OSError, ValueError) as exc:
        rec.error = f"{type(exc).__name__}: {exc}"
        return rec
    rec.warning = "; ".join(warnings) or None
    ps = pixel_scores(heat, gt, threshold, device)
    rec.score, rec.seconds = float(score), float(seconds)
    rec.f1, rec.iou, rec.f1_best, rec.iou_best = ps.f1, ps.iou, ps.f1_best, ps.iou_best
    rec.threshold_best, rec.auc, rec.flagged = ps.threshold_best, ps.auc, ps.flagged
    rec.f1_grip_fixed, rec.f1_grip_best, rec.f1_soft = ps.f1_grip_fixed, ps.f1_grip_best, ps.f1_soft
    return rec


def _image_size(path: Path) -> tuple[int, int] | None:
    """(height, width) from the image file's header, or None when it cannot be read."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.size[1], im.size[0]
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None


def _resize(heat: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    import cv2

    return cv2.resize(heat, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)


_WORKER: dict = {}


def _init_worker(factory: Callable[[], Source], threshold: float) -> None:
    import torch

    torch.set_num_threads(1)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    _WORKER["source"] = factory()
    _WORKER["threshold"] = threshold


def _work(sample: Sample) -> ImageRecord:
    return score_sample(sample, _WORKER["source"], _WORKER["threshold"])


def run(samples: list[Sample], factory: Callable[[], Source], threshold: float = 0.5, jobs: int = 1,
        device: str | None = None) -> Iterator[ImageRecord]:
    """Yield one record per sample, in order. ``factory`` builds the source (once per process)."""
    if jobs <= 1:
        source = factory()
        for s in samples:
            yield score_sample(s, source, threshold, device)
        return
    from ..runs.workers import pool_map

    yield from pool_map(_work, samples, jobs, _init_worker, (factory, threshold), chunksize=4)


def summarize(records: Iterable[ImageRecord], threshold: float) -> dict:
    """Dataset-level figures from per-image records (see :mod:`imlforensics.evaluation.metrics`)."""
    from .metrics import auc, balanced_accuracy

    recs = list(records)
    ok = [r for r in recs if r.error is None]
    tampered = [r for r in ok if not r.authentic and r.f1 is not None]
    authentic = [r for r in ok if r.authentic]

    def mean(vals):
        vals = [v for v in vals if v is not None]
        return float(np.mean(vals)) if vals else None

    out: dict = {
        "threshold": threshold,
        "images": len(recs),
        "tampered": sum(not r.authentic for r in recs),
        "authentic": sum(r.authentic for r in recs),
        "failed": len(recs) - len(ok),
        "pixel": {
            "n": len(tampered),
            "f1_fixed": mean(r.f1 for r in tampered),
            "iou_fixed": mean(r.iou for r in tampered),
            "f1_best": mean(r.f1_best for r in tampered),
            "iou_best": mean(r.iou_best for r in tampered),
            "auc": mean(r.auc for r in tampered),
            "f1_grip_fixed": mean(r.f1_grip_fixed for r in tampered),
            "f1_grip_best": mean(r.f1_grip_best for r in tampered),
            "f1_soft": mean(r.f1_soft for r in tampered),
        },
        "protocols": PROTOCOLS,
    }
    if authentic:
        out["authentic_pixels"] = {
            "n": len(authentic),
            "flagged_fixed": mean(r.flagged for r in authentic),
            "any_flagged": float(np.mean([(r.flagged or 0) > 0 for r in authentic])),
        }
    if authentic and any(not r.authentic for r in ok):
        labels = np.array([not r.authentic for r in ok])
        scores = np.array([r.score for r in ok], dtype=np.float64)
        out["image"] = {
            "auc": _nan_none(auc(scores, labels)),
            "balanced_accuracy": _nan_none(balanced_accuracy(scores >= threshold, labels)),
        }
    secs = [r.seconds for r in ok if r.seconds]
    out["seconds_median"] = float(np.median(secs)) if secs else None
    errors: dict[str, int] = {}
    for r in recs:
        if r.error:
            errors[r.error] = errors.get(r.error, 0) + 1
    out["errors"] = errors
    out["warned"] = sum(1 for r in recs if r.warning)
    return out


def _nan_none(x: float) -> float | None:
    return None if x is None or math.isnan(x) else float(x)


def records_csv(records: Iterable[ImageRecord]) -> str:
    buf = io.StringIO()
    fields = list(ImageRecord.__dataclass_fields__)
    w = csv.DictWriter(buf, fieldnames=fields)
    w.writeheader()
    for r in records:
        w.writerow(asdict(r))
    return buf.getvalue()
