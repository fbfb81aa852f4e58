"""Faults around training's files: an --out that is a dangling symlink, a disk that fills up mid-checkpoint."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers import REPO, snapshot_train_catalog
from toolkit.core.errors import ToolkitError
from toolkit.train.checkpoint import CHECKPOINT_FILE, load_checkpoint, save_checkpoint


def test_dangling_symlink_out_is_refused_before_any_step(tiny_open_clip_spec: str, tmp_path: Path) -> None:
    """On main this trained to the end, then os.replace onto the link failed and the model was discarded."""
    (tmp_path / "images").mkdir()
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    snapshot_train_catalog(url, tmp_path / "images")
    out = tmp_path / "runs" / "link"
    out.parent.mkdir()
    out.symlink_to(tmp_path / "nowhere")
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "COLUMNS": "500"}
    done = subprocess.run([sys.executable, "-m", "toolkit", "train", "--base", tiny_open_clip_spec,
                           "--out", str(out), "--db", url, "--max-steps", "1", "--batch-size", "2",
                           "--no-track"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 3, done.stderr
    assert "symbolic link" in done.stderr and "Traceback" not in done.stderr
    assert "step 1" not in done.stderr  # refused before training
    assert sorted(p.name for p in out.parent.iterdir()) == ["link"]  # no .partial, no temp folder


def test_disk_full_while_checkpointing_keeps_the_last_checkpoint(full_disk: Path) -> None:
    path = full_disk / CHECKPOINT_FILE
    small = {"trainable": {"w": torch.zeros(4)}, "optimizer": {}, "scheduler": {}, "rng": [], "resume": {}}
    save_checkpoint(path, small)
    big = {**small, "trainable": {"w": torch.zeros(2 * 1024 * 1024 // 4)}}  # 2 MiB on a 1 MiB disk
    with pytest.raises(ToolkitError) as caught:
        save_checkpoint(path, big)
    assert "no space left" in str(caught.value).lower() and str(path) in str(caught.value)
    assert sorted(p.name for p in full_disk.iterdir()) == [CHECKPOINT_FILE]  # no .tmp left behind
    assert torch.equal(load_checkpoint(path)["trainable"]["w"], torch.zeros(4))  # the last one intact
