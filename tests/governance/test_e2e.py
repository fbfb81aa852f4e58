"""End to end against a real `mlflow server` process: ingest → train → eval → review → export → promote.

Everything goes through the `toolkit` CLI, as a platform team would run it; the lineage is then read back
from MLflow alone.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.helpers import REPO, write_scene_manifest


@pytest.mark.slow
def test_train_eval_review_promote_through_a_real_server(mlflow_server, tiny_open_clip_spec, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "MLFLOW_TRACKING_URI": mlflow_server, "OMP_NUM_THREADS": "1",
           "TOOLKIT_ACTOR": "platform-bot", "COLUMNS": "200"}

    def toolkit(*args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([sys.executable, "-m", "toolkit", *args], env=env, capture_output=True, text=True,
                              timeout=600)
        assert done.returncode == 0, f"toolkit {' '.join(args)} failed:\n{done.stderr[-3000:]}"
        return done

    toolkit("ingest", str(write_scene_manifest(tmp_path)), "--split-ratios", "0.5,0.0,0.5")
    toolkit("data", "snapshot")
    run_dir = tmp_path / "runs" / "clic"
    toolkit("train", "--base", tiny_open_clip_spec, "--out", str(run_dir), "--max-steps", "2", "--batch-size", "4")
    card = json.loads((run_dir / "model.json").read_text())
    train_run = card["mlflow_run_id"]

    toolkit("eval-domain-set", "--generator", "swap_within")
    evaluated = toolkit("eval", "--model", tiny_open_clip_spec, "--model", str(run_dir),
                        "--benchmark", "domain:latest:test", "--out", str(tmp_path / "eval"), "--json")
    assert evaluated.stdout.lstrip().startswith("{"), (evaluated.stdout[:500], evaluated.stderr[-2000:])
    results = json.loads(evaluated.stdout)
    eval_run = evaluated.stderr.split("evaluation run ")[1].split(":")[0].strip()

    # Review: one verdict in MLflow (feedback on the trace), the rest from the terminal.
    import mlflow
    from mlflow.entities import AssessmentSource

    items = json.loads(toolkit("review", "list", "--run", eval_run, "--json", "--limit", "500").stdout)
    assert items, "the evaluation produced no failures to review"
    mlflow.set_tracking_uri(mlflow_server)
    mlflow.log_feedback(trace_id=items[0]["trace_id"], name="verdict", value="model_error",
                        source=AssessmentSource(source_type="HUMAN", source_id="rita@example.com"))
    toolkit("review", "sync", "--run", eval_run)
    for item in items[1:]:
        toolkit("review", "record", str(item["id"]), "ambiguous", "--note", "bulk triage")
    progress = json.loads(toolkit("review", "progress", "--run", eval_run, "--json").stdout)
    assert progress["open"] == 0 and progress["verdicts"]["model_error"] == 1

    bundle = tmp_path / "bundle"
    toolkit("export", "--model", str(run_dir), "--out", str(bundle), "--variants", "fp32")
    toolkit("verify", str(bundle))
    # As the README prints it: register reads the results.json that `eval --out` wrote.
    registered = json.loads(toolkit("register", str(run_dir), "--eval-json", str(tmp_path / "eval" / "results.json"),
                                    "--eval-run", eval_run, "--bundle", str(bundle), "--json").stdout)
    assert registered["gate_metrics"]["parity_passed"] == 1.0
    assert registered["gate_metrics"]["composition"] == results[str(run_dir)]["domain"]["all"]["acc"]
    promoted = json.loads(toolkit("promote", "--json").stdout)
    assert promoted["promoted"] and promoted["version"] == registered["version"]
    # The confirmed model error is scored on the model downloaded from the server's artifact store.
    regression = next(g for g in promoted["gates"] if g["name"] == "regression_acc")
    assert regression["candidate"] in (0.0, 100.0)

    # The lineage, from MLflow alone: eval -> train -> snapshot and base weights.
    from toolkit.tracking import read_lineage

    chain = read_lineage(eval_run, tracking_uri=mlflow_server)["chain"]
    assert [link["tags"]["kind"] for link in chain] == ["eval", "train"]
    assert chain[1]["run_id"] == train_run
    assert chain[1]["tags"]["snapshot"] == card["snapshot"]
    assert chain[1]["tags"]["base_weights_sha256"] == card["base_weights_sha256"]
    assert chain[1]["datasets"][0]["digest"] == card["snapshot"][:36]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(mlflow_server)
    version = client.get_model_version_by_alias("clic-text-encoder", "champion")
    assert version.version == registered["version"]
    assert client.get_run(version.run_id).data.tags["toolkit.parent_run"] == eval_run
    exports = client.search_runs([client.get_run(train_run).info.experiment_id],
                                 filter_string="tags.`toolkit.kind` = 'export'")
    assert exports and exports[0].data.tags["toolkit.parent_run"] == train_run
