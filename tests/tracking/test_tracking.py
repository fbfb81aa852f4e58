"""Tracking through a real `mlflow server` process: lineage is readable back from MLflow alone."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from toolkit.tracking import Lineage, flatten, read_lineage, redact_url, tracked_run


def test_flatten_nested_config():
    assert flatten({"optim": {"lr": 1e-6, "betas": [0.9, 0.98]}, "name": "x"}) == {
        "optim.lr": "1e-06", "optim.betas": "[0.9, 0.98]", "name": "x"}


def test_redact_url_hides_password():
    assert redact_url("postgresql+psycopg://bob:s3cret@db/catalog") == "postgresql+psycopg://bob:***@db/catalog"


def test_lineage_round_trip_through_a_real_server(mlflow_server, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    monkeypatch.setenv("TOOLKIT_WORKSPACE", str(tmp_path / "ws"))
    monkeypatch.setenv("TOOLKIT_ACTOR", "alice")
    snapshot = "ab" * 32
    with tracked_run(Lineage(kind="train", snapshot=snapshot, base_weights_sha256="cd" * 32),
                     {"optim": {"lr": 1e-6}}, run_name="train-1") as train:
        train.log_snapshot_input(snapshot, "sqlite:////tmp/catalog.db", {"captions": 12})
        train.log_metrics({"loss": 2.5}, step=0)
        train.log_metrics({"loss": 1.5}, step=1)
        artifact = tmp_path / "config.json"
        artifact.write_text("{}")
        train.log_artifact(artifact)
    with tracked_run(Lineage(kind="eval", parent_run=train.run_id), run_name="eval-1") as evaluation:
        evaluation.log_metrics({"domain.swap_att.acc": 0.8})

    lineage = read_lineage(evaluation.run_id)
    eval_run, train_run = lineage["chain"]
    assert eval_run["tags"]["kind"] == "eval" and eval_run["tags"]["parent_run"] == train.run_id
    assert eval_run["metrics"]["domain.swap_att.acc"] == pytest.approx(0.8)
    assert train_run["run_id"] == train.run_id
    assert train_run["tags"]["snapshot"] == snapshot and train_run["tags"]["actor"] == "alice"
    assert train_run["tags"]["base_weights_sha256"] == "cd" * 32
    assert train_run["params"]["optim.lr"] == "1e-06"
    assert train_run["metrics"]["loss"] == pytest.approx(1.5)
    assert train_run["datasets"][0]["digest"] == snapshot[:36]
    assert snapshot in train_run["datasets"][0]["source"]
    from mlflow.tracking import MlflowClient

    assert [a.path for a in MlflowClient(mlflow_server).list_artifacts(train.run_id)] == ["config.json"]


def test_failed_body_marks_the_run_failed(tmp_path, monkeypatch):
    monkeypatch.setenv("TOOLKIT_WORKSPACE", str(tmp_path / "ws"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(RuntimeError), tracked_run(Lineage(kind="train")) as run:
        raise RuntimeError("boom")
    assert read_lineage(run.run_id)["chain"][0]["status"] == "FAILED"
    assert (tmp_path / "ws" / "mlflow.db").exists()


_TRACK_AT = """
import sys, time
import mlflow  # imported before the start line, so every process reaches it together
from toolkit.tracking import ensure_experiment
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))
print(ensure_experiment("started-together", sys.argv[1]))
"""


def test_commands_started_together_on_a_new_workspace_all_track(tmp_path):
    # MLflow creates a new SQLite store's tables on first open, unguarded: four commands started at once on a
    # new workspace used to race ("duplicate column name: step", or the experiment created twice).
    uri = f"sqlite:///{tmp_path / 'ws' / 'mlflow.db'}"
    start = time.time() + 12
    runs = [subprocess.Popen([sys.executable, "-c", _TRACK_AT, uri, str(start)], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for _ in range(4)]
    outcomes = [(run.wait(timeout=180), run.stdout.read().strip(), run.stderr.read()[-600:]) for run in runs]
    assert [code for code, _, _ in outcomes] == [0, 0, 0, 0], outcomes
    assert len({experiment for _, experiment, _ in outcomes}) == 1, outcomes
