"""Open an `imlf report` in headless Chromium: screenshots of the index and one image page, and a
check that the pages load without console messages (script errors, blocked resources) and that
the index's script ran (it writes "page 1 of N").

    python benchmarks/report_browser.py RESULTS_DIR/report [--out shots/] [--page pages/x.html]

Exit 0: both pages clean; 1: a console message or the script did not run; 77: Chromium is not
installed (Debian: apt-get install chromium), with a message. Chromium runs with no network
features (no QUIC, no background networking, no component updates, no sync) and a throw-away
profile; the pages are opened as file:// URLs.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

SKIP = 77
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars", "--enable-logging=stderr", "--v=0"]
CONSOLE = re.compile(r":CONSOLE[:(]\d*\)?\]\s*(.*)")


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        if p := shutil.which(name):
            return p
    return None


def run_chromium(binary: str, url: str, extra: list[str], timeout: float = 90) -> tuple[str, list[str]]:
    """stdout and the console messages of one headless Chromium run."""
    with tempfile.TemporaryDirectory(prefix="imlf-chromium-") as profile:
        proc = subprocess.run([binary, *FLAGS, f"--user-data-dir={profile}", *extra, url],
                              capture_output=True, text=True, timeout=timeout)
    console = [m.group(1) for line in proc.stderr.splitlines() if (m := CONSOLE.search(line))]
    return proc.stdout, console


def check_page(binary: str, page: Path, shot: Path, size: str) -> list[str]:
    """Problems found on ``page`` (an empty list when it is clean); writes the screenshot ``shot``."""
    url = page.resolve().as_uri()
    _, console = run_chromium(binary, url, [f"--window-size={size}", f"--screenshot={shot}"])
    problems = [f"{page.name}: console: {c}" for c in console]
    if not shot.is_file() or shot.stat().st_size == 0:
        problems.append(f"{page.name}: no screenshot was written")
    return problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("report", type=Path, help="the report folder (with index.html)")
    ap.add_argument("--out", type=Path, default=None, help="where the screenshots go (default: a temporary folder)")
    ap.add_argument("--page", default=None, help="the image page to open (default: the first, the highest score)")
    ap.add_argument("--size", default="1280,900", help="window size WIDTH,HEIGHT (default 1280,900)")
    args = ap.parse_args(argv)
    binary = find_chromium()
    if binary is None:
        print("skipped: Chromium is not installed (apt-get install chromium)")
        return SKIP
    index = args.report / "index.html"
    if not index.is_file():
        print(f"error: {index} does not exist", file=sys.stderr)
        return 2
    out = args.out or Path(tempfile.mkdtemp(prefix="imlf-shots-"))
    out.mkdir(parents=True, exist_ok=True)
    page = args.report / args.page if args.page else min((args.report / "pages").glob("*.html"), default=None)
    if args.page is None:  # the index's first row: the highest score
        m = re.search(r'href="(pages/[^"]+)"', index.read_text(encoding="utf-8"))
        page = args.report / m.group(1).replace("%20", " ") if m else page
    problems = check_page(binary, index, out / "index.png", args.size)
    if page is not None:
        problems += check_page(binary, page, out / "page.png", args.size)
    dom, console = run_chromium(binary, index.resolve().as_uri(), ["--dump-dom"])
    problems += [f"index (dom): console: {c}" for c in console]
    if not re.search(r'id="pageinfo"[^>]*>page 1 of \d+', dom):
        problems.append("index: its script did not run (no 'page 1 of N')")
    for p in problems:
        print(p)
    print(f"screenshots in {out}: index.png" + (", page.png" if page is not None else ""))
    print("ok" if not problems else f"{len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
