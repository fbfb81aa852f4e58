"""`toolkit negatives ...`: look at the hard negatives training would see, before training."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from toolkit.cli.common import (
    EXIT_BAD_INPUT,
    EXIT_USAGE,
    DbOption,
    JsonOption,
    errors_to_exit,
    fail,
    print_json,
)


def register(app: typer.Typer) -> None:
    negatives_app = typer.Typer(help="Hard negatives: preview what the generators make from your captions.",
                                no_args_is_help=True)
    negatives_app.command("preview")(preview)
    app.add_typer(negatives_app, name="negatives")


def preview(
    db: DbOption = None,
    snapshot: Annotated[str, typer.Option(
        help="Snapshot: latest, a content hash (prefix) or a name.")] = "latest",
    n: Annotated[int, typer.Option("--n", min=1, help="How many samples to show.")] = 10,
    generator: Annotated[list[str] | None, typer.Option(
        help="Generator to use (swap_across, swap_within, replace); repeat for fallbacks in order. "
             "Default: swap_across.")] = None,
    seed: Annotated[int, typer.Option(help="Sampling seed; the same seed shows the same samples.")] = 0,
    split: Annotated[str, typer.Option(help="Which split's captions to pair.")] = "train",
    json_output: JsonOption = False,
) -> None:
    """Show positives (p1 = "c1. c2.") next to the hard negatives made for them, with generator names."""
    from toolkit.config import resolve_db_url
    from toolkit.governance.review import excluded_negative_keys
    from toolkit.negatives import GENERATORS, NegativeContext, build_vocabulary
    from toolkit.samples import (
        PairingIndex,
        SampleConfig,
        TrainingDataError,
        epoch_order,
        load_training_records,
        plan_clic_sample,
        sample_rng,
    )
    from toolkit.snapshot import SnapshotError, resolve_snapshot
    from toolkit.store.db import StoreError, open_store

    names = tuple(generator or ("swap_across",))
    unknown = [g for g in names if g not in GENERATORS]
    if unknown:
        fail(f"unknown generator(s) {unknown}; choose from {sorted(GENERATORS)}", EXIT_USAGE)
    rows: list[dict[str, Any]] = []
    snapshot_hash = ""
    with errors_to_exit({StoreError: EXIT_BAD_INPUT, SnapshotError: EXIT_BAD_INPUT,
                         TrainingDataError: EXIT_BAD_INPUT}):
        store = open_store(resolve_db_url(db))
        try:
            with store.session() as session:
                frozen = resolve_snapshot(session, snapshot)
                snapshot_hash = frozen.content_hash
                records = load_training_records(session, frozen, split=split)
            excluded = excluded_negative_keys(store)  # reviewers found them true: training never makes them
        finally:
            store.close()
        pairing = PairingIndex(records)
        config = SampleConfig(generators=names)
        vocabulary = (build_vocabulary(s for r in records for s in r.sentences) if "replace" in names else {})
        context = NegativeContext.with_exclusions(excluded, vocabulary)  # what ClicDataset builds
        for index in epoch_order(len(records), seed, 0)[:n]:
            plan = plan_clic_sample(records, pairing, index, sample_rng(seed, 0, index), config, context)
            rows.append({"caption_ids": [records[index].caption_id, records[plan.partner].caption_id],
                         "positive": plan.texts.p1, "shuffled_positive": plan.texts.p2,
                         "negative": plan.texts.negative, "generator": plan.texts.generator,
                         "detail": plan.texts.detail})
    if json_output:
        print_json({"snapshot": snapshot_hash, "split": split, "seed": seed, "generators": list(names),
                    "excluded_negatives": len(excluded), "samples": rows})
        return
    table = Table(title=f"Hard negatives ({', '.join(names)}; snapshot {snapshot_hash[:12]}, seed {seed})",
                  show_lines=True)
    for column in ("captions", "positive p1", "negative n", "generator", "change"):
        table.add_column(column, overflow="fold")
    for row in rows:
        detail = row["detail"]
        arrow = " → " if row["generator"] == "replace" else " ↔ "
        change = arrow.join(detail.get("words", []))
        if detail.get("tag"):
            change += f" ({detail['tag']})"
        table.add_row(", ".join(map(str, row["caption_ids"])), row["positive"], row["negative"],
                      row["generator"], change)
    Console().print(table)
