"""End to end: `toolkit train` on a tiny catalog snapshot (ORM rows + generated PNGs), then reload."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.helpers import REPO, TRAIN_CATALOG, snapshot_train_catalog
from toolkit.adapters.loading import load_model
from toolkit.core.hashing import file_sha256


def test_train_cli_on_a_snapshot(tiny_open_clip_spec: str, catalog_url: str, tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    snapshot_hash = snapshot_train_catalog(catalog_url, tmp_path / "images")
    out = tmp_path / "runs" / "first"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "COLUMNS": "500"}
    done = subprocess.run([sys.executable, "-m", "toolkit", "train", "--base", tiny_open_clip_spec,
                           "--snapshot", "tiny", "--out", str(out), "--db", catalog_url, "--max-steps", "2",
                           "--batch-size", "2"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["global_step"] == 2
    card = json.loads((out / "model.json").read_text())
    weights = Path(tiny_open_clip_spec.rpartition("@")[2])
    assert card["snapshot"] == snapshot_hash and card["base_weights_sha256"] == file_sha256(weights)
    assert card["family"] == "open_clip" and card["train_config"]["batch_size"] == 2
    assert load_model(str(out)).family == "open_clip"
    # The run is tracked: lineage readable back from MLflow alone (the workspace's local store).
    from toolkit.tracking import read_lineage

    (run,) = read_lineage(card["mlflow_run_id"])["chain"]
    assert run["status"] == "FINISHED"
    assert run["tags"]["kind"] == "train" and run["tags"]["snapshot"] == snapshot_hash
    assert run["tags"]["base_weights_sha256"] == file_sha256(weights)
    assert run["datasets"][0]["digest"] == snapshot_hash[:36]
    assert "loss" in " ".join(run["metrics"]) and run["params"]["config.batch_size"] == "2"


def _train(base: str, out: Path, db: str, snapshot: str = "latest") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "COLUMNS": "500"}
    return subprocess.run([sys.executable, "-m", "toolkit", "train", "--base", base, "--snapshot", snapshot,
                           "--out", str(out), "--db", db, "--max-steps", "1", "--batch-size", "2"],
                          env=env, capture_output=True, text=True, timeout=300)


def test_bad_snapshots_fail_clearly_and_leave_nothing(tiny_open_clip_spec: str, tmp_path: Path) -> None:
    """A snapshot that does not exist, no snapshot at all, and one with too few images to pair."""
    out = tmp_path / "runs" / "never"
    empty_db = f"sqlite:///{tmp_path / 'empty.db'}"
    none_yet = _train(tiny_open_clip_spec, out, empty_db)
    assert none_yet.returncode == 3 and "no snapshot exists yet" in none_yet.stderr
    (tmp_path / "images").mkdir()
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    snapshot_train_catalog(url, tmp_path / "images")
    missing = _train(tiny_open_clip_spec, out, url, snapshot="deadbeefdeadbeef")
    assert missing.returncode == 3 and "snapshot 'deadbeefdeadbeef' does not exist" in missing.stderr
    # A catalog whose only tall image (c.png) has no partner of its aspect class.
    (tmp_path / "lone").mkdir()
    lone_url = f"sqlite:///{tmp_path / 'lone.db'}"
    snapshot_train_catalog(lone_url, tmp_path / "lone", TRAIN_CATALOG[:3])
    too_few = _train(tiny_open_clip_spec, out, lone_url)
    assert too_few.returncode == 3 and "c.png" in too_few.stderr
    runs = tmp_path / "runs"
    assert not runs.exists() or not any(runs.iterdir()), "a failed run left files behind"


def test_training_without_concatenation_needs_no_partner(tiny_open_clip_spec: str, tmp_path: Path) -> None:
    """The no-concatenation ablation trains on the catalog that concatenated training refuses (a lone tall
    image), and its uni-modal term is zero because p1 and p2 are the same sentence."""
    from toolkit.train.config import TrainConfig
    from toolkit.train.job import train_on_snapshot

    (tmp_path / "lone").mkdir()
    url = f"sqlite:///{tmp_path / 'lone.db'}"
    snapshot_train_catalog(url, tmp_path / "lone", TRAIN_CATALOG[:3])
    config = TrainConfig(max_steps=1, batch_size=3, concatenate=False, generators=("swap_within", "replace"),
                         progress=False)
    result = train_on_snapshot(tiny_open_clip_spec, "latest", tmp_path / "single", config, url, track=False)
    assert result.global_step == 1
    assert result.last_metrics["clic/uni"] == 0.0 and result.last_metrics["clic/sneg"] > 0
    card = json.loads((tmp_path / "single" / "model.json").read_text())
    assert card["train_config"]["concatenate"] is False


def test_changed_or_missing_image_files_are_refused_by_name(tiny_open_clip_spec: str, tmp_path: Path) -> None:
    """The decode path checks each file against the catalog's sha256 on its first read, and every file is
    looked for before training starts."""
    import pytest
    from PIL import Image as PILImage

    from toolkit.data.datasets import ImageLoadError
    from toolkit.train.config import TrainConfig
    from toolkit.train.job import train_on_snapshot
    from toolkit.train.recipe import work_dir_for

    images = tmp_path / "images"
    images.mkdir()
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    snapshot_train_catalog(url, images)
    out = tmp_path / "runs" / "r"
    PILImage.new("RGB", (40, 20), (1, 2, 3)).save(images / "a.png")  # valid pixels, not the ingested ones
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "COLUMNS": "500"}
    changed = subprocess.run([sys.executable, "-m", "toolkit", "train", "--base", tiny_open_clip_spec, "--out",
                              str(out), "--db", url, "--max-steps", "2", "--batch-size", "2", "--tiles", "off",
                              "--no-track"], env=env, capture_output=True, text=True, timeout=300)
    assert changed.returncode == 3, changed.stderr
    assert "a.png" in changed.stderr and "changed since ingest" in changed.stderr
    assert "Traceback" not in changed.stderr
    (images / "b.png").unlink()
    config = TrainConfig(max_steps=2, batch_size=2, progress=False, tiles="off")
    with pytest.raises(ImageLoadError, match=r"missing: .*b\.png"):
        train_on_snapshot(tiny_open_clip_spec, "latest", out, config, url, track=False)
    assert not out.exists() and not work_dir_for(out).exists()


SIGTERM_AFTER_STEP_2 = """
import os, signal, sys
from toolkit.train.recipe import ClicRecipe
save = ClicRecipe._save_checkpoint
def save_then_terminate(self):
    save(self)
    if self.global_step == 2:
        os.kill(os.getpid(), signal.SIGTERM)
ClicRecipe._save_checkpoint = save_then_terminate
from toolkit.cli import main
sys.argv = ["toolkit", *sys.argv[1:]]
main()
"""


def test_sigterm_ends_the_mlflow_run_and_the_run_resumes(tiny_open_clip_spec: str, tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    from toolkit.core.config import resolve_tracking_uri
    from toolkit.train.recipe import work_dir_for

    (tmp_path / "images").mkdir()
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    snapshot_train_catalog(url, tmp_path / "images")
    (tmp_path / "train.toml").write_text("epochs = 2\ncheckpoint_every = 2\n", encoding="utf-8")
    out = tmp_path / "runs" / "r"
    args = ["train", "--base", tiny_open_clip_spec, "--out", str(out), "--db", url, "--batch-size", "2",
            "--config", str(tmp_path / "train.toml")]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "COLUMNS": "500"}
    stopped = subprocess.run([sys.executable, "-c", SIGTERM_AFTER_STEP_2, *args], env=env, capture_output=True,
                             text=True, timeout=300)
    assert stopped.returncode == 143, stopped.stderr
    assert "SIGTERM" in stopped.stderr and "Traceback" not in stopped.stderr
    assert not out.exists() and (work_dir_for(out) / "checkpoint.pt").is_file()
    client = MlflowClient(resolve_tracking_uri())
    (killed,) = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    assert killed.info.status == "FAILED"
    resumed = subprocess.run([sys.executable, "-m", "toolkit", *args, "--resume"], env=env, capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["global_step"] == 4
