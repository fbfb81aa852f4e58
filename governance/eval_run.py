"""An evaluation as an MLflow run: metrics per model, artifacts, and its failures opened for review.

`evaluate_and_track` is the one "evaluate -> artifacts -> track" job (`toolkit eval` and the demo call it).

Failures of every candidate (every model but the first, the baseline, when several are compared) become
review items (catalog) and traces (MLflow) inside the evaluation run,
with the failing image copied into the run's artifacts so the reviewer sees it next to the texts.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select

from toolkit.adapters.devices import resolve_device
from toolkit.catalog.db import Store, open_store
from toolkit.catalog.eval_models import DomainTestItem
from toolkit.core.config import resolve_db_url
from toolkit.eval.benchmarks import load_benchmarks
from toolkit.eval.evaluate import EvalConfig, EvalReport, Failure, evaluate
from toolkit.eval.report import mlflow_metrics, paired_against_first, write_artifacts
from toolkit.governance.review import log_review_traces, record_failures
from toolkit.tracking import Lineage, TrackedRun, require_tracking, tracked_run

IMAGES_PER_MODEL = 50  # failure images copied into the run for reviewers; all failures get a trace


def model_labels(models: list[str]) -> dict[str, str]:
    """Short, stable metric-name-safe labels: `m0`, `m1`, … (the full specs are logged as params)."""
    return {spec: f"m{i}" for i, spec in enumerate(models)}


def parent_run_of(models: list[str]) -> str | None:
    """The training run behind the last run-folder model, for lineage (eval is its child)."""

    for spec in reversed(models):
        card = Path(spec) / "model.json"
        if card.is_file():
            run_id = json.loads(card.read_text(encoding="utf-8")).get("mlflow_run_id")
            if run_id:
                return str(run_id)
    return None


def _caption_ids(store: Store, failures: list[Failure]) -> dict[str, int]:
    """Domain items carry `<set id>:<position>` ids; map them to the catalog caption they came from."""
    keys = [f.item_id for f in failures if f.benchmark.startswith("domain") and ":" in f.item_id]
    if not keys:
        return {}
    found: dict[str, int] = {}
    with store.session() as session:
        for key in keys:
            set_id, position = key.split(":", 1)
            caption = session.scalar(select(DomainTestItem.caption_id).where(
                DomainTestItem.test_set_id == int(set_id), DomainTestItem.position == int(position)))
            if caption is not None:
                found[key] = caption
    return found


def _log_failure_images(run: TrackedRun, item_ids: list[int], failures: list[Failure]) -> dict[int, str]:
    import mlflow

    uris: dict[int, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for item_id, failure in list(zip(item_ids, failures, strict=True))[:IMAGES_PER_MODEL]:
            source = Path(failure.image)
            if source.is_file():
                target = Path(tmp) / f"item-{item_id}{source.suffix}"
                shutil.copyfile(source, target)
                uris[item_id] = f"{mlflow.get_artifact_uri('review_images')}/{target.name}"
        if uris:
            run.log_artifact(tmp, artifact_path="review_images")
    return uris


def track_evaluation(report: Any, models: list[str], benchmarks: list[str], store: Store,
                     out_dir: Path | None = None) -> str:
    """Log an `EvalReport` as one MLflow run and open its failures for review. Returns the run id."""

    labels = model_labels(models)
    lineage = Lineage(kind="eval", parent_run=parent_run_of(models))
    params = {"models": {labels[m]: m for m in models}, "benchmarks": benchmarks}
    with tracked_run(lineage, params, run_name="eval") as run:
        for model in models:
            run.log_metrics(mlflow_metrics(report.results[model], f"{labels[model]}"))
        run.log_dict(report.results, "results.json")
        if out_dir is not None:
            run.log_artifact(out_dir, artifact_path="report")
        # With several models the first is the baseline (base or champion): only candidates' failures
        # are put in front of reviewers.
        for model in models[1:] if len(models) > 1 else models:
            failures = report.failures.get(model, [])
            item_ids = record_failures(store, run.run_id, model, failures, _caption_ids(store, failures))
            log_review_traces(store, item_ids, _log_failure_images(run, item_ids, failures))
        return run.run_id


@dataclass(frozen=True)
class TrackedEvaluation:
    report: EvalReport
    paired: dict[str, Any]  # `paired_against_first(report)`: each later model against the first
    written: list[Path] = field(default_factory=list)  # artifacts under `out`
    run_id: str | None = None  # the MLflow evaluation run, when tracked


def evaluate_and_track(models: Sequence[str], specs: Sequence[str], *, images: Path | None = None,
                       db: str | None = None, config: EvalConfig | None = None, out: Path | None = None,
                       track: bool = True,
                       progress: Callable[[str], None] = lambda message: None,
                       on_step: Callable[[int, int], None] | None = None) -> TrackedEvaluation:
    """Score `models` (the first is the baseline) on the benchmark `specs`; write the artifacts to `out`
    (when given) and log the evaluation as one MLflow run whose failures are opened for review (`track`).
    `progress(message)` before each step; `on_step(done, total)` after each (model, benchmark) step."""
    config = config or EvalConfig()
    if track:
        require_tracking()  # a dead tracking server is refused now, not after the evaluation
    resolve_device(config.device)  # before minutes of loading: a device this machine lacks is refused at once
    loaded = load_benchmarks(specs, images, db, progress)
    progress("evaluating")
    report = evaluate(list(models), loaded, config, progress=lambda message: progress(f"evaluating {message}"),
                      on_step=on_step)
    paired = paired_against_first(report)
    written = write_artifacts(report, out, paired) if out is not None else []
    run_id = None
    if track:
        store = open_store(resolve_db_url(db))
        try:
            run_id = track_evaluation(report, list(models), list(specs), store, out)
        finally:
            store.close()
    return TrackedEvaluation(report, paired, written, run_id)
