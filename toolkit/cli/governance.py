"""`toolkit review …`, `toolkit register`, `toolkit promote`, `toolkit rollback`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from toolkit.cli.common import DbOption, JsonOption, console, open_catalog, print_json
from toolkit.core.errors import EXIT_REFUSED

review_app = typer.Typer(help="Human review of evaluation failures (MLflow traces or this terminal).",
                         no_args_is_help=True)
RunOption = Annotated[str | None, typer.Option("--run", help="Only items of this evaluation run (MLflow run id).")]


@review_app.command("list")
def review_list(db: DbOption = None, run: RunOption = None, limit: int = 50, json_output: JsonOption = False) -> None:
    """Open review items, oldest first, with both scores and the negative's generator."""
    from toolkit.governance.review import open_items

    items = open_items(open_catalog(db), run, limit)
    if json_output:
        print_json(items)
        return
    table = Table(title=f"open review items (first {limit})")
    for column in ("id", "benchmark", "positive", "confuser", "pos", "conf", "generator"):
        table.add_column(column)
    for item in items:  # captions are data, not rich markup: "[red]" must print as typed
        table.add_row(str(item["id"]), escape(item["benchmark"]), escape(item["positive"]), escape(item["confuser"]),
                      f"{item['positive_score']:.3f}", f"{item['confuser_score']:.3f}", escape(item["generator"]))
    console.print(table)


@review_app.command("progress")
def review_progress_cmd(db: DbOption = None, run: RunOption = None, json_output: JsonOption = False) -> None:
    """How many items are reviewed, and the verdicts so far."""
    from toolkit.governance.review import review_progress

    progress = review_progress(open_catalog(db), run)
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
    from toolkit.governance.review import record_verdict

    verdict_id = record_verdict(open_catalog(db), item, verdict, reviewer=reviewer, note=note,
                                corrected_caption=corrected_caption, source="cli")
    console.print(f"verdict {verdict_id} recorded: item {item} = {verdict}")


@review_app.command("sync")
def review_sync(db: DbOption = None, run: RunOption = None) -> None:
    """Read reviewers' `verdict` feedback from the MLflow traces and apply it."""
    from toolkit.core.config import redact_url, resolve_tracking_uri
    from toolkit.governance.review import sync_verdicts_from_mlflow

    result = sync_verdicts_from_mlflow(open_catalog(db), run)
    console.print(f"{result.recorded} new verdict(s) recorded from MLflow")
    for problem in result.invalid:
        console.print(f"[yellow]invalid verdict feedback, not applied:[/] {escape(problem)}", soft_wrap=True)
    if result.missing_traces:
        console.print(f"[yellow]{result.missing_traces} review item(s) have no trace in the tracking store "
                      f"{escape(redact_url(resolve_tracking_uri()))}[/]: is MLFLOW_TRACKING_URI the store the "
                      "evaluation logged to?", soft_wrap=True)


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
    """Register a candidate model version with its gate metrics and make it the `challenger`.

    Every piece of evidence is checked first: the model folder must load, the eval JSON must hold numbers for
    this model, the evaluation run must exist, and the bundle must be exported from these very weights.
    """
    from toolkit.eval.summary import gate_metrics_from_eval_json
    from toolkit.governance.registry import bundle_parity, register_candidate, unreviewed_share_of_run
    from toolkit.tracking import Lineage

    metrics: dict[str, float] = {}
    if eval_json is not None:
        metrics.update(gate_metrics_from_eval_json(eval_json, eval_model or str(model_dir)))
    if eval_run is not None:
        metrics["unreviewed_share"] = unreviewed_share_of_run(open_catalog(db), eval_run)
    if bundle is not None:
        metrics["parity_passed"] = bundle_parity(bundle, model_dir)
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
    from toolkit.governance.registry import promote as promote_version
    from toolkit.governance.registry import promotion_target
    from toolkit.governance.regression import regression_scorer

    store = open_catalog(db)
    limits = GateThresholds.from_file(thresholds) if thresholds else GateThresholds()
    target = promotion_target(store, name, version)
    scorer = regression_scorer(store)  # checks every regression image before anything is scored
    if scorer is not None:
        count = len(scorer.benchmark)
        console.print(f"scoring the regression set ({count} item{'s' if count != 1 else ''}) "
                      "on the candidate and the champion")
    result = promote_version(store, name, target, limits, regression_accuracy=scorer)
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
    from toolkit.governance.registry import rollback as rollback_champion

    before, after = rollback_champion(open_catalog(db), name)
    console.print(f"champion of {name}: version {before} -> {after}")


def register(app: typer.Typer) -> None:
    app.add_typer(review_app, name="review")
    app.command(name="register")(register_model)
    app.command(name="promote")(promote)
    app.command(name="rollback")(rollback)
