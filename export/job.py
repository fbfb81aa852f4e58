"""The export job: a model spec in, a verified bundle out, recorded as an MLflow run (kind=export).

Lifecycle, in the order a failure costs least:
    check     the destination, the metrics and parity-caption files, the approval device (nothing loaded yet)
    load      the model and the --approve-on benchmarks
    export    ONNX, variants, parity and approval (`export_bundle`), inside a tracked run when `track`
    record    the bundle's files and manifest hash in that run; a refusal leaves the run FAILED, on record

The CLI (`toolkit export`) only builds an `ExportRequest` and prints the result.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolkit.adapters.devices import resolve_device
from toolkit.adapters.loading import load_model, parse_model_spec, read_model_card
from toolkit.adapters.outputs import weights_sha256
from toolkit.core.hashing import file_sha256
from toolkit.eval.benchmarks import load_benchmarks
from toolkit.eval.evaluate import EvalConfig
from toolkit.export.approval import ApprovalPlan
from toolkit.export.bundle import (
    Provenance,
    check_bundle_destination,
    export_bundle,
    log_bundle_to_mlflow,
)
from toolkit.export.onnx_text import ExportError
from toolkit.runtime.manifest import MANIFEST
from toolkit.tracking import Lineage, require_tracking, tracked_run


@dataclass(frozen=True)
class ExportRequest:
    model: str  # MODEL spec: open_clip:<arch|config>@<weights>, hf:<folder>, or a run folder
    out: Path  # new, empty folder for the bundle
    variants: tuple[str, ...] = ("fp32",)
    source_run: str | None = None  # default: mlflow_run_id of a run folder
    base_weights: Path | None = None  # default: base_weights_sha256 of a run folder
    eval_metrics: Path | None = None  # JSON object name -> number, recorded in the manifest
    parity_captions: Path | None = None  # one held-out caption per line, on top of the built-in edge cases
    approve_on: tuple[str, ...] = ()  # benchmark specs the variants are re-scored on
    approve_tolerance: float = 0.5  # points a variant may lose on any approval score
    images: Path | None = None  # images folder for the approval benchmarks
    approve_device: str = "cpu"  # torch device of the fp32 reference scores
    db: str | None = None  # catalog for retrieval/domain approval benchmarks
    with_image: bool = False
    layout: str = "bundle"  # bundle | hf (adds the transformers.js files)
    allow_random_init: bool = False
    track: bool = True


@dataclass(frozen=True)
class ExportResult:
    manifest: dict[str, Any]
    run_id: str | None  # the MLflow run, when tracked


def run_export(request: ExportRequest, progress: Callable[[str], None] = lambda message: None) -> ExportResult:
    """Export `request.model` to a verified bundle at `request.out`; see the module docstring."""
    check_bundle_destination(request.out)  # before the model loads: a bad --out costs nothing
    if request.track:
        require_tracking()  # a dead tracking server is refused now, not after the export
    metrics = read_metrics(request.eval_metrics) if request.eval_metrics else {}
    extra_captions = read_captions(request.parity_captions) if request.parity_captions else []
    if request.base_weights is not None and not request.base_weights.is_file():
        raise ExportError(f"--base-weights {request.base_weights} is not a file; name the base model's weights")
    spec = parse_model_spec(request.model)
    card = read_model_card(Path(spec.target)) if spec.family == "run" else {}
    adapter = load_model(request.model, allow_random_init=request.allow_random_init)
    plan = approval_plan(request, progress)
    provenance = Provenance(
        source_run=request.source_run or card.get("mlflow_run_id"),
        base_weights_sha256=(file_sha256(request.base_weights) if request.base_weights
                             else card.get("base_weights_sha256")),
        weights_sha256=weights_sha256(request.model),
        eval_metrics=metrics,
    )

    def build() -> dict[str, Any]:
        progress(f"exporting {request.model} ({', '.join(request.variants)}) and checking parity")
        return export_bundle(adapter, request.out, list(request.variants), provenance,
                             with_image=request.with_image, parity_captions=extra_captions, approval=plan,
                             layout=request.layout)

    if not request.track:
        return ExportResult(build(), None)
    params = {"model": request.model, "variants": ",".join(request.variants), "with_image": request.with_image,
              "approve_on": list(request.approve_on), "approve_tolerance": request.approve_tolerance}
    return _tracked(build, provenance, params, request.out)


def approval_plan(request: ExportRequest, progress: Callable[[str], None]) -> ApprovalPlan | None:
    """The --approve-on benchmarks loaded, or None (then only fp32 is approved)."""
    if not request.approve_on:
        if request.approve_device != "cpu":
            raise ExportError(f"--approve-device {request.approve_device} needs --approve-on: it is where "
                              "approval scores run")
        return None
    resolve_device(request.approve_device)  # refused before the benchmarks load and the export runs
    loaded = load_benchmarks(request.approve_on, request.images, request.db, progress)
    return ApprovalPlan(tuple(loaded), tuple(request.approve_on), request.approve_tolerance,
                        EvalConfig(device=request.approve_device))


def _tracked(build: Callable[[], dict[str, Any]], provenance: Provenance, params: dict[str, Any],
             out: Path) -> ExportResult:
    """`build` inside an MLflow run (kind=export, parent = the training run), then the bundle logged to it.

    A failed export (parity, approval input) leaves the run FAILED, so refusals are on record too.
    """
    lineage = Lineage(kind="export", parent_run=provenance.source_run,
                      base_weights_sha256=provenance.base_weights_sha256)
    with tracked_run(lineage, params, run_name=f"export {out.name}") as run:
        manifest = build()
        run.log_params({"opset": manifest["opset"], "weights_sha256": manifest["weights_sha256"]})
        log_bundle_to_mlflow(out)
        run.set_tags({"toolkit.bundle_manifest_sha256": file_sha256(out / MANIFEST)})
    return ExportResult(manifest, run.run_id)


def read_captions(path: Path) -> list[str]:
    """Parity captions: one per line, blank lines skipped; at least one."""
    try:
        lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as err:
        raise ExportError(f"--parity-captions {path} is not a readable UTF-8 text file: {err}") from err
    if not lines:
        raise ExportError(f"--parity-captions {path} has no captions (expected one per line)")
    return lines


def read_metrics(path: Path) -> dict[str, float]:
    """Evaluation scores to record in the manifest: a JSON object of name -> number."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ExportError(f"--eval-metrics {path} is not a readable UTF-8 JSON file: {err}") from err
    if not isinstance(data, dict) or not all(isinstance(v, int | float) for v in data.values()):
        raise ExportError(f"--eval-metrics {path} must be a JSON object of name -> number")
    return {str(k): float(v) for k, v in data.items()}
