"""`toolkit`: the command line. One module per verb group; each calls into the library only."""

from __future__ import annotations

import sys

import typer

from toolkit import __version__
from toolkit.cli.common import report_error
from toolkit.cli.data import register as register_data
from toolkit.cli.demo import register as register_demo
from toolkit.cli.doctor import register as register_doctor
from toolkit.cli.eval import register as register_eval
from toolkit.cli.export import register as register_export
from toolkit.cli.governance import register as register_governance
from toolkit.cli.negatives import register as register_negatives
from toolkit.cli.tiles import register as register_tiles
from toolkit.cli.train import register as register_train
from toolkit.core.errors import ToolkitError

app = typer.Typer(
    name="toolkit",
    help="CLIC adaptation toolkit: teach your own CLIP text encoder composition, inside your walls.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


@app.command()
def version() -> None:
    """Print the toolkit version."""
    typer.echo(__version__)


# Each verb group lives in its own module. Their commands import the library inside the command, not at the
# top, for a measured reason: `toolkit --help` starts in 0.3-0.7 s that way, against 4.5 s just to import the
# training, export, evaluation and governance modules (torch, open_clip, onnx; MLflow and spaCy come on top),
# and a core install (no torch) can still run `toolkit verify` and `toolkit doctor`.
for register in (register_data, register_tiles, register_negatives, register_train, register_eval,
                 register_governance, register_export, register_demo, register_doctor):
    register(app)


def main(argv: list[str] | None = None) -> None:
    """The one place where errors become exit codes: a `ToolkitError` is one line and its code, anything
    else is a bug and keeps its traceback (exit 1). `argv` defaults to the process's arguments."""
    try:
        app(args=argv)
    except ToolkitError as err:
        report_error(str(err))
        sys.exit(err.exit_code)
