"""Detect on one file and write its outputs: the work behind ``imlf detect``."""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from .._version import __version__
from ..detectors.base import Detector, Prediction
from ..errors import NotApplicable, OutputError
from ..io.files import safe_resolve
from ..io.image import DEFAULT_MAX_PIXELS, ImageData, load_image
from ..io.outputs import (
    OutputSet,
    OutputPaths,
    components,
    heatmap_u8,
    json_bytes,
    npy_bytes,
    output_paths,
    overlay,
    png_bytes,
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
    paths, img = open_input(path, out_dir, stem, overwrite, save_raw, max_pixels, protected)
    pred, used = analyse(detector, img, fallback)
    return write_outputs(img, pred, used, paths, threshold, overwrite, protected, time.perf_counter() - start)


def detect_stream(
    detector: Detector,
    items: Sequence[tuple[Path, str]],
    out_dir: Path,
    threshold: float = 0.5,
    overwrite: bool = False,
    save_raw: bool = False,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    protected: frozenset[Path] = frozenset(),
    fallback: Detector | None = None,
) -> Iterator[tuple[Path, dict[str, Any] | None, Exception | None]]:
    """:func:`detect_file` over ``items`` (path, output stem), yielding ``(path, record, error)`` in order.

    The detector runs in the calling thread while one thread decodes the next image and another
    writes the previous image's outputs, so decoding and encoding overlap the analysis. A result
    is yielded once all of its image's outputs are on disk; an image that fails yields its
    exception (and wrote nothing) and the others go on.

    While the stream runs, numpy's and OpenCV's BLAS pools are held to one thread: their idle
    threads spin for a while after every small matrix product (the classical detectors' only
    kind), and would take the core the decoding and writing threads need, for no gain (torch's
    own pools are left alone).
    """
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        yield from _stream(detector, items, out_dir, threshold, overwrite, save_raw, max_pixels, protected, fallback)


def _stream(detector: Detector, items: Sequence[tuple[Path, str]], out_dir: Path, threshold: float, overwrite: bool,
            save_raw: bool, max_pixels: int | None, protected: frozenset[Path],
            fallback: Detector | None) -> Iterator[tuple[Path, dict[str, Any] | None, Exception | None]]:

    def read(item: tuple[Path, str]) -> tuple[OutputPaths, ImageData, float]:
        t = time.perf_counter()
        paths, img = open_input(item[0], out_dir, item[1], overwrite, save_raw, max_pixels, protected)
        return paths, img, time.perf_counter() - t

    def finish(path: Path, written: Future | None, error: Exception | None):
        if written is not None:
            try:
                return path, written.result(), None
            except Exception as exc:  # noqa: BLE001  (handed to the caller, like the detector's errors)
                return path, None, exc
        return path, None, error

    with ThreadPoolExecutor(1, thread_name_prefix="imlf-read") as reader, \
            ThreadPoolExecutor(1, thread_name_prefix="imlf-write") as writer:
        nxt = reader.submit(read, items[0]) if items else None
        previous = None
        for k, item in enumerate(items):
            current, nxt = nxt, reader.submit(read, items[k + 1]) if k + 1 < len(items) else None
            written, error = None, None
            try:
                paths, img, seconds = current.result()
                t = time.perf_counter()
                pred, used = analyse(detector, img, fallback)
                seconds += time.perf_counter() - t
                written = writer.submit(write_outputs, img, pred, used, paths, threshold, overwrite, protected, seconds)
            except Exception as exc:  # noqa: BLE001
                error = exc
            if previous is not None:
                yield finish(*previous)
            previous = (item[0], written, error)
        if previous is not None:
            yield finish(*previous)


def open_input(path: Path, out_dir: Path, stem: str | None, overwrite: bool, save_raw: bool,
               max_pixels: int | None, protected: frozenset[Path]) -> tuple[OutputPaths, ImageData]:
    """Check that the outputs of ``path`` may be written, then decode it."""
    paths = output_paths(out_dir, stem or path.stem, save_raw)
    _check_targets(paths.all(), overwrite, protected | {safe_resolve(path)})
    if paths.json.parent != out_dir:  # a stem in sub-folders (io.inputs.fanout_stem)
        try:
            paths.json.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot create {paths.json.parent} ({exc.strerror or exc})") from None
    return paths, load_image(path, max_pixels=max_pixels)


def analyse(detector: Detector, img: ImageData, fallback: Detector | None = None) -> tuple[Prediction, Detector]:
    """The detector's prediction, or the fallback's when the detector does not apply."""
    try:
        return detector.predict(img), detector
    except NotApplicable as exc:
        if fallback is None:
            raise
        pred = fallback.predict(img)
        pred.notes.insert(0, f"{detector.name} does not apply ({exc}): analysed with {fallback.name}")
        return pred, fallback


def write_outputs(img: ImageData, pred: Prediction, detector: Detector, paths: OutputPaths, threshold: float,
                  overwrite: bool, protected: frozenset[Path] = frozenset(), seconds: float = 0.0) -> dict[str, Any]:
    """Write the outputs of one prediction, the JSON last (its presence marks completion).

    ``protected``: resolved paths never to write; ``seconds``: time already spent on the image
    (the record's ``seconds`` adds the writing).
    """
    start = time.perf_counter()
    # extra layers (a committee's agreement and disagreement maps) are checked with the rest
    # before anything is written; with --save-raw, the detector's float arrays (Noiseprint's residual) too
    base = paths.json.name[: -len(".json")]
    layers = {name: paths.json.with_name(f"{base}.{name}.png") for name in pred.layers}
    raws = {name: paths.json.with_name(f"{base}.{name}.npy") for name in pred.raw} if paths.raw is not None else {}
    _check_targets([*layers.values(), *raws.values()], overwrite,
                   protected | ({safe_resolve(img.path)} if img.path else set()))
    mask = pred.heatmap >= threshold
    record = make_record(img, pred, detector, threshold, mask, paths)
    with OutputSet(overwrite, mark=paths.json) as out:
        out.write(paths.heatmap, png_bytes(heatmap_u8(pred.heatmap)))
        out.write(paths.mask, png_bytes(mask.astype(np.uint8) * 255))
        out.write(paths.overlay, png_bytes(overlay(img.pixels, pred.heatmap, mask)))
        if paths.raw is not None:
            out.write(paths.raw, npy_bytes(pred.heatmap))
        for name, target in layers.items():
            out.write(target, png_bytes(heatmap_u8(pred.layers[name])))
            record["outputs"][name] = str(target)
        for name, target in raws.items():
            out.write(target, npy_bytes(np.asarray(pred.raw[name], dtype=np.float32)))
            record["outputs"][f"{name}_raw"] = str(target)
        record["seconds"] = round(seconds + time.perf_counter() - start, 4)
        out.write(paths.json, json_bytes(record))
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
        "applicable": pred.applicable,
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


def _check_targets(paths: list[Path], overwrite: bool, protected: frozenset[Path]) -> None:
    for p in paths:
        if safe_resolve(p) in protected:
            raise OutputError(f"refusing to write {p}: it is an input file")
    if not overwrite:
        existing = [p for p in paths if p.exists()]
        if existing:
            raise OutputError(f"{existing[0]} exists (use --overwrite to replace it)")
