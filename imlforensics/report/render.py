"""A static, self-contained HTML report of a results folder written by ``imlf detect`` or ``imlf ensemble``.

The report lives in its own folder (default ``<results>/report``): ``index.html`` (every image,
sorted by score, with thumbnails, filters and paging done by a small inline script over the rows
embedded in the page, so 10,000 images stay fast), ``run.html`` (from ``runs.jsonl``: detectors
and versions, priors, counts, time, failures) and ``pages/<stem>.html``, one per image (the image,
overlay, heatmap, mask, agreement and disagreement maps, each member's map with its weight and vote or why it abstained,
what drove the score, what ``imlf inspect`` found in the file, its SHA-256). Styles and scripts
are inline, images are the run's own files (linked by relative paths) plus small JPEG thumbnails
in ``thumbs/``: nothing is fetched from the network, so the folder works offline and in an
evidence archive. Pages are made with Jinja2 templates shipped in ``templates/``.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable
from urllib.parse import quote

from ..errors import ImlfError, OutputError
from ..io.outputs import write_atomic
from ..runs.runinfo import read_runs

PAGE_SIZE = 100
THUMB_SIZE = 192
INSPECT_CACHE = "inspect.jsonl"
MAPS = ("overlay", "heatmap", "mask", "agreement", "disagreement")


@dataclass
class Entry:
    """One image of the run: its record (None when it failed) and where its files are."""

    key: str
    record: dict[str, Any] | None
    image: str
    error: str | None = None
    files: dict[str, Path] = field(default_factory=dict)
    inspect: dict[str, Any] | None = None
    inspect_note: str | None = None

    @property
    def score(self) -> float | None:
        return None if self.record is None else self.record.get("score")


@dataclass
class RunData:
    results_dir: Path
    entries: list[Entry]
    run: dict[str, Any]


def _is_record(doc: Any) -> bool:
    return isinstance(doc, dict) and "sha256" in doc and "score" in doc and isinstance(doc.get("detector"), dict)


def _local(results_dir: Path, written: str) -> Path | None:
    """A file the run wrote, found by its name in ``results_dir`` (the run may have named it
    relative to another working folder, or the folder may have moved since)."""
    p = results_dir / Path(written).name
    return p if p.is_file() else None


def load_results(results_dir: Path) -> RunData:
    """Read the records (``<stem>.json``), the runs (``runs.jsonl``, the latest described) and the
    failures (from every run, or ``summary.csv`` for folders written before ``runs.jsonl``)."""
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise ImlfError(f"{results_dir}: no such folder")
    entries: list[Entry] = []
    for p in sorted(results_dir.glob("*.json")):
        try:
            doc = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if not _is_record(doc):
            continue
        files = {k: f for k, v in (doc.get("outputs") or {}).items() if isinstance(v, str) and (f := _local(results_dir, v))}
        entries.append(Entry(p.name[: -len(".json")], doc, str(doc.get("image") or p.stem), files=files))
    runs = read_runs(results_dir)
    run: dict[str, Any] = dict(runs[-1]) if runs else {}
    if runs:
        run["runs"] = len(runs)
        failures = [f for r in runs for f in r.get("failures", []) if isinstance(f, dict)]
    else:
        failures = _failures_from_summary(results_dir / "summary.csv")
    done = {e.image for e in entries}
    latest = {str(f.get("image")): str(f.get("error") or "failed") for f in failures}  # the last reason wins
    for k, (image, error) in enumerate(latest.items()):
        if image not in done:
            entries.append(Entry(f"failed-{k}", None, image, error=error))
    if not entries:
        raise ImlfError(f"{results_dir}: no results of `imlf detect` or `imlf ensemble` (no <stem>.json records)")
    return RunData(results_dir, entries, run)


def _failures_from_summary(path: Path) -> list[dict[str, str]]:
    try:
        with open(path, newline="", encoding="utf-8") as f:
            return [{"image": r["image"], "error": r.get("error", "")} for r in csv.DictReader(f) if r.get("status") == "failed"]
    except (OSError, KeyError, csv.Error):
        return []


# ---------------------------------------------------------------- inspect findings, cached by SHA-256

def _inspect_all(entries: list[Entry], cache_path: Path, jobs: int) -> None:
    from ..metadata import inspect_file

    cache: dict[str, dict[str, Any]] = {}
    try:
        for line in cache_path.read_text(encoding="utf-8").splitlines():
            try:
                doc = json.loads(line)
                cache[doc["sha256"]] = doc
            except (ValueError, KeyError, TypeError):
                continue
    except OSError:
        pass
    todo = []
    for e in entries:
        if e.record is None:
            continue
        sha = e.record.get("sha256")
        if sha in cache:
            e.inspect = cache[sha]
        elif not Path(e.image).is_file():
            e.inspect_note = "the analysed file is not at its recorded path any more: not inspected"
        else:
            todo.append(e)

    def one(e: Entry) -> tuple[Entry, dict[str, Any] | None, str | None]:
        try:
            return e, inspect_file(e.image), None
        except ImlfError as exc:
            return e, None, str(exc)

    with ThreadPoolExecutor(max(1, jobs)) as pool:
        for e, info, error in pool.map(one, todo):
            if info is None:
                e.inspect_note = f"not inspected: {error}"
                continue
            if info["sha256"] != e.record.get("sha256"):
                e.inspect_note = "the file at the recorded path has changed since the run (its SHA-256 differs): not shown"
                continue
            e.inspect = info
            cache[info["sha256"]] = info
    lines = "".join(json.dumps(v, ensure_ascii=False) + "\n" for v in cache.values())
    write_atomic(cache_path, lines.encode(), overwrite=True)


# ---------------------------------------------------------------- thumbnails

def _thumb(src: Path, dst: Path) -> bool:
    """A small JPEG of ``src``; kept when it is newer than its source (re-rendering is cheap).
    OpenCV decodes (reduced by 2 while decoding) without holding the GIL, so threads overlap."""
    import cv2
    import numpy as np

    try:
        if dst.is_file() and dst.stat().st_mtime >= src.stat().st_mtime:
            return True
        img = cv2.imdecode(np.fromfile(src, dtype=np.uint8), cv2.IMREAD_REDUCED_COLOR_2)
        if img is None:
            return False
        h, w = img.shape[:2]
        s = min(1.0, THUMB_SIZE / max(h, w))
        img = cv2.resize(img, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 80])
        if not ok:
            return False
        write_atomic(dst, buf.tobytes(), overwrite=True)
        return True
    except (OSError, ValueError, ImlfError, cv2.error):
        return False


# ---------------------------------------------------------------- view models

def _rel(target: Path, start: Path) -> str:
    return quote(Path(os.path.relpath(target, start)).as_posix())


def _page_name(e: Entry) -> str:
    """``<stem>.html``; a stem with characters unsafe in a file name or URL gets them replaced and a
    short hash of the original added, so two stems never share a page."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", e.key)[:80].lstrip(".") or "image"
    if safe != e.key:
        safe += "-" + hashlib.sha1(e.key.encode()).hexdigest()[:8]
    return safe + ".html"


def _drivers(rec: dict[str, Any]) -> list[str]:
    """Sentences saying what made the score."""
    out: list[str] = []
    det = rec.get("detector", {})
    details = rec.get("details") or {}
    members = [m for m in details.get("members", []) if isinstance(m, dict)]
    voted = [m for m in members if m.get("voted")]
    if det.get("kind") == "committee" or members:
        out.append(f"The score is the highest value of the fused map ({details.get('fusion', '?')} fusion, "
                   f"{details.get('voter', '?')} voter, T = {details.get('temperature', '?')}).")
        for m in sorted(voted, key=lambda m: -float(m.get("weight", 0)) * float(m.get("score", 0)))[:3]:
            out.append(f"{m['name']}: weight {float(m.get('weight', 0)):.3f}, its own score {float(m.get('score', 0)):.3f}.")
    else:
        out.append(f"Score of {det.get('name', 'the detector')} (version {det.get('version', '?')}).")
        facts = [f"{k.replace('_', ' ')} {v}" for k, v in details.items()
                 if isinstance(v, (str, int, float, bool)) and not k.startswith("_")][:8]
        if facts:
            out.append("Detector's evidence: " + "; ".join(facts) + ".")
    boxes = rec.get("boxes") or []
    if boxes:
        b = boxes[0]
        out.append(f"Largest flagged region: {b['width']}x{b['height']} px at ({b['x']}, {b['y']}), mean heat {b.get('mean_heat', 0):.2f}; "
                   f"{len(boxes)} region(s), {100 * float(rec.get('tampered_fraction', 0)):.2f}% of the pixels at threshold {rec.get('threshold')}.")
    else:
        out.append(f"No pixel reaches the threshold {rec.get('threshold')}.")
    return out


def _members(e: Entry, prefix: str) -> list[dict[str, Any]]:
    rec = e.record or {}
    rows = []
    for m in (rec.get("details") or {}).get("members", []):
        if not isinstance(m, dict):
            continue
        f = e.files.get(f"member-{m.get('name')}")
        rows.append({**m, "map": prefix + quote(f.name) if f else None})
    return rows


def _row(k: int, e: Entry, threshold: float) -> dict[str, Any]:
    rec = e.record or {}
    members = (rec.get("details") or {}).get("members", [])
    abstained = [m.get("name") for m in members if isinstance(m, dict) and not m.get("voted")]
    warnings = sum(1 for f in (e.inspect or {}).get("flags", []) if f.get("level") == "warning")
    score = e.score
    th = rec.get("threshold", threshold)
    return {"i": k, "name": Path(e.image).name, "score": score, "flagged": score is not None and score >= th,
            "failed": e.record is None, "error": e.error, "abstained": abstained, "warnings": warnings,
            "detector": rec.get("detector", {}).get("name"), "area": rec.get("tampered_fraction"),
            "page": "pages/" + _page_name(e), "thumb": _thumb_name(e) if "overlay" in e.files else None}


def _thumb_name(e: Entry) -> str:
    return f"thumbs/{_page_name(e)[:-5]}.jpg"


def _script_json(obj: Any) -> str:
    """JSON safe inside a <script> element."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _env():
    from jinja2 import Environment, PackageLoader, select_autoescape

    env = Environment(loader=PackageLoader("imlforensics.report", "templates"), autoescape=select_autoescape(["html"]),
                      trim_blocks=True, lstrip_blocks=True)
    env.filters["pct"] = lambda x: "-" if x is None else f"{100 * float(x):.2f}%"
    env.filters["num"] = lambda x, d=3: "-" if x is None else f"{float(x):.{d}f}"
    return env


def _run_view(data: RunData, entries: list[Entry], seconds: float | None) -> dict[str, Any]:
    run = dict(data.run)
    dets: dict[str, str] = {}
    members: dict[str, str] = {}
    for e in entries:
        if e.record:
            d = e.record.get("detector", {})
            dets[str(d.get("name"))] = str(d.get("version"))
            for m in (e.record.get("details") or {}).get("members", []):
                if isinstance(m, dict):
                    members.setdefault(str(m.get("name")), "")
    done = [e for e in entries if e.record]
    th = run.get("threshold") or (done[0].record.get("threshold") if done else 0.5)
    counts = {"images": len(entries), "analysed": len(done), "failed": len(entries) - len(done),
              "flagged": sum(1 for e in done if e.score is not None and e.score >= th),
              "with abstentions": sum(1 for e in done if any(isinstance(m, dict) and not m.get("voted")
                                                              for m in (e.record.get("details") or {}).get("members", [])))}
    total = sum(float(e.record.get("seconds") or 0) for e in done)
    return {"run": run, "detectors": dets, "members": run.get("members") or members, "counts": counts, "threshold": th,
            "image_seconds": total, "failures": [e for e in entries if e.record is None], "render_seconds": seconds}


def render_report(results_dir: Path, out_dir: Path | None = None, overwrite: bool = False, inspect: bool = True,
                  jobs: int = 2, progress: Callable[[int, int], None] | None = None) -> Path:
    """Write the report of ``results_dir`` into ``out_dir`` (default ``<results_dir>/report``) and
    return the path of its ``index.html``. An existing report there is replaced only with ``overwrite``."""
    start = time.perf_counter()
    data = load_results(Path(results_dir))
    out = Path(out_dir) if out_dir is not None else data.results_dir / "report"
    index = out / "index.html"
    if index.exists() and not overwrite:
        raise OutputError(f"{index} exists (use --overwrite to replace the report)")
    try:
        for d in (out, out / "pages", out / "thumbs"):
            d.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create {out}: {exc.strerror or exc}") from None
    entries = sorted(data.entries, key=lambda e: (e.score is None, -(e.score or 0.0), e.image))
    # thumbnails are made in threads (OpenCV decodes without the GIL) while this thread inspects
    # the files and renders the pages, so both cores stay busy
    pool = ThreadPoolExecutor(max(1, jobs))
    made = {e.key: pool.submit(_thumb, e.files["overlay"], out / _thumb_name(e))
            for e in entries if "overlay" in e.files}
    try:
        if inspect:
            _inspect_all(entries, out / INSPECT_CACHE, jobs)
        threshold = float(data.run.get("threshold") or 0.5)
        rows = [_row(k, e, threshold) for k, e in enumerate(entries)]
        _write_pages(entries, rows, data.results_dir, out, progress)
        for e, r in zip(entries, rows):
            if r["thumb"] and not made[e.key].result():
                r["thumb"] = None
    finally:
        pool.shutdown(cancel_futures=True)
    env = _env()
    run_view = _run_view(data, entries, None)
    write_atomic(index, env.get_template("index.html").render(
        rows=rows[:PAGE_SIZE], rows_json=_script_json(rows), page_size=PAGE_SIZE, **run_view).encode(), overwrite=True)
    run_view["render_seconds"] = time.perf_counter() - start
    write_atomic(out / "run.html", env.get_template("run.html").render(**run_view).encode(), overwrite=True)
    return index


def _write_pages(entries: list[Entry], rows: list[dict[str, Any]], results_dir: Path, out: Path,
                 progress: Callable[[int, int], None] | None) -> None:
    pages = out / "pages"
    env = _env()
    page_t = env.get_template("image.html")
    to_results = _rel(results_dir, pages) + "/"
    for k, (e, r) in enumerate(zip(entries, rows)):
        image_path = Path(e.image)
        view = {
            "e": e, "row": r, "rec": e.record or {}, "title": Path(e.image).name,
            "maps": [(m, to_results + quote(e.files[m].name)) for m in MAPS if m in e.files],
            "members": _members(e, to_results), "drivers": _drivers(e.record) if e.record else [],
            "original": _rel(image_path.resolve(), pages.resolve()) if image_path.is_file() else None,
            "json_link": to_results + quote(e.key + ".json") if e.record else None,
            "prev": rows[k - 1]["page"][len("pages/"):] if k > 0 else None,
            "next": rows[k + 1]["page"][len("pages/"):] if k + 1 < len(rows) else None,
            "position": k + 1, "total": len(rows),
        }
        write_atomic(out / r["page"], page_t.render(**view).encode(), overwrite=True)
        if progress:
            progress(k + 1, len(rows))
