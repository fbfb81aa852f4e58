"""`toolkit`: the command line. One module per verb group; each calls into the library only."""

from __future__ import annotations

import sys

import typer

from toolkit import __version__

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


def _register() -> None:
    # Each verb group lives in its own module. They import the library inside their commands, not at the top:
    # `toolkit --help` takes about 1 s that way, against 10 s to import torch, open_clip, MLflow and spaCy, and a
    # core install (no torch) can still run `toolkit verify` and `toolkit doctor`.
    from toolkit.cli.data import register as register_data
    from toolkit.cli.demo import register as register_demo
    from toolkit.cli.doctor import register as register_doctor
    from toolkit.cli.eval import register as register_eval
    from toolkit.cli.export import register as register_export
    from toolkit.cli.governance import register as register_governance
    from toolkit.cli.negatives import register as register_negatives
    from toolkit.cli.tiles import register as register_tiles
    from toolkit.cli.train import register as register_train

    for register in (register_data, register_tiles, register_negatives, register_train, register_eval,
                     register_governance, register_export, register_demo, register_doctor):
        register(app)


_register()


def main(argv: list[str] | None = None) -> None:
    """The one place where errors become exit codes: a `ToolkitError` is one line and its code, anything
    else is a bug and keeps its traceback (exit 1). `argv` defaults to the process's arguments."""
    from toolkit.cli.common import report_error
    from toolkit.core.errors import ToolkitError

    try:
        app(args=argv)
    except ToolkitError as err:
        report_error(str(err))
        sys.exit(err.exit_code)
