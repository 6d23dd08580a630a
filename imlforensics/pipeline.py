"""Detect on one file and write its outputs: the work behind ``imlf detect``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from .detectors.base import Detector, Prediction
from .errors import NotApplicable, OutputError
from .image import DEFAULT_MAX_PIXELS, ImageData, load_image
from .outputs import (
    OutputPaths,
    components,
    heatmap_u8,
    json_bytes,
    npy_bytes,
    output_paths,
    overlay,
    png_bytes,
    write_atomic,
)


def detect_file(
    detector: Detector,
    path: Path,
    out_dir: Path,
    stem: str | None = None,
    threshold: float = 0.5,
    overwrite: bool = False,
    save_raw: bool = False,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    protected: frozenset[Path] = frozenset(),
    fallback: Detector | None = None,
) -> dict[str, Any]:
    """Analyse ``path`` and write heatmap, mask, overlay, JSON (and raw map) into ``out_dir``.

    Returns the JSON record. Raises an ImlfError subclass with a one-line reason on failure; no
    output is written for a failed image. ``protected`` are resolved paths that must never be
    written (the inputs of the batch).
    """
    start = time.perf_counter()
    paths = output_paths(out_dir, stem or path.stem, save_raw)
    _check_targets(paths, overwrite, protected | {path.resolve()})
    img = load_image(path, max_pixels=max_pixels)
    try:
        pred = detector.predict(img)
    except NotApplicable as exc:
        if fallback is None:
            raise
        pred = fallback.predict(img)
        pred.notes.insert(0, f"{detector.name} does not apply ({exc}): analysed with {fallback.name}")
        detector = fallback
    mask = pred.heatmap >= threshold
    record = make_record(img, pred, detector, threshold, mask, paths)
    write_atomic(paths.heatmap, png_bytes(heatmap_u8(pred.heatmap)), overwrite)
    write_atomic(paths.mask, png_bytes(mask.astype(np.uint8) * 255), overwrite)
    write_atomic(paths.overlay, png_bytes(overlay(img.pixels, pred.heatmap, mask)), overwrite)
    if paths.raw is not None:
        write_atomic(paths.raw, npy_bytes(pred.heatmap), overwrite)
    for layer, arr in pred.layers.items():  # e.g. a committee's agreement and disagreement maps
        target = paths.json.with_name(paths.json.name[: -len(".json")] + f".{layer}.png")
        write_atomic(target, png_bytes(heatmap_u8(arr)), overwrite)
        record.setdefault("outputs", {})[layer] = str(target)
    record["seconds"] = round(time.perf_counter() - start, 4)
    write_atomic(paths.json, json_bytes(record), overwrite)  # last: its presence marks completion
    return record


def make_record(img: ImageData, pred: Prediction, detector: Detector, threshold: float,
                mask: np.ndarray, paths: OutputPaths | None = None) -> dict[str, Any]:
    record: dict[str, Any] = {
        "image": str(img.path) if img.path else None,
        "sha256": img.sha256,
        "width": img.width,
        "height": img.height,
        "format": img.format,
        "mode": img.mode,
        "conversion": img.conversion,
        "exif_orientation": img.orientation,
        "detector": {"name": pred.detector, "version": pred.version, "kind": detector.kind},
        "imlforensics": __version__,
        "score": round(pred.score, 6),
        "threshold": threshold,
        "tampered_fraction": round(float(mask.mean()), 6),
        "boxes": components(mask, pred.heatmap),
        "detector_seconds": round(pred.seconds, 4),
        "notes": pred.notes,
        "details": pred.extras,
    }
    if paths is not None:
        record["outputs"] = {k: str(v) for k, v in vars(paths).items() if v is not None}
    return record


def _check_targets(paths: OutputPaths, overwrite: bool, protected: frozenset[Path]) -> None:
    for p in paths.all():
        if p.resolve() in protected:
            raise OutputError(f"refusing to write {p}: it is an input file")
    if not overwrite:
        existing = [p for p in paths.all() if p.exists()]
        if existing:
            raise OutputError(f"{existing[0]} exists (use --overwrite to replace it)")
