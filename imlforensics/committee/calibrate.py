"""``imlf calibrate``: measure each committee member on a labelled dataset and write ``priors.json``.

For each member (any registered detector) over the dataset's images:

* its **prior**: the mean per-image pixel F1 over tampered images at its best *fixed* threshold
  (one threshold for the whole dataset, searched on a grid), or its mean pixel AUC
  (``--prior auc``), in percent, as CV-DD's a_i;
* that threshold (the member's own vote threshold in ``vote`` fusion);
* a monotone **calibration** from raw map value to the probability that a pixel is tampered
  (:func:`imlforensics.committee.fusion.fit_isotonic`), fitted on the pixels of a fit share of the images
  and checked on a held-out share (Brier score before and after, written to the file).

Images are split between fit and held-out shares deterministically by a hash of their path.
Authentic images contribute their pixels (all negative) to the calibration but no F1.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from .._version import __version__
from ..errors import ImlfError, NotApplicable
from ..evaluation.datasets import Sample, read_mask
from .fusion import fit_isotonic

FORMAT = "imlforensics-priors"
GRID = np.round(np.arange(0.02, 1.0, 0.02), 2)


def _unit_hash(path: str | Path, salt: str) -> float:
    return int(hashlib.sha256(f"{salt}:{Path(path).name}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF


def heldout(path: str | Path, share: float) -> bool:
    """Deterministic split: True for the held-out share of images (independent of the halves)."""
    return _unit_hash(path, "heldout") < share


def split_half(samples: list[Sample], part: int) -> list[Sample]:
    """One of two deterministic halves (0 or 1) of a dataset, by a hash of each file name."""
    return [s for s in samples if (_unit_hash(s.image, "half") < 0.5) == bool(part)]


@dataclass
class _Acc:
    """Running sums for one member."""

    f1_sums: np.ndarray
    n_tampered: int = 0
    auc_sum: float = 0.0
    failed: int = 0
    fit_x: list = None  # type: ignore[assignment]
    fit_y: list = None  # type: ignore[assignment]
    hold_x: list = None  # type: ignore[assignment]
    hold_y: list = None  # type: ignore[assignment]

    def __post_init__(self):
        self.fit_x, self.fit_y, self.hold_x, self.hold_y = [], [], [], []


def _f1_at(heat: np.ndarray, gt: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Pixel F1 at each threshold, from a histogram of the map on positive and negative pixels."""
    bins = np.minimum((np.clip(heat, 0, 1) * 1000).astype(np.int64), 999)
    pos = np.bincount(bins[gt], minlength=1000)[::-1].cumsum()[::-1]  # pixels >= bin, positive
    allc = np.bincount(bins.ravel(), minlength=1000)[::-1].cumsum()[::-1]
    idx = np.minimum((thresholds * 1000).astype(np.int64), 999)
    tp, pred = pos[idx].astype(np.float64), allc[idx].astype(np.float64)
    total_pos = float(gt.sum())
    return np.where(pred + total_pos > 0, 2 * tp / np.maximum(pred + total_pos, 1), 0.0)


def calibrate(samples: list[Sample], members: dict[str, Callable[[Path], np.ndarray]], prior_metric: str = "f1",
              heldout_share: float = 0.25, pixels_per_image: int = 20000, seed: int = 0,
              progress: Callable[[], None] | None = None) -> dict[str, Any]:
    """Run every member over ``samples``; return the priors document (see the module docstring).

    ``members`` maps a name to a function giving the member's raw map for an image path (raising
    NotApplicable when it abstains, ImlfError when the image fails).
    """
    from ..evaluation.metrics import auc as auc_metric

    if prior_metric not in ("f1", "auc"):
        raise ValueError("prior must be f1 or auc")
    rng = np.random.default_rng(seed)
    acc = {name: _Acc(np.zeros(GRID.size)) for name in members}
    for s in samples:
        gt_cache: np.ndarray | None = None
        for name, run in members.items():
            a = acc[name]
            try:
                heat = np.asarray(run(s.image), np.float32)
            except (NotApplicable, ImlfError):
                a.failed += 1
                continue
            if gt_cache is None or gt_cache.shape != heat.shape:
                gt_cache = np.zeros(heat.shape, bool) if s.mask is None else read_mask(s.mask, heat.shape)
            gt = gt_cache
            if s.mask is not None and gt.any():
                a.n_tampered += 1
                a.f1_sums += _f1_at(heat, gt, GRID)
                if not gt.all():
                    a.auc_sum += auc_metric(heat.ravel(), gt.ravel())
            take = rng.choice(heat.size, size=min(pixels_per_image, heat.size), replace=False)
            xs, ys = (a.hold_x, a.hold_y) if heldout(s.image, heldout_share) else (a.fit_x, a.fit_y)
            xs.append(heat.ravel()[take])
            ys.append(gt.ravel()[take])
        if progress:
            progress()
    out: dict[str, Any] = {}
    for name, a in acc.items():
        if a.n_tampered == 0:
            raise ImlfError(f"{name} analysed no tampered image of the dataset: cannot measure it")
        f1 = a.f1_sums / a.n_tampered
        k = int(np.argmax(f1))
        fx, fy = np.concatenate(a.fit_x), np.concatenate(a.fit_y)
        cal = fit_isotonic(fx, fy)
        check: dict[str, Any] = {}
        if a.hold_x:
            hx, hy = np.concatenate(a.hold_x), np.concatenate(a.hold_y).astype(np.float64)
            check = {"pixels": int(hx.size), "brier_raw": round(float(np.mean((hx - hy) ** 2)), 6),
                     "brier_calibrated": round(float(np.mean((cal(hx) - hy) ** 2)), 6),
                     "positive_share": round(float(hy.mean()), 6)}
        mean_auc = a.auc_sum / a.n_tampered
        out[name] = {"prior": round(100 * (float(f1[k]) if prior_metric == "f1" else mean_auc), 3),
                     "f1_best_fixed": round(float(f1[k]), 4), "threshold": float(GRID[k]), "auc": round(mean_auc, 4),
                     "tampered_images": a.n_tampered, "abstained_or_failed": a.failed,
                     "calibration": cal.to_json(), "heldout": check}
    return out


def priors_document(dataset: str, members: dict[str, Any], versions: dict[str, str], prior_metric: str,
                    images: int, note: str = "") -> dict[str, Any]:
    for name, v in versions.items():
        members[name]["version"] = v
    return {"format": FORMAT, "format_version": 2, "dataset": dataset, "images": images, "prior_metric": prior_metric,
            "imlforensics": __version__, "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "note": note, "members": members}


def read_priors(path: str | Path) -> dict[str, Any]:
    """Read and check a priors file written by ``imlf calibrate``."""
    try:
        doc = json.loads(Path(path).read_text())
    except OSError as exc:
        raise ImlfError(f"{path}: cannot read the priors file ({exc.strerror or exc})") from None
    except ValueError:
        raise ImlfError(f"{path}: not a JSON priors file") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or not isinstance(doc.get("members"), dict):
        raise ImlfError(f"{path}: not a priors file written by `imlf calibrate`")
    return doc


def iter_names(items: Iterable[str]) -> list[str]:
    return [n.strip() for item in items for n in item.split(",") if n.strip()]
