"""`toolkit eval`: score one or more models on benchmarks, side by side."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from toolkit.cli.common import DbOption, JsonOption, catalog, console, print_json
from toolkit.core.progress import ProgressLines, wants_lines

BENCHMARK_HELP = (
    "KIND:PATH, repeatable. sugarcrepe_pp:<folder of the 5 JSON files>, sugarcrepe:<folder of the 7 JSON "
    "files>, winoground:<folder with examples.jsonl and images/>, zeroshot:<labels.json>, "
    "retrieval:<snapshot>:<split> (e.g. retrieval:latest:test), domain:<snapshot>:<split>[:<set name>]."
)


def _out_folder(out: Path | None) -> Path | None:
    """--out checked as the options are read: a file in the way would otherwise fail only after the whole
    evaluation, when the results are written."""
    if out is not None:
        existing = next(folder for folder in (out, *out.parents) if folder.exists())
        if not existing.is_dir():
            raise typer.BadParameter(f"{existing} is a file, not a folder; name a folder (new or existing) "
                                     "to write the results into")
    return out


def eval_command(
    model: Annotated[list[str], typer.Option(
        "--model", help="MODEL spec, repeatable: open_clip:<arch>@<weights>, hf:<folder>, or a run folder.")],
    benchmark: Annotated[list[str], typer.Option("--benchmark", help=BENCHMARK_HELP)],
    images: Annotated[Path | None, typer.Option(
        "--images", help="Folder with the images of sugarcrepe_pp/sugarcrepe/winoground (e.g. COCO val2017; "
                         "default <folder>/images) or zeroshot (default: the labels file's folder).")] = None,
    db: DbOption = None,
    json_output: JsonOption = False,
    out: Annotated[Path | None, typer.Option("--out", callback=_out_folder, help="Write results.json, "
                                             "failures.jsonl and one PNG plot per benchmark to this folder.")]
        = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Images/texts per forward pass.")] \
        = 64,
    device: Annotated[str, typer.Option("--device", help="torch device, e.g. cpu or cuda.")] = "cpu",
    track: Annotated[bool, typer.Option(help="Log the run to MLflow and open its failures for review.")] = True,
) -> None:
    """Score models on compositional, retrieval and zero-shot benchmarks; print a side-by-side table.

    The evaluation is an MLflow run (metrics per model, results.json, plots); every failure becomes a
    review item with a trace in that run, for `toolkit review`.
    """
    from toolkit.eval.evaluate import EvalConfig
    from toolkit.eval.report import results_table
    from toolkit.governance.eval_run import evaluate_and_track

    # Off a terminal the status line is invisible: every step (loading a benchmark, scoring one model on
    # one) becomes a log line instead; a step can take minutes, so none is held back.
    lines = ProgressLines("eval", len(model) * len(benchmark), unit="steps", every_s=0) if wants_lines() else None
    scored = 0
    with console.status("evaluating") as status:

        def show(message: str) -> None:
            status.update(message)
            if lines:
                lines.update(scored, at=message)

        def count(done: int, _total: int) -> None:
            nonlocal scored
            scored = done

        outcome = evaluate_and_track(model, benchmark, images=images, db=db, out=out, track=track,
                                     config=EvalConfig(batch_size=batch_size, device=device), progress=show,
                                     on_step=count)
    if lines:
        lines.update(len(model) * len(benchmark), at="done")
    report, paired = outcome.report, outcome.paired
    for path in outcome.written:
        console.print(f"wrote {path}")
    if outcome.run_id is not None:
        console.print(f"evaluation run {outcome.run_id}: `toolkit review list --run {outcome.run_id}`")
    if json_output:
        print_json(report.results)
    else:
        console.print(results_table(report.results, paired))
        failures = sum(len(f) for f in report.failures.values())
        where = f" in {out / 'failures.jsonl'}" if out else " (write them with --out)"
        console.print(f"{failures} failures kept for review{where}")


def _generator_names(names: list[str] | None) -> list[str] | None:
    from toolkit.eval.benchmarks import BenchmarkError
    from toolkit.eval.domain_sets import check_generator_names

    try:
        check_generator_names(names or [])
    except BenchmarkError as err:
        raise typer.BadParameter(str(err)) from err
    return names


def domain_set_command(
    snapshot: Annotated[str, typer.Option("--snapshot", help="Snapshot: latest, a hash (prefix) or a name.")]
        = "latest",
    split: Annotated[str, typer.Option("--split", help="Held-out split whose captions become test items.")]
        = "test",
    generator: Annotated[list[str] | None, typer.Option(
        "--generator", callback=_generator_names, help="Negative generator, repeatable: swap_within, replace.")]
        = None,
    name: Annotated[str, typer.Option("--name", help="A name to refer to the set by "
                                                     "(domain:<snapshot>:<split>:<name>).")] = "",
    seed: Annotated[int, typer.Option("--seed", help="Seed for partners and generator choices.")] = 0,
    max_items: Annotated[int | None, typer.Option("--max-items", min=1, help="Stop after this many items.")]
        = None,
    db: DbOption = None,
    json_output: JsonOption = False,
) -> None:
    """Generate a domain compositional test set from a snapshot's held-out captions and store it, so every
    model is later scored on the same items (`toolkit eval --benchmark domain:<snapshot>:<split>`)."""
    from rich.markup import escape

    from toolkit.eval.domain_sets import NAMED_GENERATORS, create_domain_set

    with catalog(db) as store:
        test_set, created = create_domain_set(store, snapshot, split, generator or list(NAMED_GENERATORS),
                                              seed=seed, name=name, max_items=max_items)
    summary = {"id": test_set.content_hash, "name": test_set.name, "split": test_set.split,
               "created": created, "generators": test_set.generators, **test_set.counts}
    if json_output:
        print_json(summary)
    else:
        verb = "stored" if created else "already stored (identical items)"
        named = f" as {escape(repr(test_set.name))}" if test_set.name else ""  # a name may hold [brackets]
        console.print(f"domain test set {test_set.content_hash[:12]} {verb}{named}: {test_set.counts}")


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_command)
    app.command("eval-domain-set")(domain_set_command)
