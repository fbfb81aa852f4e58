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
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from toolkit.core.errors import InputError


class ThresholdsError(InputError):
    """A gate thresholds file is unreadable or holds a key or value the gates cannot use."""


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
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ThresholdsError(f"gate thresholds file {path} is unreadable: {err}") from err
        known = {f.name: f for f in fields(cls)}
        if not isinstance(values, dict):
            raise ThresholdsError(f"{path}: expected a JSON object of thresholds {sorted(known)}, "
                             f"got {type(values).__name__}")
        unknown = set(values) - set(known)
        if unknown:
            raise ThresholdsError(f"{path}: unknown threshold keys {sorted(unknown)}; known: {sorted(known)}")
        parity = values.pop("require_parity", cls.require_parity)
        if not isinstance(parity, bool):
            raise ThresholdsError(f"{path}: require_parity must be true or false, got {parity!r}")
        for key, value in values.items():
            # bool is an int to Python, and a string would only fail later, at the comparison
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ThresholdsError(f"{path}: {key} must be a finite number, got {value!r}")
        return cls(require_parity=parity, **{key: float(value) for key, value in values.items()})


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
               sign: int, required: bool = False) -> Gate:
    """candidate >= champion + sign*slack. With no champion (or no champion value) the gate passes, and so
    does a candidate without a value, unless the value is `required`."""
    value = candidate.get(name)
    reference = champion.get(name) if champion else None
    bound = None if reference is None else reference + sign * slack
    rule = f"{name} >= champion {'+' if sign > 0 else '-'} {slack}"
    if value is None:
        return Gate(name, reference is None and not required, None, reference, rule + " (candidate has no value)")
    return Gate(name, bound is None or value >= bound - 1e-12, value, reference, rule)


def evaluate_gates(candidate: dict[str, float], champion: dict[str, float] | None,
                   thresholds: GateThresholds, *, required: frozenset[str] = frozenset()) -> GateReport:
    """Every gate of `candidate` against `champion`. A gate named in `required` fails when the candidate has
    no value for it, even without a champion to compare with (e.g. regression_acc once a regression set exists)."""
    gates = [
        _not_below(name, candidate, champion, slack, sign, name in required)
        for name, slack, sign in (("composition", thresholds.composition_margin, +1),
                                  ("retrieval_r5", thresholds.retrieval_tolerance, -1),
                                  ("zeroshot_top1", thresholds.zeroshot_tolerance, -1),
                                  ("regression_acc", thresholds.regression_tolerance, -1))
    ]
    parity = candidate.get("parity_passed")
    gates.append(Gate("parity_passed", (parity == 1.0) or not thresholds.require_parity, parity, None,
                      "exported bundle passed parity" if thresholds.require_parity else "parity not required"))
    # Unknown is not zero: a candidate registered without its evaluation run must not pass as fully reviewed.
    share = candidate.get("unreviewed_share")
    rule = f"unreviewed_share <= {thresholds.max_unreviewed_share}"
    gates.append(Gate("unreviewed_share", share is not None and share <= thresholds.max_unreviewed_share, share,
                      None, rule if share is not None else rule + " (candidate has no value)"))
    return GateReport(gates)


BLEND_GATES = ("composition", "retrieval_r5", "zeroshot_top1")
# The gates that guard against forgetting: a blend must clear them with room for its measurement noise.
FORGETTING_GATES = ("retrieval_r5", "zeroshot_top1")


def choose_blend(base: dict[str, float], blends: dict[float, dict[str, float]],
                 thresholds: GateThresholds | None = None, *,
                 standard_errors: dict[float, dict[str, float]] | None = None,
                 confidence_z: float = 0.0) -> float | None:
    """WiSE-FT's alpha: among the blends whose composition, retrieval and zero-shot gates pass against the
    base, the one with the highest composition (the smaller alpha on a tie); None when none passes.

    With `confidence_z` > 0, a blend's retrieval and zero-shot changes must stay within tolerance by
    `confidence_z` standard errors of the change (`standard_errors[alpha]`, from `gate_standard_errors`):
    at 1, a blend whose measured change sits exactly at the tolerance fails, since its true change is worse
    than the tolerance about half the time. A blend lacking a standard error for such a gate fails it.

    Feed it scores on validation items only: the alpha it returns is a choice, so the test items that are
    reported must not have made it.
    """
    thresholds = thresholds or GateThresholds()
    if confidence_z < 0:
        raise ValueError(f"confidence_z must be >= 0, got {confidence_z}")
    passing: dict[float, float] = {}
    for alpha, metrics in blends.items():
        if "composition" not in metrics:
            continue
        # Judged at z standard errors below the measured value: the change must clear the tolerance by that.
        errors = (standard_errors or {}).get(alpha, {})
        noisy = {gate: metrics[gate] - confidence_z * errors.get(gate, float("inf"))
                 for gate in FORGETTING_GATES if gate in metrics and confidence_z > 0}
        report = evaluate_gates({**metrics, **noisy}, base, thresholds)
        if all(g.passed for g in report.gates if g.name in BLEND_GATES):
            passing[alpha] = metrics["composition"]
    if not passing:
        return None
    return max(passing, key=lambda alpha: (passing[alpha], -alpha))
