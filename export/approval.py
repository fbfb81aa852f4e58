"""Approve bundle variants by re-scoring them on the evaluation items that `toolkit eval` uses.

The reference is the torch fp32 model. For each variant, the bundle's ONNX text encoder (through the
runtime, with the bundle's own tokenizer) replaces the torch text tower; images still go through the
torch image tower, which is frozen and identical for every variant, so they are encoded once. The same
metric code as `toolkit eval` scores both, and the scores compared are the promotion-gate metrics
(`toolkit.governance.gates.gate_metrics_from_results`): compositional accuracy, retrieval R@5, and
zero-shot top-1 where such a benchmark is given. A variant is approved when none of them drops by more
than the tolerance (0.5 point by default, `toolkit.export.parity.approve_variants`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from toolkit.adapters.base import ClipAdapter
from toolkit.eval.benchmarks import Benchmark
from toolkit.eval.evaluate import Encoder, EvalConfig, score_benchmarks
from toolkit.eval.summary import gate_metrics_from_results
from toolkit.export.parity import SCORE_TOLERANCE_POINTS, approve_variants
from toolkit.runtime.encoder import TextEncoder

REFERENCE = "fp32-torch"


class BundleTextEncoder(Encoder):
    """An evaluation `Encoder` whose texts go through a bundle variant's ONNX graph (the runtime)."""

    def __init__(self, adapter: Any, config: EvalConfig, bundle_dir: Path, variant: str,
                 shared_images: dict[Path, np.ndarray] | None = None) -> None:

        super().__init__(adapter, config)
        # Approval is what decides whether the variant may load for serving; scoring it must not need it.
        self.runtime = TextEncoder(bundle_dir, variant, allow_unapproved=True)
        if shared_images is not None:
            self._images = shared_images  # same frozen image tower for every variant: encode images once

    def texts(self, texts: Sequence[str]) -> np.ndarray:
        todo = list(dict.fromkeys(t for t in texts if t not in self._texts))
        if todo:
            vectors = self.runtime.encode(todo, batch_size=self.config.batch_size)
            self._texts.update(zip(todo, vectors, strict=True))
        return np.stack([self._texts[t] for t in texts]).astype(np.float64)


@dataclass(frozen=True)
class ApprovalPlan:
    """What to re-score variants on: loaded benchmarks, their labels (the KIND:PATH specs) and tolerance."""

    benchmarks: tuple[Benchmark, ...]
    labels: tuple[str, ...]
    tolerance: float = SCORE_TOLERANCE_POINTS
    config: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self) -> None:
        if not self.benchmarks:
            raise ValueError("an approval plan needs at least one benchmark (--approve-on KIND:PATH)")
        if len(self.labels) != len(self.benchmarks):
            raise ValueError(f"{len(self.labels)} labels for {len(self.benchmarks)} benchmarks")


def approval_scores(encoder: Encoder, plan: ApprovalPlan) -> dict[str, float]:
    """The gate metrics (points) of one encoder on the plan's benchmarks."""
    # Keyed as `toolkit eval` keys them, so register (reading the eval JSON) computes the same figures.
    return gate_metrics_from_results(score_benchmarks(encoder, plan.benchmarks, plan.config))


def approve_bundle_variants(adapter: ClipAdapter, bundle_dir: Path, variants: Sequence[str],
                            plan: ApprovalPlan) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Score the torch reference and every variant of the bundle at `bundle_dir`; approve within tolerance.

    Returns (per-variant record {approved, reasons, scores, drops, worst_drop}, summary for the manifest).
    """
    reference = Encoder(adapter, plan.config)
    reference_scores = approval_scores(reference, plan)
    if not reference_scores:
        raise ValueError(
            f"--approve-on {', '.join(plan.labels)} yields no approval score; use a compositional "
            "(sugarcrepe_pp, sugarcrepe, domain), retrieval or zeroshot benchmark"
        )
    variant_scores = {
        variant: approval_scores(
            BundleTextEncoder(adapter, plan.config, bundle_dir, variant, shared_images=reference._images), plan
        )
        for variant in variants
    }
    approvals = approve_variants(reference_scores, variant_scores, plan.tolerance)
    records = {
        variant: {
            "approved": approvals[variant].approved,
            "basis": "evaluation",
            "reasons": list(approvals[variant].reasons),
            "scores": variant_scores[variant],
            "drops": {name: reference_scores[name] - score
                      for name, score in variant_scores[variant].items() if name in reference_scores},
            "worst_drop": approvals[variant].worst_drop,
        }
        for variant in variants
    }
    summary = {"reference": REFERENCE, "reference_scores": reference_scores, "tolerance_points": plan.tolerance,
               "benchmarks": list(plan.labels)}
    return records, summary


def unevaluated_records(variants: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Without evaluation items: fp32 is approved by its (strict) parity check alone; reduced precision
    is not approved, since parity cosines alone do not bound the loss on retrieval or composition."""
    return {
        variant: {"approved": True, "basis": "parity", "reasons": []}
        if variant == "fp32"
        else {"approved": False, "basis": "none",
              "reasons": ["not re-scored on evaluation items (export with --approve-on KIND:PATH)"]}
        for variant in variants
    }
