"""Static HTML report of a run: ``render_report(results_dir)`` (the work behind ``imlf report``)."""

from __future__ import annotations

from .render import load_results, render_report

__all__ = ["load_results", "render_report"]
