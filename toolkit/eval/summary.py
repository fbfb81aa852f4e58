"""Gate metrics: one model's `toolkit eval` results summarised as the figures promotion compares.

    composition     mean compositional accuracy (domain swap/replace items, SugarCrepe(++) where run)
    retrieval_r5    mean of text->image and image->text R@5
    zeroshot_top1   zero-shot top-1

Registration, export approval and the WiSE-FT choice all read gate metrics from here, so the same
evaluation gives the same figures on every path. Pure Python.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from toolkit.core.errors import InputError
from toolkit.eval.names import key_of

Entry = tuple[str, str, str]  # (benchmark, subset, metric) in `toolkit eval` results


class EvalResultsError(InputError):
    """Evaluation results (a `toolkit eval --json` file or its entry) are missing or not the expected shape."""


def _gate_entries(results: dict[str, dict[str, dict[str, float]]]) -> dict[str, list[Entry]]:
    """The results entries each gate metric averages, for one model."""
    entries: dict[str, list[Entry]] = {"composition": [], "retrieval_r5": [], "zeroshot_top1": []}
    for benchmark, subsets in results.items():
        key = key_of(benchmark)
        kind = key.kind if key else None
        if kind == "domain" and "all" in subsets:
            entries["composition"].append((benchmark, "all", "acc"))
        elif kind == "sugarcrepe_pp" and "average" in subsets:
            entries["composition"].append((benchmark, "average", "itt"))
        elif kind == "sugarcrepe":
            entries["composition"].extend((benchmark, g, "acc") for g in ("add", "replace", "swap") if g in subsets)
        elif kind == "retrieval":
            entries["retrieval_r5"].extend((benchmark, d, "r5") for d in ("text_to_image", "image_to_text")
                                           if d in subsets)
        elif kind == "zeroshot":
            entries["zeroshot_top1"].extend((benchmark, s, "top1") for s, v in subsets.items() if "top1" in v)
    return {gate: found for gate, found in entries.items() if found}


def _check_results_shape(results: Any) -> None:
    """`{benchmark: {subset: {metric: value}}}` down to the subsets; raises EvalResultsError naming the field."""
    if not isinstance(results, dict):
        raise EvalResultsError(f"expected {{benchmark: {{subset: {{metric: value}}}}}}, got {type(results).__name__}")
    for benchmark, subsets in results.items():
        if not isinstance(subsets, dict):
            raise EvalResultsError(f"{benchmark}: expected {{subset: {{metric: value}}}}, got {type(subsets).__name__}")
        for subset, values in subsets.items():
            if not isinstance(values, dict):
                raise EvalResultsError(f"{benchmark}.{subset}: expected {{metric: value}}, got {type(values).__name__}")


def _metric(results: dict[str, Any], benchmark: str, subset: str, metric: str) -> float:
    value = results[benchmark][subset].get(metric)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        found = "missing" if value is None else repr(value)
        raise EvalResultsError(f"{benchmark}.{subset}.{metric}: expected a number (percent), got {found}")
    return float(value)


def gate_metrics_from_results(results: dict[str, dict[str, dict[str, float]]]) -> dict[str, float]:
    """One model's `{benchmark: {subset: {metric: value}}}` from `toolkit eval` -> the gate metrics.

    Raises EvalResultsError naming the `benchmark.subset.metric` at fault when the results are not that shape."""
    _check_results_shape(results)
    return {gate: sum(_metric(results, b, s, m) for b, s, m in found) / len(found)
            for gate, found in _gate_entries(results).items()}


def gate_metrics_from_eval_json(path: Path, model: str) -> dict[str, float]:
    """The gate metrics of `model` in a `toolkit eval --json` file or the results.json of `toolkit eval --out`;
    EvalResultsError naming the file and field."""
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise EvalResultsError(f"evaluation results {path} does not exist; "
                               "write it with `toolkit eval --json`") from err
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise EvalResultsError(f"evaluation results {path} is not valid JSON ({err}); "
                         "write it with `toolkit eval --json`") from err
    if not isinstance(results, dict):
        raise EvalResultsError(f"{path}: expected a JSON object {{model: results}}, got {type(results).__name__}")
    if isinstance(results.get("results"), dict) and isinstance(results.get("models"), list):
        results = results["results"]  # the results.json that `toolkit eval --out DIR` writes
    if model not in results:
        raise EvalResultsError(f"{path} has no results for {model!r}; models in it: {sorted(results)} "
                         "(use --eval-model)")
    try:
        return gate_metrics_from_results(results[model])
    except EvalResultsError as err:
        raise EvalResultsError(f"{path}: results of {model!r}: {err}") from err


def averaged_standard_error(paired: dict[str, dict[str, dict[str, dict[str, float]]]],
                            entries: list[Entry]) -> float | None:
    """The standard error (points) of the change of a figure that averages `entries`, from one model's entry
    of `toolkit.eval.report.paired_against_first`: the mean of the entries' errors, a bound that holds
    however they correlate. None when an entry has no per-item pairing (an average of subset averages)."""
    stats = [paired.get(b, {}).get(s, {}).get(m) for b, s, m in entries]
    if not stats or any(stat is None for stat in stats):
        return None
    return sum(stat["standard_error"] for stat in stats if stat is not None) / len(stats)


def gate_standard_errors(results: dict[str, dict[str, dict[str, float]]],
                         paired: dict[str, dict[str, dict[str, dict[str, float]]]]) -> dict[str, float]:
    """The standard error of each gate metric's change, for a model evaluated after the reference it is
    compared with: `results` is its entry of `toolkit eval` results, `paired` its entry of the pairing."""
    errors = {gate: averaged_standard_error(paired, found) for gate, found in _gate_entries(results).items()}
    return {gate: error for gate, error in errors.items() if error is not None}
