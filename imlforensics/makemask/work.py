"""The worker side of ``imlf make-mask``: one pair analysed, and pairs spread over processes.

(Kept apart from the command-line module so that spawned workers import only this.)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ..errors import ImlfError
from ..runs.workers import one_thread_per_library, pool_map


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
    ratio = ((o.width * o.height) / max(t.width * t.height, 1)) ** 0.5
    if ratio < MIN_SIZE_RATIO:
        raise ImlfError(f"the original ({o.width}x{o.height}) is 1/{1 / ratio:.0f} the size of the tampered image "
                        f"({t.width}x{t.height}): too small to tell lost detail from an edit (make-mask needs at "
                        f"least 1/{1 / MIN_SIZE_RATIO:.0f} of its width)")
    notes, o_used, t_used = [], o, t
    gray_o, gray_t = _is_gray(o), _is_gray(t)
    if gray_o != gray_t:  # comparing gray with colour would mark every coloured pixel
        o_used, t_used = (o, _as_gray(t)) if gray_o else (_as_gray(o), t)
        notes.append(f"the {'original' if gray_o else 'tampered image'} is grayscale: both copies are compared "
                     "by their luminance only (changes of colour alone cannot be seen)")
    built = built if built is not None else models(opts)
    res = make_mask(o_used, t_used, upscaler=built["upscaler"], features=built["features"])
    res.warnings[:0] = notes
    report = {"original": {"path": str(original), "width": o.width, "height": o.height, "sha256": o.sha256},
              "tampered": {"path": str(tampered), "width": t.width, "height": t.height, "sha256": t.sha256},
              "imlforensics": __version__, **res.report, "warnings": res.warnings}
    return res, t, report


MIN_SIZE_RATIO = 0.25  # the original's width over the tampered image's, below which no mask is made


def _is_gray(img: Any) -> bool:
    p = img.pixels
    return bool((img.conversion or "").startswith("grayscale")
                or (np.array_equal(p[..., 0], p[..., 1]) and np.array_equal(p[..., 1], p[..., 2])))


def _as_gray(img: Any) -> Any:
    """The image with its luma (BT.601, rounded) in all three channels."""
    from dataclasses import replace

    luma = np.clip(np.rint(img.gray), 0, 255).astype(np.uint8)
    return replace(img, pixels=np.repeat(luma[..., None], 3, axis=2), conversion="luma copied to R, G, B")


_WORKER: dict[str, Any] = {}


def _init(opts: dict[str, Any], limit: int | None, one_thread: bool = True) -> None:
    """A worker: the options, the learned models built once, and (in a pool) one thread per library."""
    _WORKER["opts"], _WORKER["limit"] = opts, limit
    _WORKER["models"] = models(opts)
    if one_thread:
        one_thread_per_library()


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
    yield from pool_map(_work, items, jobs, _init, (opts, limit))
