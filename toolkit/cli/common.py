"""Shared CLI plumbing: options every command takes, exit codes, and error reporting.

The CLI is a thin shell: it parses options, calls the library, prints, and maps errors to exit codes.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

# Exit codes that mean something to a calling script.
EXIT_OK = 0
EXIT_FAILURE = 1  # unexpected internal error
EXIT_USAGE = 2  # bad options (Typer's own code too)
EXIT_BAD_INPUT = 3  # a file, model, snapshot or URL is missing, corrupt or wrong
EXIT_STRICT = 4  # --strict ingest refused a batch with rejects
EXIT_REFUSED = 5  # a gate, check or verification refused (promotion, parity, bundle integrity)

# Piped or logged output gets rich's 80 columns, which folds the side-by-side tables; a terminal keeps its
# own width, and COLUMNS still wins.
console = Console(stderr=True, width=None if sys.stderr.isatty() or "COLUMNS" in os.environ else 140)

DbOption = Annotated[
    str | None,
    typer.Option("--db", envvar="TOOLKIT_DB_URL", show_envvar=True,
                 help="Catalog URL, e.g. postgresql+psycopg://user:pw@host/db. "
                      "Default: SQLite at $TOOLKIT_WORKSPACE/catalog.db."),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout instead of tables.")]


def print_json(payload: Any) -> None:
    sys.stdout.write(json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")


def print_result(result: dict[str, Any], json_output: bool) -> None:
    """A flat result: one JSON object with --json, else one `key: value` line each."""
    if json_output:
        print_json(result)
        return
    for key, value in result.items():
        console.print(f"{key}: {escape(str(value))}")


def fail(message: str, code: int = EXIT_BAD_INPUT) -> NoReturn:
    # Escaped: messages quote paths and key lists in [brackets], which rich would read as markup and drop.
    console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    raise typer.Exit(code)


@contextmanager
def errors_to_exit(mapping: dict[type[BaseException], int]) -> Iterator[None]:
    """Turn the library's specific exceptions into a one-line message and a meaningful exit code."""
    try:
        yield
    except tuple(mapping) as err:
        code = next(c for kind, c in mapping.items() if isinstance(err, kind))
        fail(str(err), code)


