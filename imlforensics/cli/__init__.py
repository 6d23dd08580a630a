"""The ``imlf`` command line: argument parsing and printing over the library API.

One module per command group (:mod:`.detect`, :mod:`.evaluate`, :mod:`.committee`, :mod:`.makemask`,
:mod:`.weights`); :mod:`.common` holds what they share. A new command is a function in its group's
module, added to the app below.

Exit codes: 0 all done; 1 some inputs failed; 2 usage error (bad option, unknown detector,
unusable output folder); 3 ``--fail-above S`` and some image scored above S (when nothing failed).
"""

from __future__ import annotations

import sys

import typer

from .._version import __version__
from ..errors import UnknownDetector
from .committee import calibrate_command, ensemble_command
from .common import EXIT_FAILED, EXIT_FLAGGED, EXIT_OK, EXIT_USAGE, err, out
from .detect import detect_command, models_command
from .evaluate import eval_command
from .makemask import make_mask_command
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


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:
        err.print("imlf: interrupted")
        sys.exit(130)
    except UnknownDetector as exc:  # raised lazily by some paths
        err.print(f"imlf: error: {exc}")
        sys.exit(EXIT_USAGE)


__all__ = ["EXIT_FAILED", "EXIT_FLAGGED", "EXIT_OK", "EXIT_USAGE", "app", "main"]

if __name__ == "__main__":
    main()
