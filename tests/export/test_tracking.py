"""`toolkit export` of a training-run folder (both families) is an MLflow run whose parent is the training run.

The run folders are written the way the trainer writes them (`toolkit.adapters.outputs.write_model_folder`), with
no training: export must not care whether the weights moved. MLflow is the per-test SQLite store of the
autouse `isolated_workspace` fixture.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers import make_tiny_hf_clip, run_toolkit, write_sugarcrepe
from toolkit.adapters.loading import load_model
from toolkit.runtime.encoder import TextEncoder
from toolkit.runtime.manifest import verify_bundle


def _training_run_folder(base_spec: str, out: Path) -> tuple[Path, str]:
    """A parent `train` MLflow run and a model folder as `toolkit train` leaves it (model.json + weights)."""
    from toolkit.adapters.outputs import atomic_output_dir, weights_sha256, write_model_folder
    from toolkit.tracking import Lineage, tracked_run

    base_sha = weights_sha256(base_spec)
    with tracked_run(Lineage(kind="train", base_weights_sha256=base_sha)) as parent:
        pass
    adapter = load_model(base_spec)
    with atomic_output_dir(out) as tmp:
        write_model_folder(adapter, tmp, {"base": base_spec, "base_weights_sha256": base_sha,
                                          "mlflow_run_id": parent.run_id, "global_step": 0})
    return out, parent.run_id


def test_hf_run_folder_export_is_a_tracked_run_with_approval(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    from toolkit.core.config import resolve_tracking_uri
    from toolkit.tracking import read_lineage

    base = f"hf:{make_tiny_hf_clip(tmp_path / 'hf-base')}"
    run_folder, parent_id = _training_run_folder(base, tmp_path / "run")
    card = json.loads((run_folder / "model.json").read_text(encoding="utf-8"))
    assert card["family"] == "hf"
    scdir = write_sugarcrepe(tmp_path / "sugarcrepe")
    result = run_toolkit([
        "export", "--model", str(run_folder), "--out", str(tmp_path / "bundle"), "--variants", "fp32,int8",
        "--approve-on", f"sugarcrepe:{scdir}", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    manifest = verify_bundle(tmp_path / "bundle")
    assert manifest["source_run"] == parent_id
    assert manifest["base_weights_sha256"] == card["base_weights_sha256"] is not None
    assert manifest["approval"]["benchmarks"] == [f"sugarcrepe:{scdir}"]

    lineage = read_lineage(summary["mlflow_run_id"])
    export_run, train_run = lineage["chain"]
    assert export_run["status"] == "FINISHED" and export_run["tags"]["kind"] == "export"
    assert export_run["tags"]["parent_run"] == parent_id and train_run["tags"]["kind"] == "train"
    assert export_run["tags"]["base_weights_sha256"] == card["base_weights_sha256"]
    assert export_run["params"]["variants"] == "fp32,int8" and export_run["params"]["opset"] == "18"
    assert export_run["params"]["model"] == str(run_folder)
    metrics = export_run["metrics"]
    assert metrics["parity/fp32/min_cosine"] == pytest.approx(manifest["parity"]["fp32"]["min_cosine"])
    assert metrics["parity/fp32/min_cosine"] >= 0.9999
    for variant in ("fp32", "int8"):
        entry = manifest["variants"][variant]
        assert metrics[f"approval/{variant}/approved"] == float(entry["approved"])
        assert metrics[f"approval/{variant}/composition"] == pytest.approx(entry["scores"]["composition"])
    client = MlflowClient(tracking_uri=resolve_tracking_uri(None))
    logged = {a.path for a in client.list_artifacts(summary["mlflow_run_id"], "bundle")}
    assert {"bundle/manifest.json", "bundle/text_encoder.int8.onnx"} <= logged


def test_open_clip_run_folder_exports_untracked(tiny_open_clip_spec: str, tmp_path: Path) -> None:
    import mlflow

    from toolkit.core.config import resolve_tracking_uri

    run_folder, parent_id = _training_run_folder(tiny_open_clip_spec, tmp_path / "run")
    bad = run_toolkit(["export", "--model", str(run_folder), "--out", str(tmp_path / "x"),
                                   "--approve-on", "nosuchkind:/data"])
    assert bad.exit_code == 3 and "nosuchkind" in bad.output and not (tmp_path / "x").exists()
    result = run_toolkit(["export", "--model", str(run_folder), "--out", str(tmp_path / "bundle"),
                                      "--no-track", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["mlflow_run_id"] is None
    mlflow.set_tracking_uri(resolve_tracking_uri(None))
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    assert [r.info.run_id for r in runs] == [parent_id]  # only the training run: --no-track logged nothing

    adapter = load_model(str(run_folder))
    texts = ["a red cube left of a blue ball", "a blue cube left of a red ball"]
    with torch.inference_mode():
        reference = adapter.encode_text(adapter.tokenize(texts)).numpy()
    np.testing.assert_allclose(TextEncoder(tmp_path / "bundle").encode(texts), reference, atol=1e-5)
    assert verify_bundle(tmp_path / "bundle")["source_run"] == parent_id
