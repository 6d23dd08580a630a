"""`imlf report`: a static report of the examples, checked for structure, links, escaping and no network."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from imlforensics.report import render_report

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


class Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links: list[tuple[str, str, str]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        for k, v in attrs:
            if k in ("src", "href", "action", "poster", "srcset", "data") and v is not None:
                self.links.append((tag, k, v))


def ensemble(inputs: list[Path], out: Path, *extra: str) -> None:
    cmd = [sys.executable, "-m", "imlforensics", "ensemble", *map(str, inputs), "--out", str(out),
           "--models", "ela,noise,dq", "--save-members", *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode in (0, 1), proc.stderr


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("report")
    inputs = d / "inputs"
    shutil.copytree(EXAMPLES / "Tp", inputs / "Tp")
    shutil.copytree(EXAMPLES / "Au", inputs / "Au")
    shutil.copy(EXAMPLES / "Gt" / "splice_gt.png", inputs / "mask.png")  # a PNG: dq abstains
    shutil.copy(EXAMPLES / "Au" / "coffee.jpg", inputs / "a<b>&'x.jpg")  # a name that needs escaping
    (inputs / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")  # fails with a reason
    results = d / "results"
    ensemble([inputs], results)
    return results, render_report(results)


def test_every_image_has_a_page(report):
    results, index = report
    records = [p for p in results.glob("*.json")]
    assert len(records) == 8
    html = index.read_text()
    rows = json.loads(re.search(r'<script type="application/json" id="data">(.*?)</script>', html, re.S).group(1))
    assert len(rows) == 9  # 8 analysed + 1 failed
    assert [r["score"] for r in rows if r["score"] is not None] == sorted((r["score"] for r in rows if r["score"] is not None), reverse=True)
    pages = {r["page"] for r in rows}
    assert len(pages) == 9 and all((index.parent / p).is_file() for p in pages)
    for rec in records:  # each record's page names its image and SHA-256
        doc = json.loads(rec.read_text())
        row = next(r for r in rows if r["name"] == Path(doc["image"]).name)
        page = (index.parent / row["page"]).read_text()
        assert doc["sha256"] in page
    failed = [r for r in rows if r["failed"]]
    assert len(failed) == 1 and failed[0]["name"] == "broken.jpg" and failed[0]["error"]
    assert "broken.jpg" in (index.parent / "run.html").read_text()
    mask = next(r for r in rows if r["name"] == "mask.png")
    assert mask["abstained"] == ["dq"]
    assert rows[0]["flagged"] and rows[0]["thumb"]


def test_links_resolve_and_nothing_from_the_network(report):
    _, index = report
    html_files = sorted(index.parent.rglob("*.html"))
    assert len(html_files) == 11  # index, run, 9 pages
    checked = 0
    for f in html_files:
        text = f.read_text()
        # no stylesheet, font or script is loaded from anywhere: all inline, and the CSP forbids it
        assert "<link" not in text and "@import" not in text and "url(" not in text, f
        assert "default-src 'none'" in text, f
        parser = Links()
        parser.feed(text)
        for tag, attr, value in parser.links:
            parts = urlsplit(value)
            assert not parts.scheme and not parts.netloc, f"{f.name}: {tag} {attr}={value}"
            target = (f.parent / unquote(parts.path)).resolve()
            assert target.exists(), f"{f.name}: {value} -> {target} does not exist"
            checked += 1
    assert checked > 100
    # the member maps and the agreement map are on the top page
    top = json.loads(re.search(r'id="data">(.*?)</script>', index.read_text(), re.S).group(1))[0]
    page = (index.parent / top["page"]).read_text()
    for name in ("member-ela", "member-noise", "member-dq", "agreement", "disagreement", "overlay", "heatmap"):
        assert f".{name}.png" in page, name


def test_names_are_escaped(report):
    _, index = report
    text = index.read_text()
    assert "a<b>&'x.jpg" not in text and "a&lt;b&gt;&amp;" in text
    data = re.search(r'id="data">(.*?)</script>', text, re.S).group(1)
    assert "<" not in data  # the embedded rows cannot close their script element
    assert any(p.name.startswith("a_b__") for p in (index.parent / "pages").iterdir())


def test_existing_report_needs_overwrite(report):
    from imlforensics.errors import OutputError

    results, index = report
    with pytest.raises(OutputError, match="--overwrite"):
        render_report(results)
    assert render_report(results, overwrite=True) == index


def test_not_a_results_folder(tmp_path):
    from imlforensics.errors import ImlfError

    with pytest.raises(ImlfError, match="no results"):
        render_report(tmp_path)
    with pytest.raises(ImlfError, match="no such folder"):
        render_report(tmp_path / "missing")


def test_browser(report, tmp_path):
    """Headless Chromium renders the index and the top page without console messages."""
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "report_browser.py"), str(report[1].parent),
                           "--out", str(tmp_path)], capture_output=True, text=True, timeout=300)
    if proc.returncode == 77:
        pytest.skip(proc.stdout.strip())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "index.png").stat().st_size > 10_000 and (tmp_path / "page.png").stat().st_size > 10_000


def test_changed_input_is_not_inspected(report, tmp_path):
    """A file changed since the run is not described as if it were the analysed one (runs last:
    it changes one input of the module's run)."""
    results, _ = report
    doc = json.loads((results / "coffee.json").read_text())
    page_of = lambda index: (index.parent / next(r["page"] for r in json.loads(  # noqa: E731
        re.search(r'id="data">(.*?)</script>', index.read_text(), re.S).group(1)) if r["name"] == "coffee.jpg")).read_text()
    fresh = render_report(results, tmp_path / "before")
    assert "What the file says" in page_of(fresh) and "JPEG</dt>" in page_of(fresh)
    with open(doc["image"], "ab") as f:
        f.write(b"appended after the run")
    after = page_of(render_report(results, tmp_path / "after"))
    assert "has changed since the run" in after and "JPEG</dt>" not in after
