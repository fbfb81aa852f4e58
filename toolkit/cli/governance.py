"""`toolkit review …`, `toolkit register`, `toolkit promote`, `toolkit rollback`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from toolkit.cli.common import EXIT_BAD_INPUT, EXIT_REFUSED, DbOption, JsonOption, console, errors_to_exit, print_json
from toolkit.config import resolve_db_url

review_app = typer.Typer(help="Human review of evaluation failures (MLflow traces or this terminal).",
                         no_args_is_help=True)
RunOption = Annotated[str | None, typer.Option("--run", help="Only items of this evaluation run (MLflow run id).")]


def _store(db: str | None):  # type: ignore[no-untyped-def]
    from toolkit.store import open_store
    from toolkit.store.db import StoreError

    with errors_to_exit({StoreError: EXIT_BAD_INPUT}):
        return open_store(resolve_db_url(db))


@review_app.command("list")
def review_list(db: DbOption = None, run: RunOption = None, limit: int = 50, json_output: JsonOption = False) -> None:
    """Open review items, oldest first, with both scores and the negative's generator."""
    from toolkit.governance.review import open_items

    items = open_items(_store(db), run, limit)
    if json_output:
        print_json(items)
        return
    table = Table(title=f"open review items (first {limit})")
    for column in ("id", "benchmark", "positive", "confuser", "pos", "conf", "generator"):
        table.add_column(column)
    for item in items:
        table.add_row(str(item["id"]), item["benchmark"], item["positive"], item["confuser"],
                      f"{item['positive_score']:.3f}", f"{item['confuser_score']:.3f}", item["generator"])
    console.print(table)


@review_app.command("progress")
def review_progress_cmd(db: DbOption = None, run: RunOption = None, json_output: JsonOption = False) -> None:
    """How many items are reviewed, and the verdicts so far."""
    from toolkit.governance.review import review_progress

    progress = review_progress(_store(db), run)
    if json_output:
        print_json(progress)
    else:
        console.print(f"{progress['reviewed']}/{progress['items']} reviewed "
                      f"({progress['unreviewed_share']:.0%} open); verdicts: {progress['verdicts']}")


@review_app.command("record")
def review_record(
    item: Annotated[int, typer.Argument(help="Review item id (see `toolkit review list`).")],
    verdict: Annotated[str, typer.Argument(help="model_error | caption_wrong | negative_true | ambiguous")],
    db: DbOption = None,
    note: Annotated[str, typer.Option(help="Why; kept with the verdict.")] = "",
    corrected_caption: Annotated[str | None, typer.Option(help="Required for caption_wrong.")] = None,
    reviewer: Annotated[str | None, typer.Option(help="Default: $TOOLKIT_ACTOR or the OS user.")] = None,
) -> None:
    """Record a verdict from the terminal (for teams without MLflow UI access)."""
    from toolkit.governance.review import ReviewError, record_verdict

    with errors_to_exit({ReviewError: EXIT_BAD_INPUT}):
        verdict_id = record_verdict(_store(db), item, verdict, reviewer=reviewer, note=note,
                                    corrected_caption=corrected_caption, source="cli")
    console.print(f"verdict {verdict_id} recorded: item {item} = {verdict}")


@review_app.command("sync")
def review_sync(db: DbOption = None, run: RunOption = None) -> None:
    """Read reviewers' `verdict` feedback from the MLflow traces and apply it."""
    from toolkit.governance.review import sync_verdicts_from_mlflow

    console.print(f"{sync_verdicts_from_mlflow(_store(db), run)} new verdict(s) recorded from MLflow")


def register_model(
    model_dir: Annotated[Path, typer.Argument(help="A training-run or interpolation output folder.")],
    name: Annotated[str, typer.Option(help="Registered model name.")] = "clic-text-encoder",
    eval_json: Annotated[Path | None, typer.Option(help="`toolkit eval --json` output holding this model.")] = None,
    eval_model: Annotated[str | None, typer.Option(help="Key of this model in the eval JSON (default: the "
                                                        "model folder as given to eval).")] = None,
    eval_run: Annotated[str | None, typer.Option(help="Evaluation MLflow run id (unreviewed share).")] = None,
    bundle: Annotated[Path | None, typer.Option(help="Exported bundle whose parity result to record.")] = None,
    db: DbOption = None,
    json_output: JsonOption = False,
) -> None:
    """Register a candidate model version with its gate metrics and make it the `challenger`."""
    from toolkit.governance.gates import gate_metrics_from_results
    from toolkit.governance.registry import RegistryError, register_candidate
    from toolkit.governance.review import review_progress
    from toolkit.governance.tracking import Lineage

    metrics: dict[str, float] = {}
    if eval_json is not None:
        results = json.loads(eval_json.read_text(encoding="utf-8"))
        key = eval_model or str(model_dir)
        if key not in results:
            from toolkit.cli.common import fail

            fail(f"{eval_json} has no results for {key!r}; models in it: {sorted(results)} (use --eval-model)")
        metrics.update(gate_metrics_from_results(results[key]))
    if eval_run is not None:
        metrics["unreviewed_share"] = review_progress(_store(db), eval_run)["unreviewed_share"]
    if bundle is not None:
        from toolkit.export.manifest import BundleError, parity_passed, verify_bundle

        with errors_to_exit({BundleError: EXIT_BAD_INPUT}):
            metrics["parity_passed"] = 1.0 if parity_passed(verify_bundle(bundle)) else 0.0
    with errors_to_exit({RegistryError: EXIT_BAD_INPUT}):
        version = register_candidate(model_dir, name, metrics, lineage=Lineage(kind="register", parent_run=eval_run))
    if json_output:
        print_json({"name": name, "version": version, "gate_metrics": metrics})
    else:
        console.print(f"registered {name} version {version} as challenger; gate metrics {metrics}")


def promote(
    name: Annotated[str, typer.Option(help="Registered model name.")] = "clic-text-encoder",
    version: Annotated[str | None, typer.Option(help="Version to promote (default: the challenger).")] = None,
    thresholds: Annotated[Path | None, typer.Option(help="JSON file of GateThresholds overrides.")] = None,
    db: DbOption = None,
    json_output: JsonOption = False,
) -> None:
    """Make a version the `champion` if it passes every gate against the current champion.

    Exit code 5 when a gate refuses; the refusal is audited and the champion is unchanged.
    """
    from toolkit.governance.gates import GateThresholds
    from toolkit.governance.registry import RegistryError, aliases
    from toolkit.governance.registry import promote as promote_version

    with errors_to_exit({RegistryError: EXIT_BAD_INPUT, ValueError: EXIT_BAD_INPUT}):
        limits = GateThresholds.from_file(thresholds) if thresholds else GateThresholds()
        target = version or aliases(name)["challenger"]
        if target is None:
            raise RegistryError(f"model {name!r} has no challenger; pass --version")
        result = promote_version(_store(db), name, target, limits)
    if json_output:
        print_json(result.as_dict())
    table = Table(title=f"{name} v{target}: {'PROMOTED' if result.promoted else 'REFUSED'}")
    for column in ("gate", "passed", "candidate", "champion", "rule"):
        table.add_column(column)
    for gate in result.report.gates:
        table.add_row(gate.name, "yes" if gate.passed else "NO", str(gate.candidate), str(gate.champion), gate.rule)
    console.print(table)
    if not result.promoted:
        raise typer.Exit(EXIT_REFUSED)


def rollback(name: Annotated[str, typer.Option(help="Registered model name.")] = "clic-text-encoder",
             db: DbOption = None) -> None:
    """Point `champion` back at the version the current champion replaced (audited)."""
    from toolkit.governance.registry import RegistryError
    from toolkit.governance.registry import rollback as rollback_champion

    with errors_to_exit({RegistryError: EXIT_BAD_INPUT}):
        before, after = rollback_champion(_store(db), name)
    console.print(f"champion of {name}: version {before} -> {after}")


def register(app: typer.Typer) -> None:
    app.add_typer(review_app, name="review")
    app.command(name="register")(register_model)
    app.command(name="promote")(promote)
    app.command(name="rollback")(rollback)
