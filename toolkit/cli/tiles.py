"""`toolkit data prepare`: build the tile cache that lets training skip full-size image decodes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from toolkit.cli.common import DbOption, JsonOption, catalog, console, print_json
from toolkit.core.errors import EXIT_BAD_INPUT
from toolkit.core.progress import ProgressLines, wants_lines


def prepare(
    snapshot: Annotated[str, typer.Option(help="Snapshot to prepare: latest, a hash (8+ chars) or a name.")]
        = "latest",
    size: Annotated[int, typer.Option(help="The model's square input size S (224 for ViT-B-32).")] = 224,
    db: DbOption = None,
    workers: Annotated[int, typer.Option(help="Processes tiling in parallel.")] = 1,
    split: Annotated[list[str] | None, typer.Option(help="Split(s) to tile; repeat for several.")] = None,
    tile_format: Annotated[str, typer.Option("--format", help="png (lossless, ~36 KB per 224px half-tile) or "
                                             "npy (raw, 2× the disk, no decode cost).")] = "png",
    json_output: JsonOption = False,
) -> None:
    """Pre-size every image of a snapshot once (lossless half-tiles and crops, content-addressed in
    the workspace) so `toolkit train` decodes small tiles instead of full photos. Batches are identical.

    Idempotent (a re-run checks every tile against its recorded sha256, rewrites damaged ones and
    otherwise writes nothing) and crash-safe (temp file + rename). Each source file's sha256 is checked
    against the catalog first. Exit codes: 0 done, 2 a bad option value, 3 bad input or images at fault
    (listed; the cache is then not marked finished, so training will not use it).
    """
    from toolkit.core.config import workspace_dir
    from toolkit.data.tiles import TileError, check_tile_format, check_tile_size, check_workers, prepare_tiles

    # Out-of-range values are bad options (exit 2), refused before the catalog opens.
    checks: list[tuple[str, Callable[[], None]]] = [
        ("--size", lambda: check_tile_size(size)), ("--format", lambda: check_tile_format(tile_format)),
        ("--workers", lambda: check_workers(workers))]
    for hint, check in checks:
        try:
            check()
        except TileError as err:
            raise typer.BadParameter(str(err), param_hint=hint) from None
    bar = Progress(TextColumn("tiling"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=console,
                   transient=True, disable=json_output)
    with catalog(db) as store, bar as progress:
        task = progress.add_task("tiling", total=None)
        lines = ProgressLines("tiles", unit="images") if wants_lines() else None  # a log sees no bar

        def show(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)
            if lines:
                lines.total = total  # known once the snapshot's images are listed
                lines.update(done)

        report = prepare_tiles(store, snapshot, size, workspace_dir(), workers,
                               tuple(split or ("train",)), show, fmt=tile_format)
    if json_output:
        print_json(report.as_dict())
    else:
        table = Table(title=f"tiles for snapshot {report.snapshot[:16]} at {size}px: {report.root}")
        for key in ("images", "files_written", "files_repaired", "images_skipped", "bytes_written", "bytes_total",
                    "seconds"):
            table.add_row(key, str(getattr(report, key)))
        console.print(table)
    if report.errors:
        for message in report.errors[:20]:
            console.print(f"[bold red]error:[/] {message}", soft_wrap=True)
        more = len(report.errors) - 20
        console.print(f"{len(report.errors)} image(s) failed" + (f" ({more} more not shown)" if more > 0 else "")
                      + "; the cache is not marked finished. Fix them and re-run (done tiles are kept).")
        raise typer.Exit(EXIT_BAD_INPUT)


def register(app: typer.Typer) -> None:
    """Adds `prepare` to the `data` group; call after toolkit.cli.data's register."""
    from toolkit.cli.data import data_app

    data_app.command(name="prepare")(prepare)
