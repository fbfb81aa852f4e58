"""`toolkit eval`: score one or more models on benchmarks, side by side."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from toolkit.cli.common import EXIT_BAD_INPUT, DbOption, JsonOption, console, errors_to_exit, print_json

BENCHMARK_HELP = (
    "KIND:PATH, repeatable. sugarcrepe_pp:<folder of the 5 JSON files>, sugarcrepe:<folder of the 7 JSON "
    "files>, winoground:<folder with examples.jsonl and images/>, zeroshot:<labels.json>, "
    "retrieval:<snapshot>:<split> (e.g. retrieval:latest:test), domain:<snapshot>:<split>[:<set name>]."
)


def eval_command(
    model: Annotated[list[str], typer.Option(
        "--model", help="MODEL spec, repeatable: open_clip:<arch>@<weights>, hf:<folder>, or a run folder.")],
    benchmark: Annotated[list[str], typer.Option("--benchmark", help=BENCHMARK_HELP)],
    images: Annotated[Path | None, typer.Option(
        "--images", help="Folder with the benchmark images (e.g. COCO val2017). Default: <benchmark "
                         "folder>/images; for zeroshot the labels file's folder.")] = None,
    db: DbOption = None,
    json_output: JsonOption = False,
    out: Annotated[Path | None, typer.Option("--out", help="Write results.json, failures.jsonl and one PNG "
                                             "plot per benchmark to this folder.")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Images/texts per forward pass.")] \
        = 64,
    device: Annotated[str, typer.Option("--device", help="torch device, e.g. cpu or cuda.")] = "cpu",
) -> None:
    """Score models on compositional, retrieval and zero-shot benchmarks; print a side-by-side table."""
    from sqlalchemy.exc import SQLAlchemyError

    from toolkit.adapters.base import ModelLoadError
    from toolkit.benchmarks import BenchmarkError, load_benchmark, parse_benchmark_spec
    from toolkit.eval_report import results_table, write_artifacts
    from toolkit.evaluate import EvalConfig, evaluate
    from toolkit.snapshot import SnapshotError
    from toolkit.store.db import StoreError

    bad_input: dict[type[BaseException], int] = {
        kind: EXIT_BAD_INPUT
        for kind in (BenchmarkError, ModelLoadError, SnapshotError, StoreError, SQLAlchemyError)}
    with errors_to_exit(bad_input):
        loaded = []
        for text in benchmark:
            with console.status(f"loading {text}"):
                loaded.append(load_benchmark(parse_benchmark_spec(text), images, db))
        with console.status("evaluating") as status:
            report = evaluate(model, loaded, EvalConfig(batch_size=batch_size, device=device),
                              progress=lambda message: status.update(f"evaluating {message}"))
    if out is not None:
        for path in write_artifacts(report, out):
            console.print(f"wrote {path}")
    if json_output:
        print_json(report.results)
    else:
        console.print(results_table(report.results))
        failures = sum(len(f) for f in report.failures.values())
        where = f" in {out / 'failures.jsonl'}" if out else " (write them with --out)"
        console.print(f"{failures} failures kept for review{where}")


def register(app: typer.Typer) -> None:
    app.command("eval")(eval_command)
