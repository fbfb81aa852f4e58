"""Evaluation outputs: a JSON artifact, failures for review, one bar plot per benchmark, a rich table,
and (optionally) MLflow logging. Numbers come from `toolkit.eval.evaluate` unchanged.

Folder written by `write_artifacts(report, out_dir)`:
    results.json      {"results": {model: {benchmark: {subset: {metric: value}}}}, "counts": …, "models": […],
                       "paired": {model: {benchmark: {subset: {metric: {delta, standard_error, items, lost,
                       won}}}}}: every later model against the first, on the same items}
    failures.jsonl    one failure per line: model, benchmark, subset, metric, item_id, image, positive,
                      confuser, positive_score, confuser_score, generator
    <benchmark>.png   bars per subset × metric, one colour per model
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.table import Table

from toolkit.eval.evaluate import EvalReport, Results
from toolkit.eval.metrics import paired_difference


def _short(model: str) -> str:
    """A model label fit for a legend: the last path element of each part of the spec."""
    return model.rstrip("/").replace("\\", "/").split("/")[-1] or model


def write_artifacts(report: EvalReport, out_dir: Path, paired: dict[str, Any] | None = None) -> list[Path]:
    """`paired`: the report's `paired_against_first`, when the caller already has it."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [out_dir / "results.json", out_dir / "failures.jsonl"]
    payload = {"results": report.results, "counts": report.counts, "models": list(report.results),
               "paired": paired_against_first(report) if paired is None else paired}
    written[0].write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    with written[1].open("w", encoding="utf-8") as handle:
        for model, failures in report.failures.items():
            for failure in failures:
                handle.write(json.dumps({"model": model, **failure.as_dict()}, sort_keys=True) + "\n")
    benchmarks = list(dict.fromkeys(b for per_model in report.results.values() for b in per_model))
    for benchmark in benchmarks:
        written.append(plot_benchmark(report.results, benchmark, out_dir / f"{benchmark}.png"))
    return written


def paired_against_first(report: EvalReport) -> dict[str, dict[str, dict[str, dict[str, dict[str, float]]]]]:
    """Each later model minus the first (the base, by convention), per item-level metric: the difference in
    points and its standard error, so a reader sees whether a change is larger than its noise."""
    models = list(report.correct)
    if len(models) < 2:
        return {}
    first = report.correct[models[0]]
    paired: dict[str, dict[str, dict[str, dict[str, dict[str, float]]]]] = {}
    for model in models[1:]:
        for benchmark, subsets in report.correct[model].items():
            for subset, per_metric in subsets.items():
                for metric, flags in per_metric.items():
                    before = first.get(benchmark, {}).get(subset, {}).get(metric)
                    if before is None or len(before) != len(flags):
                        continue
                    diff = paired_difference(before, flags)
                    paired.setdefault(model, {}).setdefault(benchmark, {}).setdefault(subset, {})[metric] = {
                        "delta": diff.delta, "standard_error": diff.standard_error, "items": diff.items,
                        "lost": diff.lost, "won": diff.won}
    return paired


def plot_benchmark(results: Results, benchmark: str, path: Path) -> Path:
    """Grouped bars: x = subset/metric, one bar per model."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers
    import matplotlib.pyplot as plt

    models = [m for m in results if benchmark in results[m]]
    columns = list(dict.fromkeys((s, metric) for m in models for s, per in results[m][benchmark].items()
                                 for metric in per))
    width = 0.8 / max(len(models), 1)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.6 * len(columns) * max(len(models), 1) + 2), 4.5))
    for n, model in enumerate(models):
        values = [results[model][benchmark].get(s, {}).get(metric, float("nan")) for s, metric in columns]
        ax.bar([c + n * width - 0.4 + width / 2 for c in range(len(columns))], values, width,
               label=_short(model))
    ax.set_xticks(range(len(columns)))
    ax.set_xticklabels([f"{s}/{metric}" for s, metric in columns], rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("score (%)")
    ax.set_ylim(0, 100)
    ax.set_title(benchmark)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def results_table(results: Results, paired: dict[str, Any] | None = None) -> Table:
    """Models side by side: one row per benchmark/subset/metric; the best value per row in bold. With
    `paired` (`paired_against_first`), each later model's cell also shows its change from the first model
    and the standard error of that change, so a difference inside the noise reads as one."""
    models = list(results)
    table = Table(title="Evaluation (%)" + (f"; change from {_short(models[0])} ± standard error" if paired else ""))
    for header in ("benchmark", "subset", "metric"):
        table.add_column(header)
    for model in models:
        table.add_column(_short(model), justify="right")
    rows = list(dict.fromkeys((b, s, metric) for m in models for b, per_b in results[m].items()
                              for s, per_s in per_b.items() for metric in per_s))
    for benchmark, subset, metric in rows:
        values = [results[m].get(benchmark, {}).get(subset, {}).get(metric) for m in models]
        best = max((v for v in values if v is not None), default=None)
        cells = []
        for model, v in zip(models, values, strict=True):
            cell = "-" if v is None else (f"[bold]{v:.2f}[/]" if v == best and len(models) > 1 else f"{v:.2f}")
            change = (paired or {}).get(model, {}).get(benchmark, {}).get(subset, {}).get(metric)
            if v is not None and change is not None:
                cell += f" ({change['delta']:+.2f} ± {change['standard_error']:.2f})"
            cells.append(cell)
        table.add_row(benchmark, subset, metric, *cells)
    return table


def mlflow_metrics(per_benchmark: dict[str, dict[str, dict[str, float]]],
                   prefix: str = "eval") -> dict[str, float]:
    """Flat MLflow metric names: `<prefix>/<benchmark>/<subset>/<metric>`."""
    return {f"{prefix}/{b}/{s}/{m}": float(v) for b, per_b in per_benchmark.items()
            for s, per_s in per_b.items() for m, v in per_s.items()}


def log_to_mlflow(report: EvalReport, model: str, out_dir: Path | None = None, prefix: str = "eval") -> None:
    """Log one model's metrics (and the artifact folder) to the ACTIVE MLflow run; the caller owns the run."""
    import mlflow

    if mlflow.active_run() is None:
        raise RuntimeError("log_to_mlflow needs an active MLflow run (mlflow.start_run())")
    mlflow.log_metrics(mlflow_metrics(report.results[model], prefix))
    if out_dir is not None:
        mlflow.log_artifacts(str(out_dir), artifact_path=prefix)
