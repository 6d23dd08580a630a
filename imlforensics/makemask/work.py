"""The worker side of ``imlf make-mask``: one pair analysed, and pairs spread over processes.

(Kept apart from the command-line module so that spawned workers import only this.)
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Iterator

from ..errors import ImlfError


def models(opts: dict[str, Any]) -> dict[str, Any]:
    """The learned models ``opts`` names, loaded: ``upscaler`` (super-resolution, ``opts["model"]``)
    and ``features`` (a backbone, ``opts["features"]``); None for those it does not name."""
    built: dict[str, Any] = {"upscaler": None, "features": None}
    if opts.get("model"):
        from .sr import Upscaler

        built["upscaler"] = Upscaler.load(opts["model"], opts.get("weights"), opts.get("device", "auto"))
    if opts.get("features"):
        from .features import FeatureComparer

        built["features"] = FeatureComparer.load(opts["features"], opts.get("features_weights"),
                                                 opts.get("device", "auto"))
    return built


def analyse_pair(original: Path, tampered: Path, opts: dict[str, Any], limit: int | None,
                 built: dict[str, Any] | None = None):
    """(result, tampered ImageData, report) for one pair; ImlfError with a one-line reason.
    ``built``: the models ``opts`` name, already loaded (:func:`models`)."""
    from .._version import __version__
    from ..io.image import load_image
    from . import make_mask

    try:
        o = load_image(original, max_pixels=limit)
    except ImlfError as exc:  # (failures are reported under the tampered image's name: say whose)
        raise ImlfError(f"original {original}: {exc}") from None
    t = load_image(tampered, max_pixels=limit)
    built = built if built is not None else models(opts)
    res = make_mask(o, t, upscaler=built["upscaler"], features=built["features"])
    report = {"original": {"path": str(original), "width": o.width, "height": o.height, "sha256": o.sha256},
              "tampered": {"path": str(tampered), "width": t.width, "height": t.height, "sha256": t.sha256},
              "imlforensics": __version__, **res.report, "warnings": res.warnings}
    return res, t, report


_WORKER: dict[str, Any] = {}


def _init(opts: dict[str, Any], limit: int | None, one_thread: bool = True) -> None:
    """A worker: the options, the learned models built once, and (in a pool) one thread per library."""
    if one_thread:
        import cv2

        cv2.setNumThreads(1)
    _WORKER["opts"], _WORKER["limit"] = opts, limit
    _WORKER["models"] = models(opts)
    if one_thread and "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)


def _work(item: tuple[str, str]) -> tuple[str, str, Any, dict | None, str | None]:
    original, tampered = item
    try:
        res, _, report = analyse_pair(Path(original), Path(tampered), _WORKER["opts"], _WORKER["limit"], _WORKER["models"])
        return original, tampered, res.mask, report, None
    except ImlfError as exc:
        return original, tampered, None, None, str(exc)
    except MemoryError:
        return original, tampered, None, None, "out of memory"
    except Exception as exc:  # a bug: one line, the batch goes on
        if os.environ.get("IMLF_DEBUG"):
            raise
        return original, tampered, None, None, f"internal error: {type(exc).__name__}: {exc}"


def run_pairs(items: list[tuple[str, str]], jobs: int, opts: dict[str, Any], limit: int | None) -> Iterator[tuple]:
    """(original, tampered, mask, report, error) per pair, in order; ``jobs`` worker processes."""
    if jobs <= 1 or len(items) <= 1:
        _init(opts, limit, one_thread=False)
        for it in items:
            yield _work(it)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_init, initargs=(opts, limit)) as pool:
        yield from pool.map(_work, items, chunksize=1)
