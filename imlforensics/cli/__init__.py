"""The ``imlf`` command line: argument parsing and printing over the library API.

One module per command group (:mod:`.detect`, :mod:`.evaluate`, :mod:`.committee`, :mod:`.makemask`,
:mod:`.weights`, :mod:`.metadata` (inspect), :mod:`.report`); :mod:`.common` holds what they share. A new command is a function in its group's
module, added to the app below.

Exit codes: 0 all done; 1 some inputs failed; 2 usage error (bad option, unknown detector,
unusable output folder); 3 ``--fail-above S`` and some image scored above S (when nothing failed).
"""

from __future__ import annotations

import os
import sys
import warnings

import typer

from .._version import __version__
from ..errors import ImlfError, UnknownDetector
from .committee import calibrate_command, ensemble_command
from .common import EXIT_FAILED, EXIT_FLAGGED, EXIT_OK, EXIT_USAGE, err, out
from .detect import detect_command, models_command
from .evaluate import eval_command
from .makemask import make_mask_command
from .metadata import inspect_command
from .report import report_command
from .weights import app as weights_app

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode="rich",
    help="Find where an image was manipulated. Run [bold]imlf COMMAND --help[/] for details.",
)


def _version(value: bool) -> None:
    if value:
        out.print(f"imlf {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version."),
) -> None:
    """imlforensics: image manipulation localization."""


app.command("detect")(detect_command)
app.command("eval")(eval_command)
app.command("models")(models_command)
app.add_typer(weights_app, name="weights")
app.command("calibrate")(calibrate_command)
app.command("ensemble")(ensemble_command)
app.command("make-mask")(make_mask_command)
app.command("inspect")(inspect_command)
app.command("report")(report_command)


def main() -> None:
    """Console-script entry point."""
    if not os.environ.get("IMLF_DEBUG"):  # other libraries' warnings are not ours to print
        warnings.simplefilter("ignore")
    try:
        app()
    except KeyboardInterrupt:
        err.print("imlf: interrupted")
        sys.exit(130)
    except UnknownDetector as exc:  # raised lazily by some paths
        err.print(f"imlf: error: {exc}", markup=False, soft_wrap=True)
        sys.exit(EXIT_USAGE)
    except ImlfError as exc:
        err.print(f"imlf: error: {exc}", markup=False, soft_wrap=True)
        sys.exit(EXIT_FAILED)
    except MemoryError:
        err.print("imlf: error: out of memory (try a smaller --max-pixels)", markup=False)
        sys.exit(EXIT_FAILED)
    except Exception as exc:  # a bug: one line; IMLF_DEBUG=1 shows the traceback
        if os.environ.get("IMLF_DEBUG"):
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        err.print(f"imlf: internal error: {type(exc).__name__}{': ' + first if first else ''} "
                  "(please report; IMLF_DEBUG=1 shows details)", markup=False, soft_wrap=True)
        sys.exit(EXIT_FAILED)


__all__ = ["EXIT_FAILED", "EXIT_FLAGGED", "EXIT_OK", "EXIT_USAGE", "app", "main"]

if __name__ == "__main__":
    main()
