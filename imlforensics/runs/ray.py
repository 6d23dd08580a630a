"""``--engine ray``: the local engine's per-image work, scheduled over a cluster by Ray Data.

Ray (Moritz et al., "Ray: A Distributed Framework for Emerging AI Applications", OSDI 2018) and
its streaming batch engine Ray Data (Luan et al., "The Streaming Batch Model for Efficient and
Fault-Tolerant Heterogeneous Execution", arXiv 2501.12407) run a pipeline over the list of files:

* every item is a small record (a pickled payload: path, output stem, the results of the members
  computed so far), so only paths and maps travel, never decoded images;
* each deep model is one stage of **actors** (``map_batches`` with a class): the model is loaded
  once per actor, ``gpus_per_actor`` (fractional) GPUs each, ``actors`` of them;
* the rest (decoding, the classical members, the fusion, writing) is one stage of **CPU tasks**
  that call :func:`imlforensics.runs.detect.detect_file`, exactly as a local worker does, so the
  outputs are the local engine's byte for byte (timings aside) and are written atomically; the
  driver keeps the ledger, as the local engine's main process does;
* Ray Data streams the stages with back-pressure, so memory stays bounded for any corpus size.

Ray is an optional extra (``pip install 'imlforensics[ray]'``), imported only here.
"""

from __future__ import annotations

import pickle
import uuid
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterator

from ..errors import ImlfError

RAY_MISSING = "--engine ray needs Ray: pip install 'imlforensics[ray]'"
MAX_BLOCKS = 20_000  # items are grouped in at most this many blocks (a task processes one block)


def import_ray() -> Any:
    """The ``ray`` module (with ``ray.data``), or a one-line error when the extra is missing."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise ImlfError(RAY_MISSING) from None
    return ray


def connect(address: str | None = None, num_cpus: int | None = None) -> Any:
    """Join the Ray cluster at ``address`` (``auto``: the one ``ray start`` runs here), else join the
    local instance or start one (with ``num_cpus`` CPUs). Ray's own logging is kept quiet."""
    import logging

    ray = import_ray()
    for name in ("ray", "ray.data"):  # Ray's notices (token setup, progress bars) are not ours to print
        logging.getLogger(name).setLevel(logging.ERROR)
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.ERROR}
        try:
            if address:
                ray.init(address=address, **kwargs)
            else:
                ray.init(num_cpus=num_cpus, **kwargs)
        except Exception as exc:  # noqa: BLE001  (Ray raises ConnectionError, RuntimeError, ValueError)
            raise ImlfError(f"cannot {'join Ray at ' + address if address else 'start Ray'}: "
                            f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    return ray


def cluster_gpus() -> float:
    import ray

    return float(ray.cluster_resources().get("GPU", 0.0))


def default_gpus_per_actor() -> float:
    """1 when this machine has CUDA, else 0 (``--gpus-per-actor``'s default)."""
    try:
        import torch

        return 1.0 if torch.cuda.is_available() else 0.0
    except ImportError:
        return 0.0


# --- the worker side: state built once per process (tasks) or per actor -----------------------

_STATE: dict[str, Any] = {}


def _one_thread() -> None:
    import sys

    import cv2

    cv2.setNumThreads(1)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)


def _in_folder(folder: str, build: Callable[[], Any]) -> Any:
    """``build()`` in the driver's current folder, so that relative paths mean what they mean
    there (on a cluster that folder must exist on every node, on a shared file system)."""
    import os

    if os.path.isdir(folder):
        os.chdir(folder)
    return build()


def _state(token: str, build: Callable[[], Any]) -> Any:
    if token not in _STATE:
        _STATE.clear()  # one run's state at a time in a reused worker process
        _one_thread()
        _STATE[token] = build()
    return _STATE[token]


def _apply(state: Any, work: Callable[[Any, Any], Any], batch: dict[str, Any]) -> dict[str, Any]:
    return {"x": [pickle.dumps(work(state, pickle.loads(x))) for x in batch["x"]]}


def _task(batch: dict[str, Any], token: str, build: Callable[[], Any], work: Callable[[Any, Any], Any]) -> dict[str, Any]:
    return _apply(_state(token, build), work, batch)


class _Actor:
    """One actor of a stage: builds its state (a model) once, then processes batches."""

    def __init__(self, build: Callable[[], Any], work: Callable[[Any, Any], Any]):
        _one_thread()
        self.state, self.work = build(), work

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        return _apply(self.state, self.work, batch)


def pipeline(payloads: list[Any], stages: list[dict[str, Any]]) -> Iterator[Any]:
    """Run ``payloads`` through ``stages`` on the connected cluster; yield results in order.

    A stage is ``{"build": factory of its state, "work": (state, payload) -> payload}`` plus, for
    an actor stage, ``"actors": N`` and ``"gpus": G`` (per actor). Functions must be picklable
    (module-level functions and ``functools.partial`` of them)."""
    import os

    import ray

    n = len(payloads)
    if not n:
        return
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    ctx.execution_options.preserve_order = True  # results (and summary rows) in input order
    ds = ray.data.from_items([{"x": pickle.dumps(p)} for p in payloads], override_num_blocks=min(n, MAX_BLOCKS))
    for st in stages:
        build = partial(_in_folder, os.getcwd(), st["build"])
        if "actors" in st:
            ds = ds.map_batches(_Actor, fn_constructor_kwargs={"build": build, "work": st["work"]},
                                batch_size=1, compute=ray.data.ActorPoolStrategy(size=st["actors"]),
                                num_gpus=st.get("gpus") or None, num_cpus=1)
        else:
            ds = ds.map_batches(_task, fn_kwargs={"token": uuid.uuid4().hex, "build": build, "work": st["work"]},
                                batch_size=1, num_cpus=1)
    for row in ds.iter_rows():
        yield pickle.loads(row["x"])


# --- imlf detect / imlf ensemble ---------------------------------------------------------------

def _member_work(det: Any, item: tuple[str, str, dict[str, Any]], name: str, max_pixels: int | None):
    """A deep member on one image; its Prediction, or the exception it raised, joins the item."""
    from ..io.image import load_image

    path, stem, given = item
    try:
        given[name] = det.predict(load_image(Path(path), max_pixels=max_pixels))
    except Exception as exc:  # noqa: BLE001  (raised again where the local engine would raise it)
        given[name] = _portable(exc)
    return path, stem, given


def _portable(exc: BaseException) -> BaseException:
    """``exc`` if it pickles, else an ImlfError saying the same (a bug's one line, as locally)."""
    from ..errors import NotApplicable

    if isinstance(exc, (ImlfError, NotApplicable, MemoryError)):
        try:
            pickle.loads(pickle.dumps(exc))
            return exc
        except Exception:  # noqa: BLE001
            pass
        return ImlfError(str(exc))
    return ImlfError(f"internal error: {type(exc).__name__}: {exc}")


def _final_state(factory: Callable[[], Any], fallback: Callable[[], Any] | None, external: list[str],
                 kind: str) -> tuple[Any, Any]:
    if factory is None:  # the detector itself ran in an actor stage
        from ..committee.detector import Given

        return Given(external[0], kind), fallback() if fallback else None
    return factory(), fallback() if fallback else None


def _final_work(state: tuple[Any, Any], item: tuple[str, str, dict[str, Any]], job: dict[str, Any]) -> dict[str, Any]:
    from ..committee.detector import Given
    from .batch import _outcome, _stream_args
    from .detect import detect_file

    det, fallback = state
    path, stem, given = item
    if isinstance(det, Given):
        det.result = given[det.name]
    elif given:
        det = _Supplied(det, given)
    try:
        rec = detect_file(det, Path(path), Path(job["out_dir"]), stem, fallback=fallback, **_stream_args(job))
    except Exception as exc:  # noqa: BLE001
        return _outcome(path, None, exc)
    return _outcome(path, rec, None)


class _Supplied:
    """A committee whose external members' results for this image are known."""

    def __init__(self, committee: Any, given: dict[str, Any]):
        self.committee, self.given = committee, given
        self.name, self.kind = committee.name, committee.kind

    def predict(self, img: Any) -> Any:
        return self.committee.predict_given(img, self.given)


def run_detect(items: list[tuple[str, str]], job: dict[str, Any], factory: Callable[[], Any] | None,
               deep: dict[str, Callable[[], Any]], actors: int, gpus_per_actor: float,
               fallback: Callable[[], Any] | None = None, kind: str = "deep") -> Iterator[dict[str, Any]]:
    """One outcome per (path, stem), in order, as :func:`imlforensics.runs.batch.run_batch` yields them.

    ``deep``: member name -> factory of the deep models that run in actor stages; ``factory``
    builds the detector of the final CPU stage (a committee built with ``external`` = those
    names), or is None when the detector is the one deep model itself (``imlf detect -m NAME``).
    ``job`` as for ``run_batch``; its ``protected`` inputs are cut to those inside the output
    folder (the only ones an output could hit), so tasks do not carry the whole corpus's list."""
    out = Path(job["out_dir"]).resolve()
    job = {**job, "protected": [p for p in job["protected"] if Path(p).is_relative_to(out)]}
    stages: list[dict[str, Any]] = [
        {"build": build, "work": partial(_member_work, name=name, max_pixels=job["max_pixels"]),
         "actors": actors, "gpus": gpus_per_actor}
        for name, build in deep.items()
    ]
    stages.append({"build": partial(_final_state, factory, fallback, list(deep), kind),
                   "work": partial(_final_work, job=job)})
    yield from pipeline([(p, s, {}) for p, s in items], stages)


def run_committee(items: list[tuple[str, str]], committee: Any, opts: dict[str, Any], job: dict[str, Any],
                  actors: int, gpus_per_actor: float) -> Iterator[dict[str, Any]]:
    """``imlf ensemble`` on Ray: each deep member of ``committee`` (those that loaded) in its own
    actors, the classical members, the fusion and the writing in CPU tasks."""
    from ..detectors.registry import load_detector

    deep = {n: partial(load_detector, n, device=opts.get("device", "auto"))
            for n, d in committee.members.items() if d.kind == "deep"}
    final = partial(load_detector, "committee", **opts, external=list(deep))
    return run_detect(items, job, final, deep, actors, gpus_per_actor)


def detect_outcomes(items: list[tuple[Path, str]], job: dict[str, Any], detector: Any, options: dict[str, Any],
                    fallback: bool, actors: int, gpus_per_actor: float) -> Iterator[tuple[Path, Any, Any]]:
    """``imlf detect`` on Ray: ``(path, record, error)`` per item, in order, as
    :func:`imlforensics.runs.detect.detect_stream` yields them (an error as an ImlfError with the
    local engine's one-line reason). A deep detector runs in actors; a committee as in
    :func:`run_committee`; a classical detector (and the fallback) in CPU tasks."""
    from ..detectors.registry import DEFAULT_FALLBACK, load_detector

    pairs = [(str(p), s) for p, s in items]
    fb = partial(load_detector, DEFAULT_FALLBACK) if fallback else None
    build = partial(load_detector, detector.name, **options)
    if detector.kind == "committee":
        results = run_committee(pairs, detector, options, job, actors, gpus_per_actor)
    elif detector.kind == "deep":
        results = run_detect(pairs, job, None, {detector.name: build}, actors, gpus_per_actor, fb, detector.kind)
    else:
        results = run_detect(pairs, job, build, {}, actors, gpus_per_actor, fb)
    for res in results:
        error = None if res["status"] == "done" else ImlfError(res["error"])
        yield Path(res["image"]), res.get("record"), error


# --- imlf eval -----------------------------------------------------------------------------------

def _score_work(source: Any, sample: Any, threshold: float) -> Any:
    from ..evaluation.evaluate import score_sample

    return score_sample(sample, source, threshold)


def run_eval(samples: list[Any], factory: Callable[[], Any], threshold: float, deep: bool, actors: int,
             gpus_per_actor: float) -> Iterator[Any]:
    """One ``ImageRecord`` per sample, in order, as :func:`imlforensics.evaluation.evaluate.run`."""
    stage: dict[str, Any] = {"build": factory, "work": partial(_score_work, threshold=threshold)}
    if deep:
        stage.update(actors=actors, gpus=gpus_per_actor)
    yield from pipeline(samples, [stage])


# --- imlf make-mask --pairs ----------------------------------------------------------------------

def _pair_state(opts: dict[str, Any], limit: int | None) -> None:
    from ..makemask import work

    work._init(opts, limit, one_thread=True)


def _pair_work(state: None, item: tuple[str, str]) -> tuple:
    from ..makemask import work

    return work._work(item)


def run_pairs(items: list[tuple[str, str]], opts: dict[str, Any], limit: int | None, actors: int,
              gpus_per_actor: float) -> Iterator[tuple]:
    """(original, tampered, mask, report, error) per pair, in order, as
    :func:`imlforensics.makemask.work.run_pairs`; learned models (``--sr``, ``--features``) run in actors."""
    stage: dict[str, Any] = {"build": partial(_pair_state, opts, limit), "work": _pair_work}
    if opts.get("model") or opts.get("features"):
        stage.update(actors=actors, gpus=gpus_per_actor)
    yield from pipeline(items, [stage])
