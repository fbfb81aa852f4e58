"""`toolkit negatives ...`: look at the hard negatives training would see, before training."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from toolkit.cli.common import DbOption, JsonOption, catalog, print_json

SnapshotOption = Annotated[str, typer.Option(help="Snapshot: latest, a content hash (prefix) or a name.")]


def register(app: typer.Typer) -> None:
    negatives_app = typer.Typer(help="Hard negatives: preview what the generators make from your captions.",
                                no_args_is_help=True)
    negatives_app.command("preview")(preview)
    negatives_app.command("audit")(audit)
    app.add_typer(negatives_app, name="negatives")


def preview(
    db: DbOption = None,
    snapshot: SnapshotOption = "latest",
    n: Annotated[int, typer.Option("--n", min=1, help="How many samples to show.")] = 10,
    generator: Annotated[list[str] | None, typer.Option(
        help="Generator to use (swap_across, swap_within, replace, swap_relation, swap_attribute); repeat "
             "for fallbacks in order. "
             "Default: swap_across.")] = None,
    seed: Annotated[int, typer.Option(help="Sampling seed; the same seed shows the same samples.")] = 0,
    split: Annotated[str, typer.Option(help="Which split's captions to pair.")] = "train",
    json_output: JsonOption = False,
) -> None:
    """Show positives (p1 = "c1. c2.") next to the hard negatives made for them, with generator names."""
    from toolkit.data.preview import preview_negatives

    names = tuple(generator or ("swap_across",))
    with catalog(db) as store:
        preview_result = preview_negatives(store, snapshot, split, names, n, seed)
    if json_output:
        print_json(preview_result.as_dict())
        return
    rows = preview_result.samples
    snapshot_hash = preview_result.snapshot
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


def audit(
    db: DbOption = None,
    snapshot: SnapshotOption = "latest",
    n: Annotated[int, typer.Option("--n", min=1, help="How many captions to sample.")] = 1000,
    generator: Annotated[list[str] | None, typer.Option(
        help="Generator to audit; repeat for several. Default: all.")] = None,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
    split: Annotated[str, typer.Option(help="Which split's captions to sample.")] = "train",
    json_output: JsonOption = False,
) -> None:
    """Check your captions' hard negatives before training: per generator, coverage, the automatic flag
    rates (a/an, agreement, fine tag, pronoun/determiner, coordination, same lemma, synonym, identity), the
    edit classes and examples."""
    from toolkit.data.preview import audit_negatives
    from toolkit.negatives.audit import FLAGS
    from toolkit.negatives.registry import GENERATORS

    names = tuple(generator or GENERATORS)
    with catalog(db) as store:
        result = audit_negatives(store, snapshot, split, names, n, seed)
    if json_output:
        print_json(result)
        return
    table = Table(title=f"Negatives audit ({result['pairs']} pairs, snapshot {result['snapshot'][:12]}, "
                        f"seed {seed}); rates in % of negatives made")
    for column in ("generator", "coverage", *FLAGS, "sum", "classes"):
        table.add_column(column, overflow="fold")
    for row in result["generators"]:
        classes = ", ".join(f"{k} {v}" for k, v in list(row["classes"].items())[:4])
        table.add_row(row["generator"], f"{100 * row['coverage']:.1f}",
                      *(f"{100 * row['flags'][f]:.2f}" for f in FLAGS), f"{100 * row['flag_sum']:.2f}", classes)
    Console().print(table)
    for row in result["generators"]:
        for example in row["examples"]:
            flags = f"  [{', '.join(example['flags'])}]" if example["flags"] else ""
            Console().print(f"{row['generator']}: {example['positive']}  →  {example['negative']}{flags}",
                            highlight=False, markup=False)
