"""`toolkit`: the command line. One module per verb group; each calls into the library only."""

from __future__ import annotations

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
    # Imported here so `toolkit --help` stays fast and each verb group lives in its own module.
    from toolkit.cli.data import register as register_data
    from toolkit.cli.demo import register as register_demo
    from toolkit.cli.eval import register as register_eval
    from toolkit.cli.export import register as register_export
    from toolkit.cli.governance import register as register_governance
    from toolkit.cli.negatives import register as register_negatives
    from toolkit.cli.tiles import register as register_tiles
    from toolkit.cli.train import register as register_train

    for register in (register_data, register_tiles, register_negatives, register_train, register_eval,
                     register_governance, register_export, register_demo):
        register(app)


_register()


def main() -> None:
    app()
