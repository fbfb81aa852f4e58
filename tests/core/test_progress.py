"""Progress off a terminal: plain lines at least once a minute (a fake clock, nothing timed), from train,
ingest, data prepare and eval."""

from __future__ import annotations

import io
import json
import re

import numpy as np
from PIL import Image as PILImage

from tests.helpers import run_toolkit, snapshot_train_catalog, write_sugarcrepe_pp
from toolkit.core.progress import ProgressLines, format_duration


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_lines_at_least_once_a_minute_with_rate_and_eta():
    clock, out = FakeClock(), io.StringIO()
    lines = ProgressLines("step", 400, unit="steps", stream=out, clock=clock)
    printed_at = []
    for step in range(1, 401):
        clock.now += 7.0  # a slow step: 400 of them take 47 minutes
        before = out.getvalue().count("\n")
        lines.update(step, loss=0.5)
        if out.getvalue().count("\n") > before:
            printed_at.append(clock.now)
    text = out.getvalue().splitlines()
    gaps = np.diff([1000.0, *printed_at])
    assert gaps.max() <= 60 and len(text) < 400 / 3  # a line a minute at least, not one per step
    assert text[0].startswith("step 1/400 (0%) · loss 0.5 · 0.1 steps/s · ETA 0:46:33")
    assert text[-1].startswith("step 400/400 (100%)")  # the last step always prints


def test_durations_read_as_hours_minutes_seconds():
    assert [format_duration(s) for s in (0, 59.6, 3600 + 62)] == ["0:00:00", "0:01:00", "1:01:02"]


def test_train_writes_progress_lines_to_a_log(tiny_open_clip_spec, tmp_path, capsys):
    import torch

    from toolkit.adapters.loading import load_model
    from toolkit.data.batches import SyntheticBatchSource
    from toolkit.train.recipe import TrainConfig, run_training

    torch.manual_seed(0)
    adapter = load_model(tiny_open_clip_spec)
    source = SyntheticBatchSource(12, 4, adapter.image_norm.size, adapter.tokenize, seed=3)
    config = TrainConfig(batch_size=4, max_steps=3, lr=1e-3, min_lr=1e-5, checkpoint_every=10, seed=7)
    run_training(config, adapter, source, tmp_path / "run")
    lines = capsys.readouterr().err.splitlines()  # pytest's stderr is not a terminal
    assert any(re.match(r"step 1/3 \(33%\) · loss [-\d.e]+ · lr [-\d.e]+ · samples_per_s [\d.]+ · ", line)
               for line in lines), lines
    assert any(line.startswith("step 3/3 (100%)") for line in lines), lines


def test_ingest_writes_progress_lines_to_a_log(tmp_path, monkeypatch):
    monkeypatch.setenv("TOOLKIT_WORKSPACE", str(tmp_path / "ws"))
    PILImage.fromarray(np.full((40, 40, 3), 90, np.uint8)).save(tmp_path / "a.png")
    (tmp_path / "m.jsonl").write_text(json.dumps({"image": "a.png", "caption": "A grey square."}) + "\n")
    result = run_toolkit(["ingest", tmp_path / "m.jsonl", "--db", f"sqlite:///{tmp_path / 'c.db'}",
                          "--workers", "1", "--json"])
    assert result.exit_code == 0, result.output
    assert re.search(r"^ingest rows 1 · images 1 · captions 1 · rejected 0 · ", result.stderr, re.M), result.stderr


def test_prepare_writes_progress_lines_to_a_log(tmp_path, monkeypatch):
    monkeypatch.setenv("TOOLKIT_WORKSPACE", str(tmp_path / "ws"))
    (tmp_path / "images").mkdir()
    url = f"sqlite:///{tmp_path / 'c.db'}"
    snapshot_train_catalog(url, tmp_path / "images")
    result = run_toolkit(["data", "prepare", "--size", "32", "--db", url, "--json"])
    assert result.exit_code == 0, result.output
    assert re.search(r"^tiles 4/4 \(100%\) · [\d.]+ images/s · ", result.stderr, re.M), result.stderr


def test_eval_writes_progress_lines_to_a_log(tiny_open_clip_spec, tmp_path):
    first, second = write_sugarcrepe_pp(tmp_path / "a"), write_sugarcrepe_pp(tmp_path / "b")
    result = run_toolkit(["eval", "--model", tiny_open_clip_spec, "--benchmark", f"sugarcrepe_pp:{first}",
                          "--benchmark", f"sugarcrepe_pp:{second}", "--no-track", "--json"])
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    assert any(line.startswith(f"eval 0/2 (0%) · at loading sugarcrepe_pp:{first}") for line in lines), lines
    evaluating = [line for line in lines if f" · at evaluating {tiny_open_clip_spec}: " in line]
    # the count moves when a step is done, whatever the status messages say
    assert [line.split(" · ")[0] for line in evaluating] == ["eval 0/2 (0%)", "eval 1/2 (50%)"], lines
    assert all(": sugarcrepe_pp" in line for line in evaluating), lines
    assert lines[-1].startswith("eval 2/2 (100%) · at done · "), lines
