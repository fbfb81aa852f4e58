"""Shared CLI plumbing: options every command takes, printing, and the one-line error report.

The CLI is a thin shell: it parses options, calls the library and prints. Errors are not mapped here:
the library raises `toolkit.core.errors.ToolkitError` kinds, and `toolkit.cli.main()` alone turns them
into one line and their exit code.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

if TYPE_CHECKING:
    from toolkit.catalog.db import Store

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


def open_catalog(db: str | None) -> Store:
    """The catalog named by --db (or $TOOLKIT_DB_URL, or the workspace default)."""
    from toolkit.catalog.db import open_store  # here, not at the top: `toolkit --help` stays fast
    from toolkit.core.config import resolve_db_url

    return open_store(resolve_db_url(db))


@contextmanager
def catalog(db: str | None) -> Iterator[Store]:
    """`open_catalog` for one command, closed when it ends, also when it fails."""
    store = open_catalog(db)
    try:
        yield store
    finally:
        store.close()


def print_json(payload: Any) -> None:
    sys.stdout.write(json.dumps(payload, indent=2, sort_keys=True, default=str) + "\n")


def print_result(result: dict[str, Any], json_output: bool) -> None:
    """A flat result: one JSON object with --json, else one `key: value` line each."""
    if json_output:
        print_json(result)
        return
    for key, value in result.items():
        console.print(f"{key}: {escape(str(value))}")


def report_error(message: str) -> None:
    # Escaped: messages quote paths and key lists in [brackets], which rich would read as markup and drop.
    from toolkit.core.config import redact_text

    # Last line of defence: a driver's message may quote the URL it was given, credentials and all.
    console.print(f"[bold red]error:[/] {escape(redact_text(message))}", soft_wrap=True)
