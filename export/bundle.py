"""Build a deployable bundle: ONNX variants + tokenizer assets + manifest.json, parity-checked.

Layout:
    text_encoder.fp32.onnx [.fp16.onnx] [.int8.onnx]
    tokenizer/bpe_merges.txt.gz
    manifest.json, manifest.sha256

The fp32 variant must pass parity (cosine >= 0.9999) or the export is refused and nothing is left
behind in the output folder. Each variant's manifest record says whether it is approved for serving:
with an `ApprovalPlan` every variant is re-scored on evaluation items against the torch model
(`toolkit.export.approval`); without one only fp32 is approved (by parity). The runtime loads only
approved variants unless told otherwise.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from toolkit import __version__
from toolkit.adapters.base import ClipAdapter
from toolkit.core.errors import Refused
from toolkit.core.hashing import file_sha256
from toolkit.export.approval import ApprovalPlan, approve_bundle_variants, unevaluated_records
from toolkit.export.conformance import (
    CLEANING_IN_TOKENIZER_JSON,
    CLEANING_STEPS,
    CONFORMANCE_FILE,
    classify_cases,
    write_conformance,
)
from toolkit.export.guard import MASK_NAME, add_input_guard, graph_domains
from toolkit.export.hf_layout import LAYOUTS, write_hf_layout
from toolkit.export.onnx_image import export_image_encoder
from toolkit.export.onnx_text import (
    INPUT_NAME,
    OUTPUT_NAME,
    ExportError,
    export_text_encoder,
    text_encoder_module,
)
from toolkit.export.optimize import GraphShape, build_variants
from toolkit.export.parity import FP32_MIN_COSINE, HELD_OUT_CAPTIONS, check_parity, parity_report
from toolkit.export.tokenizer_files import TOKENIZER_FILES, build_hf_tokenizer, write_tokenizer_files
from toolkit.runtime.encoder import TextEncoder
from toolkit.runtime.manifest import variant_entry, verify_bundle, write_manifest
from toolkit.runtime.tokenizer import ClipBpeTokenizer, TokenizerSettings

BPE_ASSET = "tokenizer/bpe_merges.txt.gz"


class ParityError(Refused):
    """The exported fp32 graph does not reproduce the torch model; nothing was written."""


@dataclass(frozen=True)
class Provenance:
    """Where the model came from; recorded verbatim in the manifest."""

    source_run: str | None = None
    base_weights_sha256: str | None = None
    weights_sha256: str | None = None
    eval_metrics: dict[str, float] = field(default_factory=dict)


def tokenizer_assets(adapter: ClipAdapter, asset_dir: Path) -> TokenizerSettings:
    """Write the adapter's BPE merges under `asset_dir` and return the runtime tokenizer settings."""
    target = asset_dir / BPE_ASSET
    target.parent.mkdir(parents=True, exist_ok=True)
    if adapter.family == "open_clip":
        tokenizer = adapter.tokenizer
        if tokenizer is None or getattr(tokenizer, "reduction_fn", None) is not None:
            raise ExportError(
                "this open_clip adapter's tokenizer is not the plain SimpleTokenizer "
                "(or uses token reduction); only that tokenizer is reproduced by the runtime"
            )
        from open_clip.tokenizer import default_bpe

        shutil.copyfile(default_bpe(), target)
        return TokenizerSettings(
            bpe_file=BPE_ASSET, context_length=adapter.context_length, num_merges=len(tokenizer.bpe_ranks)
        )
    if adapter.family == "hf":
        hf_tokenizer = adapter.tokenizer
        if hf_tokenizer is None:
            raise ExportError("the hf adapter exposes no `tokenizer`; cannot bundle its vocabulary")
        return _hf_tokenizer_assets(hf_tokenizer, adapter.context_length, target)
    raise ExportError(f"no tokenizer export for model family {adapter.family!r}")


def _hf_tokenizer_assets(hf_tokenizer: Any, context_length: int, target: Path) -> TokenizerSettings:
    """HF CLIPTokenizer -> the open_clip merges layout, checked to rebuild exactly its vocabulary."""
    with tempfile.TemporaryDirectory() as tmp:
        hf_tokenizer.save_pretrained(tmp)
        saved = Path(tmp)
        if (saved / "tokenizer.json").is_file():  # transformers 5 / fast tokenizers: one JSON file
            model = json.loads((saved / "tokenizer.json").read_text(encoding="utf-8"))["model"]
            vocab: dict[str, int] = model["vocab"]
            lines = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
        else:
            vocab = json.loads((saved / "vocab.json").read_text(encoding="utf-8"))
            merges_text = (saved / "merges.txt").read_text(encoding="utf-8")
            lines = [line for line in merges_text.split("\n") if line and not line.startswith("#version")]
    with gzip.open(target, "wt", encoding="utf-8") as handle:
        handle.write("#version: 0.2\n" + "\n".join(lines) + "\n")
    sot, eot = hf_tokenizer.bos_token, hf_tokenizer.eos_token
    settings = TokenizerSettings(
        bpe_file=BPE_ASSET,
        context_length=context_length,
        num_merges=len(lines),
        sot_token=sot,
        eot_token=eot,
        pad_id=int(hf_tokenizer.pad_token_id),
        cleaning="hf",
    )

    rebuilt = ClipBpeTokenizer(settings, target.parent.parent).encoder
    if rebuilt != vocab:
        raise ExportError(
            "the HF tokenizer's vocab.json is not CLIP's byte-level BPE layout "
            "(bytes, bytes</w>, merges, specials); the runtime cannot reproduce it"
        )
    return settings


def _torch_encoder(adapter: ClipAdapter):  # type: ignore[no-untyped-def]
    def encode(ids: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return adapter.encode_text(torch.from_numpy(ids), normalize=True).float().numpy()

    return encode


def check_bundle_destination(out_dir: Path) -> None:
    """Refuse, before minutes of export, a destination the bundle could not be written to: a file, a
    non-empty folder, or a path under a file or an unwritable folder."""
    if out_dir.exists():
        if not out_dir.is_dir():
            raise ExportError(f"output {out_dir} is a file; choose a new folder for the bundle")
        if any(out_dir.iterdir()):
            raise ExportError(f"output folder {out_dir} is not empty; choose a new folder for the bundle")
    existing = next(p for p in (out_dir.absolute(), *out_dir.absolute().parents) if p.exists())
    if not existing.is_dir():
        raise ExportError(f"output {out_dir} cannot be created: {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ExportError(f"output {out_dir} cannot be created: {existing} is not writable")


def export_bundle(
    adapter: ClipAdapter,
    out_dir: Path,
    variants: list[str],
    provenance: Provenance = Provenance(),
    with_image: bool = False,
    parity_captions: Sequence[str] = (),
    approval: ApprovalPlan | None = None,
    layout: str = "bundle",
    guard: bool = True,
) -> dict[str, Any]:
    """Export, optimise, parity-check and write the bundle to `out_dir` (must be empty or absent).

    `with_image` adds the frozen image encoder (fp32) for deployments that embed new images.
    `parity_captions` (e.g. the catalog's held-out split) are checked on top of the built-in edge cases.
    `approval` re-scores every variant on evaluation items and records approval per variant.
    `layout="hf"` adds the transformers.js files (`toolkit.export.hf_layout`). `guard=False` leaves out the
    input guard (`toolkit.export.guard`); only the benchmark uses it, to measure what the guard costs.
    """

    if layout not in LAYOUTS:
        raise ExportError(f"unknown bundle layout {layout!r}; choose from {', '.join(LAYOUTS)}")
    check_bundle_destination(out_dir)
    module, facts = text_encoder_module(adapter)
    with tempfile.TemporaryDirectory() as tmp:
        stage = Path(tmp) / "bundle"
        stage.mkdir()
        settings = tokenizer_assets(adapter, stage)
        runtime_tokenizer = ClipBpeTokenizer(settings, stage)
        write_tokenizer_files(runtime_tokenizer, stage)
        example = adapter.tokenize(["a red cube left of a blue ball", "a photo"]).to(torch.int64)
        # torch's exporter and onnxruntime's optimiser print progress on stdout; the CLI's --json needs it.
        with contextlib.redirect_stdout(sys.stderr):
            raw = export_text_encoder(module, Path(tmp) / "raw.onnx", example)
            paths = build_variants(raw, stage, variants, GraphShape(facts.num_heads, facts.width))
            for path in paths.values():
                if guard:
                    add_input_guard(path, facts.context_length, facts.eot_id, INPUT_NAME)
            image_section = export_image_encoder(adapter, stage) if with_image else None
        manifest: dict[str, Any] = {
            "architecture": facts.architecture,
            "family": facts.family,
            "embed_dim": facts.embed_dim,
            "context_length": facts.context_length,
            "pool": facts.pool,
            "eot_id": facts.eot_id,
            "trim_to_eot": facts.causal,
            "normalisation": "l2",
            "opset": _opset(paths["fp32"]),
            "input_name": INPUT_NAME,
            "output_name": OUTPUT_NAME,
            "input_dtype": "int64",
            "tokenizer": asdict(settings),
            # approval is decided below; until then no variant is approved
            "variants": {v: {"file": p.name, "approved": False, "reasons": ["pending"]} for v, p in paths.items()},
            "source_run": provenance.source_run,
            "base_weights_sha256": provenance.base_weights_sha256,
            "weights_sha256": provenance.weights_sha256,
            "eval_metrics": dict(provenance.eval_metrics),
            "toolkit_version": __version__,
            "created_at": datetime.now(timezone.utc).isoformat(),
        }
        if image_section is not None:
            manifest["image_encoder"] = image_section
        manifest["client_contract"] = _client_contract(runtime_tokenizer, guard)
        domains = {v: graph_domains(p) for v, p in paths.items()}
        if layout == "hf":
            manifest["hf_layout"] = write_hf_layout(stage, paths, {
                **asdict(facts), "vocab_size": len(runtime_tokenizer.encoder), "sot_id": runtime_tokenizer.sot_id,
                "pad_id": settings.pad_id})
        manifest["layout"] = layout
        write_manifest(stage, manifest)
        encoders = {v: TextEncoder(stage, v, allow_unapproved=True) for v in paths}
        results = check_parity(
            lambda texts: adapter.tokenize(texts).numpy(),
            _torch_encoder(adapter),
            encoders,
            captions=[*HELD_OUT_CAPTIONS, *parity_captions],
        )
        fp32 = results["fp32"]
        if not fp32.passed:
            raise ParityError(
                f"fp32 ONNX parity failed: min cosine {fp32.min_cosine:.6f} (need >= {FP32_MIN_COSINE}), "
                f"tokens identical: {fp32.tokens_identical}, max abs diff {fp32.max_abs_diff:.2e}"
            )
        manifest["parity"] = parity_report(results)
        if approval is None:
            records, manifest["approval"] = unevaluated_records(list(paths)), None
        else:
            records, manifest["approval"] = approve_bundle_variants(adapter, stage, list(paths), approval)
        for variant, record in records.items():
            manifest["variants"][variant] = {"file": paths[variant].name, "domains": domains[variant], **record}
        cases = classify_cases(runtime_tokenizer, build_hf_tokenizer(runtime_tokenizer))
        write_conformance(cases, encoders["fp32"].encode([case.text for case in cases]), stage / CONFORMANCE_FILE)
        manifest["client_contract"]["conformance"] = CONFORMANCE_FILE
        manifest["client_contract"]["clients"] = {case.name: case.client for case in cases}
        manifest["client_contract"]["ftfy_only"] = [case.name for case in cases if case.client == "ftfy"]
        write_manifest(stage, manifest)
        verify_bundle(stage)
        out_dir.mkdir(parents=True, exist_ok=True)
        for item in stage.iterdir():
            shutil.move(str(item), str(out_dir / item.name))
    return verify_bundle(out_dir)


def _client_contract(tokenizer: ClipBpeTokenizer, guarded: bool) -> dict[str, Any]:
    """What a client in any language needs to reproduce the runtime's embeddings (README: foreign clients)."""
    settings = tokenizer.settings
    return {
        "tokenizer_files": list(TOKENIZER_FILES),
        "sot_id": tokenizer.sot_id,
        "eot_id": tokenizer.eot_id,
        "pad_id": settings.pad_id,
        "max_sequence_length": settings.context_length,
        "truncation": "ids = <sot> + tokens + <eot>; longer than max_sequence_length: keep the first "
                      "max_sequence_length-1, then <eot>",
        "padding": "any value after <eot> is ignored (causal attention, pooling at <eot>)",
        "input_guard": guarded,
        "guard": ("any input length is accepted; rows are cut to max_sequence_length and <eot> is put last "
                  "where a row has none; attention_mask is optional and ignored") if guarded else None,
        "optional_inputs": [MASK_NAME] if guarded else [],
        "cleaning": settings.cleaning,
        "cleaning_steps": list(CLEANING_STEPS) if settings.cleaning == "open_clip" else
        ["NFC", "collapse whitespace runs to one space, strip", "lower case"],
        "cleaning_in_tokenizer_json": CLEANING_IN_TOKENIZER_JSON,
    }


def _opset(path: Path) -> int:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return next(int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx"))


def log_bundle_to_mlflow(
    bundle_dir: Path, artifact_path: str = "bundle", model_name: str = "text_encoder", variant: str = "fp32"
) -> str:
    """Log a verified bundle to the active MLflow run: the ONNX flavour model plus every bundle file.

    Returns the logged model's URI. Parity numbers are logged as metrics (parity/<variant>/<name>), and
    approval as approval/<variant>/approved (1 or 0) plus approval/<variant>/<score> when re-scored.
    """
    import mlflow
    import mlflow.onnx
    import onnx

    if mlflow.active_run() is None:
        raise RuntimeError("no active MLflow run: call inside `with mlflow.start_run():`")
    manifest = verify_bundle(bundle_dir)
    onnx_model = onnx.load(str(bundle_dir / variant_entry(manifest, variant, bundle_dir)["file"]))
    info = mlflow.onnx.log_model(
        onnx_model,
        name=model_name,
        save_as_external_data=False,
        metadata={"bundle_manifest_sha256": file_sha256(bundle_dir / "manifest.json")},
    )
    mlflow.log_artifacts(str(bundle_dir), artifact_path=artifact_path)
    for name, result in manifest.get("parity", {}).items():
        mlflow.log_metrics(
            {
                f"parity/{name}/min_cosine": result["min_cosine"],
                f"parity/{name}/max_abs_diff": result["max_abs_diff"],
            }
        )
    for name, entry in manifest["variants"].items():
        scores = {f"approval/{name}/{score}": value for score, value in entry.get("scores", {}).items()}
        mlflow.log_metrics({f"approval/{name}/approved": float(entry.get("approved") is True), **scores})
    reference = (manifest.get("approval") or {}).get("reference_scores", {})
    if reference:
        mlflow.log_metrics({f"approval/reference/{score}": value for score, value in reference.items()})
    return str(info.model_uri)
