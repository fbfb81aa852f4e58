"""Parity at export time (ORT vs torch on held-out captions) and variant approval by evaluation scores.

The held-out set covers what breaks exports: captions longer than the context (truncated the same
way on both sides), unicode, punctuation-only text, empty text, HTML entities, odd whitespace.
The ORT side runs the bundle's own runtime (its tokenizer and <eot> trimming), so parity covers the
whole deployed path, and tokenization is compared id for id as well.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from toolkit.runtime.encoder import CPU, TextEncoder

FP32_MIN_COSINE = 0.9999
SCORE_TOLERANCE_POINTS = 0.5  # approval: a variant may lose at most this much on any score

_LONG = "a very long caption that keeps describing the scene in ever more detail: " + " ".join(
    f"there is a {c} {s} next to the {c2} {s2},"
    for c, s, c2, s2 in [
        ("red", "cube", "blue", "ball"),
        ("green", "cone", "yellow", "box"),
        ("black", "dog", "white", "cat"),
        ("small", "boat", "large", "ship"),
        ("wooden", "chair", "metal", "table"),
    ]
    * 4
)

HELD_OUT_CAPTIONS: tuple[str, ...] = (
    "a red cube left of a blue ball.",
    "a blue cube left of a red ball.",
    "A man wearing a black hat. A water feature in a garden.",
    "two dogs playing with a frisbee on the beach",
    "the cat's toy isn't under the sofa, it's on the chair!",
    _LONG,
    _LONG.upper(),
    "caf\u00e9 na\u00efve \u00fcber cr\u00e8me br\u00fbl\u00e9e",
    "\u6771\u4eac\u30bf\u30ef\u30fc\u3068\u5bcc\u58eb\u5c71 \u2014 "
    "\u041f\u0440\u0438\u0432\u0435\u0442 \u043c\u0438\u0440",
    "a dog \U0001f436 and a cat \U0001f431 sharing a \U0001f355",
    "\u201cquoted\u201d text with \u2018curly\u2019 quotes and \ufb01ne ligatures",
    "...!!!???",
    "-- * -- # --",
    "",
    "   \t\n  ",
    "fish &amp; chips &lt;3 at 12:30pm, 2\u00bd portions",
    "x" * 400,
)


@dataclass(frozen=True)
class VariantParity:
    variant: str
    captions: int
    tokens_identical: bool
    min_cosine: float
    mean_cosine: float
    max_abs_diff: float
    passed: bool  # fp32: min cosine >= FP32_MIN_COSINE and identical tokens; others: recorded only


def compare_embeddings(
    variant: str, reference: np.ndarray, candidate: np.ndarray, tokens_identical: bool
) -> VariantParity:
    if reference.shape != candidate.shape:
        raise ValueError(
            f"{variant}: embedding shapes differ, torch {reference.shape} vs ORT {candidate.shape}"
        )
    ref = reference / np.linalg.norm(reference, axis=1, keepdims=True)
    cand = candidate / np.linalg.norm(candidate, axis=1, keepdims=True)
    cosine = (ref * cand).sum(axis=1)
    min_cos = float(cosine.min())
    passed = tokens_identical and (variant != "fp32" or min_cos >= FP32_MIN_COSINE)
    return VariantParity(
        variant=variant,
        captions=len(reference),
        tokens_identical=tokens_identical,
        min_cosine=min_cos,
        mean_cosine=float(cosine.mean()),
        max_abs_diff=float(np.abs(reference - candidate).max()),
        passed=passed,
    )


def check_parity(
    torch_tokenize: Callable[[Sequence[str]], np.ndarray],
    torch_encode: Callable[[np.ndarray], np.ndarray],
    runtime_encoders: Mapping[str, object],
    captions: Sequence[str] = HELD_OUT_CAPTIONS,
) -> dict[str, VariantParity]:
    """Compare each runtime encoder (a `toolkit.runtime.encoder.TextEncoder`) with the torch model.

    `torch_tokenize` is the training tokenizer (ids [N, context]); `torch_encode` maps those ids to
    normalised torch embeddings, run on the full padded context, untrimmed.
    """
    reference_ids = np.asarray(torch_tokenize(captions), dtype=np.int64)
    reference = np.asarray(torch_encode(reference_ids), dtype=np.float32)
    results: dict[str, VariantParity] = {}
    for variant, encoder in runtime_encoders.items():
        runtime_ids = encoder.tokenize(captions)  # type: ignore[attr-defined]
        identical = runtime_ids.shape == reference_ids.shape and bool((runtime_ids == reference_ids).all())
        results[variant] = compare_embeddings(variant, reference, encoder.encode(captions), identical)  # type: ignore[attr-defined]
    return results


def check_provider_parity(
    bundle_dir: Path,
    provider: str,
    variants: Sequence[str],
    captions: Sequence[str] = HELD_OUT_CAPTIONS,
    min_cosine: float = FP32_MIN_COSINE,
) -> dict[str, VariantParity]:
    """Each variant of a bundle on `provider` against the same variant on the CPU, where export measured
    its parity with torch and its approval scores: a variant passes when every caption's embedding keeps a
    cosine of at least `min_cosine`. Torch-free, so it runs on the serving machine."""

    results: dict[str, VariantParity] = {}
    for variant in variants:
        on_cpu = TextEncoder(bundle_dir, variant, allow_unapproved=True)
        # The CPU stays listed second: ORT places the nodes a GPU provider cannot run there.
        there = TextEncoder(bundle_dir, variant, allow_unapproved=True, providers=list(dict.fromkeys([provider, CPU])))
        compared = compare_embeddings(variant, on_cpu.encode(captions), there.encode(captions), True)
        results[variant] = replace(compared, passed=compared.min_cosine >= min_cosine)
    return results


def parity_report(results: Mapping[str, VariantParity]) -> dict[str, dict[str, object]]:
    return {variant: asdict(result) for variant, result in results.items()}


@dataclass(frozen=True)
class VariantApproval:
    variant: str
    approved: bool
    worst_drop: float  # points lost on the worst score (negative = improved everywhere)
    reasons: tuple[str, ...]


def approve_variants(
    reference_scores: Mapping[str, float],
    variant_scores: Mapping[str, Mapping[str, float]],
    tolerance: float = SCORE_TOLERANCE_POINTS,
) -> dict[str, VariantApproval]:
    """Approve each reduced-precision variant whose every score is within `tolerance` points of fp32.

    Scores are in points (0-100), e.g. {"retrieval_r5": 61.2, "compositional_accuracy": 74.0}. A variant
    missing a reference score is refused, since it was not fully evaluated.
    """
    if not reference_scores:
        raise ValueError("no reference (fp32) scores given; evaluate the fp32 variant first")
    approvals: dict[str, VariantApproval] = {}
    for variant, scores in variant_scores.items():
        reasons: list[str] = []
        drops: list[float] = []
        for name, reference in sorted(reference_scores.items()):
            if name not in scores:
                reasons.append(f"{name}: not evaluated")
                continue
            drop = float(reference) - float(scores[name])
            drops.append(drop)
            if drop > tolerance:
                reasons.append(
                    f"{name}: {scores[name]:.2f} vs fp32 {reference:.2f} (-{drop:.2f} > {tolerance})"
                )
        approvals[variant] = VariantApproval(
            variant=variant,
            approved=not reasons,
            worst_drop=max(drops) if drops else float("nan"),
            reasons=tuple(reasons),
        )
    return approvals
