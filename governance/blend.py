"""WiSE-FT's blend, chosen on validation items: which alpha of (1 - alpha)·base + alpha·tuned to ship.

Every blend is written as a model folder, scored with the base (first, so each blend is paired with it) on
the validation benchmarks, and `choose_blend` keeps the best composition whose retrieval and zero-shot stay
within the promotion gates' tolerances by `confidence_z` standard errors. Feed it validation items only:
the alpha is a choice, so the test items that are reported must not have made it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from toolkit.adapters.loading import load_model
from toolkit.eval.benchmarks import Benchmark
from toolkit.eval.evaluate import EvalConfig, evaluate
from toolkit.eval.report import paired_against_first
from toolkit.eval.summary import gate_metrics_from_results, gate_standard_errors
from toolkit.governance.gates import GateThresholds, choose_blend
from toolkit.train.interpolate import interpolate, save_interpolated


@dataclass(frozen=True)
class BlendChoice:
    model: Path | None  # the chosen blend's folder; None when no blend passed
    alpha: float | None  # the chosen alpha; None when no blend passed
    blends: dict[float, Path]  # every alpha tried -> its model folder
    validation: dict[str, dict[str, float]]  # "base" or the alpha -> gate metrics on validation
    standard_errors: dict[str, dict[str, float]]  # the alpha -> standard errors of its gate changes
    confidence_z: float


def blend_folder(tuned: Path, alpha: float) -> Path:
    """Where the blend at `alpha` lives: beside the tuned run (alpha 1 is the tuned run itself)."""
    return tuned if alpha == 1.0 else tuned.with_name(f"{tuned.name}-wise{alpha:g}")


def choose_blend_on_validation(base: str, tuned: Path, alphas: Sequence[float], benchmarks: Sequence[Benchmark],
                               *, confidence_z: float = 1.0, thresholds: GateThresholds | None = None,
                               folder: Callable[[Path, float], Path] = blend_folder, reuse: bool = False,
                               config: EvalConfig | None = None,
                               say: Callable[[str], None] = lambda message: None) -> BlendChoice:
    """Write each blend (`reuse`: keep a folder already holding a model), score them with the base on
    `benchmarks` and pick one (see the module docstring)."""
    blends: dict[float, Path] = {}
    for alpha in alphas:
        out = folder(tuned, alpha)
        if not (reuse and (out / "model.json").is_file()) and out != tuned:
            save_interpolated(interpolate(load_model(base), load_model(str(tuned)), alpha), out, base, str(tuned),
                              alpha)
        blends[alpha] = out
    say(f"WiSE-FT: scoring blends at alpha {', '.join(f'{a:g}' for a in blends)} on the validation sets")
    report = evaluate([base, *(str(m) for m in blends.values())], benchmarks, config)
    results, paired = report.results, paired_against_first(report)
    reference = gate_metrics_from_results(results[base])
    metrics = {alpha: gate_metrics_from_results(results[str(model)]) for alpha, model in blends.items()}
    errors = {alpha: gate_standard_errors(results[str(model)], paired.get(str(model), {}))
              for alpha, model in blends.items()}
    chosen = choose_blend(reference, metrics, thresholds, standard_errors=errors, confidence_z=confidence_z)
    validation = {"base": reference, **{f"{a:g}": m for a, m in metrics.items()}}
    standard_errors = {f"{a:g}": {g: round(se, 3) for g, se in e.items()} for a, e in errors.items()}
    return BlendChoice(None if chosen is None else blends[chosen], chosen, blends, validation, standard_errors,
                       confidence_z)
