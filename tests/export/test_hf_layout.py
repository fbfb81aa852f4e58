"""The real Hugging Face adapter (a tiny random CLIP folder) through export, parity, runtime and approval."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers import make_tiny_hf_clip, write_sugarcrepe
from toolkit.adapters.hf_clip import HFClipAdapter
from toolkit.adapters.loading import load_model
from toolkit.export.parity import HELD_OUT_CAPTIONS
from toolkit.runtime.encoder import TextEncoder
from toolkit.runtime.manifest import BundleError


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_hf_clip(tmp_path_factory.mktemp("hf") / "tiny-clip")


@pytest.fixture(scope="module")
def hf_adapter(hf_folder: Path) -> HFClipAdapter:
    adapter = load_model(f"hf:{hf_folder}")
    assert isinstance(adapter, HFClipAdapter)
    return adapter


@pytest.fixture(scope="module")
def sugarcrepe_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_sugarcrepe(tmp_path_factory.mktemp("sugarcrepe"))


def test_hf_bundle_parity_every_variant(hf_adapter: HFClipAdapter, tmp_path: Path) -> None:
    from toolkit.export.bundle import export_bundle

    manifest = export_bundle(hf_adapter, tmp_path / "bundle", ["fp32", "fp16", "int8"])
    parity = manifest["parity"]
    eos = int(hf_adapter.tokenizer.eos_token_id)
    assert manifest["family"] == "hf" and manifest["pool"] == "eos" and manifest["eot_id"] == eos
    assert manifest["tokenizer"]["cleaning"] == "hf" and manifest["tokenizer"]["pad_id"] == eos
    assert manifest["context_length"] == 32 and manifest["embed_dim"] == 16
    assert all(r["tokens_identical"] for r in parity.values()), parity
    assert parity["fp32"]["min_cosine"] >= 0.9999 and parity["fp32"]["captions"] == len(HELD_OUT_CAPTIONS)
    assert parity["fp16"]["min_cosine"] >= 0.999 and parity["int8"]["min_cosine"] >= 0.99

    # The adapter attends with an explicit mask up to the first <eot> (pad == <eot> here); the graph
    # relies on causality and the runtime trims after the longest <eot>: both must agree.
    encoder = TextEncoder(tmp_path / "bundle")
    texts = list(HELD_OUT_CAPTIONS[:6])
    np.testing.assert_array_equal(encoder.tokenize(texts), hf_adapter.tokenize(texts).numpy())
    with torch.inference_mode():
        reference = hf_adapter.encode_text(hf_adapter.tokenize(texts)).numpy()
    np.testing.assert_allclose(encoder.encode(texts), reference, atol=1e-5)


def _approval_export(adapter: HFClipAdapter, bundle: Path, sugarcrepe_dir: Path, tolerance: float):  # type: ignore[no-untyped-def]
    from toolkit.eval.benchmarks import BenchmarkSpec, load_benchmark
    from toolkit.export.approval import ApprovalPlan
    from toolkit.export.bundle import export_bundle

    spec = f"sugarcrepe:{sugarcrepe_dir}"
    plan = ApprovalPlan((load_benchmark(BenchmarkSpec("sugarcrepe", str(sugarcrepe_dir))),), (spec,), tolerance)
    return export_bundle(adapter, bundle, ["fp32", "fp16", "int8"], approval=plan)


def _reference_scores(model: str, sugarcrepe_dir: Path) -> dict[str, float]:
    """What `toolkit eval` reports for the torch model, reduced to the gate metrics."""
    from toolkit.eval.benchmarks import BenchmarkSpec, load_benchmark
    from toolkit.eval.evaluate import evaluate
    from toolkit.eval.summary import gate_metrics_from_results

    bench = load_benchmark(BenchmarkSpec("sugarcrepe", str(sugarcrepe_dir)))
    results = evaluate([model], [bench]).results[model]
    return gate_metrics_from_results(results)


def test_variants_are_approved_from_real_scores(
    hf_adapter: HFClipAdapter, hf_folder: Path, sugarcrepe_dir: Path, tmp_path: Path
) -> None:
    reference = _reference_scores(f"hf:{hf_folder}", sugarcrepe_dir)
    assert set(reference) == {"composition"}
    # -1 point: a variant must *beat* fp32 torch by a point to pass, so fp32 (equal scores) is refused
    strict = _approval_export(hf_adapter, tmp_path / "strict", sugarcrepe_dir, tolerance=-1.0)
    assert strict["approval"]["reference_scores"] == pytest.approx(reference)
    assert strict["approval"]["tolerance_points"] == -1.0
    records = strict["variants"]
    assert records["fp32"]["scores"] == pytest.approx(reference) and records["fp32"]["drops"]["composition"] == 0.0
    for name, record in records.items():
        drop = reference["composition"] - record["scores"]["composition"]
        assert record["drops"]["composition"] == pytest.approx(drop)
        assert record["approved"] is (drop <= -1.0), (name, record)
        assert record["basis"] == "evaluation"
    assert records["fp32"]["approved"] is False and "composition" in records["fp32"]["reasons"][0]
    with pytest.raises(BundleError, match="'fp32' is not approved"):
        TextEncoder(tmp_path / "strict")

    lenient = _approval_export(hf_adapter, tmp_path / "lenient", sugarcrepe_dir, tolerance=1000.0)
    assert all(record["approved"] and not record["reasons"] for record in lenient["variants"].values())
    assert {n: r["scores"] for n, r in lenient["variants"].items()} == {n: r["scores"] for n, r in records.items()}
    assert TextEncoder(tmp_path / "lenient", "int8").approved


def test_approval_scores_each_variant_through_its_onnx_graph(
    hf_adapter: HFClipAdapter, hf_folder: Path, sugarcrepe_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A variant whose graph maps every text to one vector ties positive and negative everywhere (ties
    count as wrong): approval must see that collapse, so it must score the graph, not the torch tower."""
    from toolkit.eval.benchmarks import BenchmarkSpec, load_benchmark
    from toolkit.export.approval import ApprovalPlan, approve_bundle_variants
    from toolkit.export.bundle import export_bundle

    reference = _reference_scores(f"hf:{hf_folder}", sugarcrepe_dir)
    assert reference["composition"] > 0.5  # so that a collapse to 0 is a drop beyond the tolerance
    export_bundle(hf_adapter, tmp_path / "b", ["fp32", "int8"])

    def collapsed(self: TextEncoder, ids: np.ndarray) -> np.ndarray:
        return np.full((len(ids), self.embed_dim), self.embed_dim ** -0.5, dtype=np.float32)

    monkeypatch.setattr(TextEncoder, "encode_ids", collapsed)
    plan = ApprovalPlan((load_benchmark(BenchmarkSpec("sugarcrepe", str(sugarcrepe_dir))),),
                        (f"sugarcrepe:{sugarcrepe_dir}",))
    records, summary = approve_bundle_variants(hf_adapter, tmp_path / "b", ["fp32", "int8"], plan)
    assert summary["reference_scores"] == pytest.approx(reference)  # the torch reference is untouched
    for record in records.values():
        assert record["scores"]["composition"] == 0.0 and record["approved"] is False
        assert record["drops"]["composition"] == pytest.approx(reference["composition"])
