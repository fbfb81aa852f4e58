"""Promotion gates: pure comparisons of a candidate against the current champion.

A candidate must not trade general ability for composition, which is exactly the regression CLIC exists
to avoid. Each gate reports the two values and the threshold it applied, so a refusal explains itself.

Gate metrics (percent, as `toolkit eval` reports them) are read from model-version tags `gate.<name>`:
    composition     mean compositional accuracy (domain swap/replace items, SugarCrepe(++) where run)
    retrieval_r5    mean of text->image and image->text R@5
    zeroshot_top1   zero-shot top-1
    regression_acc  accuracy on the reviewed regression set (confirmed model errors)
    parity_passed   1.0 when the exported bundle passed its parity check
    unreviewed_share  share (fraction) of the candidate's evaluation failures still unreviewed
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class GateThresholds:
    composition_margin: float = 0.0  # points; candidate >= champion + margin
    retrieval_tolerance: float = 0.5  # points; candidate >= champion - tolerance
    zeroshot_tolerance: float = 1.0  # points
    regression_tolerance: float = 0.0  # points
    max_unreviewed_share: float = 0.2
    require_parity: bool = True

    @classmethod
    def from_file(cls, path: Path) -> GateThresholds:
        try:
            values = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"gate thresholds file {path} is unreadable: {err}") from err
        unknown = set(values) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"{path}: unknown threshold keys {sorted(unknown)}; known: "
                             f"{sorted(cls.__dataclass_fields__)}")
        return cls(**values)


@dataclass(frozen=True)
class Gate:
    name: str
    passed: bool
    candidate: float | None
    champion: float | None
    rule: str


@dataclass(frozen=True)
class GateReport:
    gates: list[Gate] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(g.passed for g in self.gates)

    def failed(self) -> list[Gate]:
        return [g for g in self.gates if not g.passed]

    def as_dict(self) -> dict[str, object]:
        return {"passed": self.passed, "gates": [asdict(g) for g in self.gates]}


def _not_below(name: str, candidate: dict[str, float], champion: dict[str, float] | None, slack: float,
               sign: int) -> Gate:
    """candidate >= champion + sign*slack; with no champion (or no champion value) the gate passes."""
    value = candidate.get(name)
    reference = champion.get(name) if champion else None
    bound = None if reference is None else reference + sign * slack
    rule = f"{name} >= champion {'+' if sign > 0 else '-'} {slack}"
    if value is None:
        return Gate(name, reference is None, None, reference, rule + " (candidate has no value)")
    return Gate(name, bound is None or value >= bound - 1e-12, value, reference, rule)


def evaluate_gates(candidate: dict[str, float], champion: dict[str, float] | None,
                   thresholds: GateThresholds) -> GateReport:
    gates = [
        _not_below("composition", candidate, champion, thresholds.composition_margin, +1),
        _not_below("retrieval_r5", candidate, champion, thresholds.retrieval_tolerance, -1),
        _not_below("zeroshot_top1", candidate, champion, thresholds.zeroshot_tolerance, -1),
        _not_below("regression_acc", candidate, champion, thresholds.regression_tolerance, -1),
    ]
    parity = candidate.get("parity_passed")
    gates.append(Gate("parity_passed", (parity == 1.0) or not thresholds.require_parity, parity, None,
                      "exported bundle passed parity" if thresholds.require_parity else "parity not required"))
    share = candidate.get("unreviewed_share", 0.0)
    gates.append(Gate("unreviewed_share", share <= thresholds.max_unreviewed_share, share, None,
                      f"unreviewed_share <= {thresholds.max_unreviewed_share}"))
    return GateReport(gates)


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def gate_metrics_from_results(results: dict[str, dict[str, dict[str, float]]]) -> dict[str, float]:
    """One model's `{benchmark: {subset: {metric: value}}}` from `toolkit eval` -> the gate metrics."""
    composition: list[float] = []
    retrieval: list[float] = []
    zeroshot: list[float] = []
    for benchmark, subsets in results.items():
        kind = benchmark.split(":", 1)[0]
        if kind == "domain" and "all" in subsets:
            composition.append(subsets["all"]["acc"])
        elif kind == "sugarcrepe_pp" and "average" in subsets:
            composition.append(subsets["average"]["itt"])
        elif kind == "sugarcrepe":
            composition.extend(subsets[g]["acc"] for g in ("add", "replace", "swap") if g in subsets)
        elif kind == "retrieval":
            retrieval.extend(subsets[d]["r5"] for d in ("text_to_image", "image_to_text") if d in subsets)
        elif kind == "zeroshot":
            zeroshot.extend(v["top1"] for v in subsets.values() if "top1" in v)
    found = {"composition": _mean(composition), "retrieval_r5": _mean(retrieval), "zeroshot_top1": _mean(zeroshot)}
    return {k: v for k, v in found.items() if v is not None}


BLEND_GATES = ("composition", "retrieval_r5", "zeroshot_top1")


def choose_blend(base: dict[str, float], blends: dict[float, dict[str, float]],
                 thresholds: GateThresholds | None = None) -> float | None:
    """WiSE-FT's alpha: among the blends whose composition, retrieval and zero-shot gates pass against the
    base, the one with the highest composition (the smaller alpha on a tie); None when none passes.

    Feed it scores on validation items only: the alpha it returns is a choice, so the test items that are
    reported must not have made it.
    """
    thresholds = thresholds or GateThresholds()
    passing: dict[float, float] = {}
    for alpha, metrics in blends.items():
        report = evaluate_gates(metrics, base, thresholds)
        if all(g.passed for g in report.gates if g.name in BLEND_GATES) and "composition" in metrics:
            passing[alpha] = metrics["composition"]
    if not passing:
        return None
    return max(passing, key=lambda alpha: (passing[alpha], -alpha))
