"""The training recipe on a tiny open_clip model and synthetic batches (CPU, deterministic)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers import REPO, RecordingTracker, run_tiny_training, tiny_train_config
from toolkit.adapters.loading import load_model
from toolkit.adapters.outputs import OutputExistsError
from toolkit.data.batches import CLIC, PLAIN, SyntheticBatchSource
from toolkit.train.checkpoint import ResumeError
from toolkit.train.config import ConfigError
from toolkit.train.recipe import ClicRecipe, TrainConfig, lr_factor, run_training, work_dir_for


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)  # the test machine's cores are shared






def test_vision_frozen_text_trained_output_loadable(tiny_open_clip_spec: str, tmp_path: Path) -> None:
    adapter = load_model(tiny_open_clip_spec)
    vision_before = {n: p.detach().clone() for n, p in adapter.vision_parameters()}
    text_before = {n: p.detach().clone() for n, p in adapter.text_parameters()}
    source = SyntheticBatchSource(16, 4, 32, adapter.tokenize, seed=1)
    tracker = RecordingTracker()
    out = tmp_path / "run"
    provenance = {"base": tiny_open_clip_spec}
    modes: list[tuple[str, bool]] = []  # (tower, module.training) at every forward pass
    adapter.model.visual.register_forward_pre_hook(lambda module, _: modes.append(("image", module.training)))
    adapter.model.transformer.register_forward_pre_hook(lambda module, _: modes.append(("text", module.training)))
    result = run_training(tiny_train_config(log_every=1), adapter, source, out, provenance, tracker)
    # The frozen image tower runs in eval mode (no dropout, fixed norms) while the text tower trains.
    assert {training for tower, training in modes if tower == "image"} == {False}
    assert ("text", True) in modes

    assert result.out_dir == out and result.global_step == 4
    for name, param in adapter.vision_parameters():
        assert torch.equal(param, vision_before[name]), name
    changed = [n for n, p in adapter.text_parameters() if not torch.equal(p, text_before[n])]
    assert "text_projection" in changed and "logit_scale" in changed
    # Steps alternate: 0 and 2 are CLIC steps, 1 and 3 plain CLIP steps.
    assert [sorted(k for k in m if k.startswith("loss/")) for _, m in tracker.metrics] == [
        ["loss/clic"], ["loss/plain"], ["loss/clic"], ["loss/plain"]]
    assert {"clic/cont", "clic/sneg", "clic/uni", "clic/hard_negative_accuracy"} <= set(tracker.metrics[0][1])
    assert "plain/hard_negative_accuracy" not in tracker.metrics[1][1]
    assert tracker.params[0]["base"] == tiny_open_clip_spec

    reloaded = load_model(str(out))
    reloaded_state = reloaded.model.state_dict()
    for name, tensor in adapter.model.state_dict().items():
        assert torch.equal(tensor, reloaded_state[name]), name
    card = json.loads((out / "model.json").read_text())
    assert (card["family"], card["global_step"], card["data"]["source"]) == ("open_clip", 4, "synthetic")
    assert json.loads((out / "train-config.json").read_text())["max_steps"] == 4
    assert not work_dir_for(out).exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".run")]  # no temp folders left behind


def test_frozen_text_parameters_keep_the_base_values(tiny_open_clip_spec: str, tmp_path: Path) -> None:
    adapter = load_model(tiny_open_clip_spec)
    before = {n: p.detach().clone() for n, p in adapter.text_parameters()}
    source = SyntheticBatchSource(16, 4, 32, adapter.tokenize, seed=1)
    run_training(tiny_train_config(frozen_text=["token_embedding", "text_projection"]), adapter, source,
                 tmp_path / "run")
    after = dict(adapter.text_parameters())
    assert torch.equal(after["token_embedding.weight"], before["token_embedding.weight"])
    assert torch.equal(after["text_projection"], before["text_projection"])
    assert not torch.equal(after["ln_final.weight"], before["ln_final.weight"])  # the rest still trains
    with pytest.raises(ConfigError, match="no parameter name starts with"):
        run_training(tiny_train_config(frozen_text=["token_embeding"]), load_model(tiny_open_clip_spec), source,
                     tmp_path / "typo")
    assert not (tmp_path / "typo").exists()


def test_logit_scale_is_clamped_on_the_real_parameter(tiny_open_clip_spec: str, tmp_path: Path) -> None:
    adapter = load_model(tiny_open_clip_spec)
    with torch.no_grad():
        adapter.logit_scale.fill_(math.log(1000.0))
    source = SyntheticBatchSource(8, 4, 32, adapter.tokenize)
    run_training(tiny_train_config(max_steps=1), adapter, source, tmp_path / "run")
    assert adapter.logit_scale.item() == pytest.approx(math.log(100.0))


def test_clic_only_when_alternation_is_off(tiny_open_clip_spec: str, tmp_path: Path) -> None:
    adapter = load_model(tiny_open_clip_spec)
    recipe = ClicRecipe(tiny_train_config(alternate_plain_steps=False), adapter,
                        SyntheticBatchSource(8, 4, 32, adapter.tokenize), tmp_path / "run")
    assert [recipe._kind(s) for s in range(3)] == [CLIC, CLIC, CLIC]
    recipe = ClicRecipe(tiny_train_config(), adapter, SyntheticBatchSource(8, 4, 32, adapter.tokenize), tmp_path)
    assert [recipe._kind(s) for s in range(3)] == [CLIC, PLAIN, CLIC]


def test_lr_schedule_warmup_then_cosine() -> None:
    # 10 steps, 2 warm-up: 1/2, 2/2 of the peak, then cosine from the peak to min_lr at the end.
    factors = [lr_factor(s, 2, 10, 1e-6, 1e-8) for s in range(11)]
    assert factors[0] == pytest.approx(0.5) and factors[1] == pytest.approx(1.0)
    assert factors[2] == pytest.approx(1.0)
    assert factors[6] == pytest.approx((1e-8 + (1e-6 - 1e-8) * 0.5) / 1e-6)  # half-way: cos(pi/2) = 0
    assert factors[10] == pytest.approx(0.01)


def test_weight_decay_groups(tiny_open_clip_spec: str, tmp_path: Path) -> None:
    adapter = load_model(tiny_open_clip_spec)
    source = SyntheticBatchSource(8, 4, 32, adapter.tokenize)
    recipe = ClicRecipe(tiny_train_config(), adapter, source, tmp_path / "r")
    recipe.setup()
    decay, no_decay = recipe.optimizer.param_groups
    names = {id(p): n for n, p in adapter.model.named_parameters()}
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert {names[id(p)] for p in no_decay["params"]} >= {"logit_scale", "ln_final.weight", "ln_final.bias"}
    assert all(p.ndim >= 2 for p in decay["params"])
    assert not any(names[id(p)].startswith("visual.") for g in (decay, no_decay) for p in g["params"])
    assert recipe.optimizer.defaults["betas"] == (0.9, 0.98) and recipe.optimizer.defaults["eps"] == 1e-8




def test_resume_after_sigkill_equals_uninterrupted_run(tiny_open_clip_spec: str, tmp_path: Path) -> None:
    whole = run_tiny_training(tiny_open_clip_spec, tmp_path / "whole")
    assert whole.returncode == 0, whole.stderr

    killed = run_tiny_training(tiny_open_clip_spec, tmp_path / "split", "--kill-after-step", "3")
    assert killed.returncode == -9, killed.stderr
    assert not (tmp_path / "split").exists()  # no half-written output
    assert (work_dir_for(tmp_path / "split") / "checkpoint.pt").is_file()  # the step-2 checkpoint

    fresh_again = run_tiny_training(tiny_open_clip_spec, tmp_path / "split")
    assert fresh_again.returncode != 0 and "--resume" in fresh_again.stderr

    resumed = run_tiny_training(tiny_open_clip_spec, tmp_path / "split", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    expected = load_model(str(tmp_path / "whole")).model.state_dict()
    for name, tensor in load_model(str(tmp_path / "split")).model.state_dict().items():
        assert torch.equal(tensor, expected[name]), name


def test_resume_refuses_a_different_config(tiny_open_clip_spec: str, tmp_path: Path) -> None:
    adapter = load_model(tiny_open_clip_spec)
    out = tmp_path / "run"
    recipe = ClicRecipe(tiny_train_config(), adapter, SyntheticBatchSource(16, 4, 32, adapter.tokenize), out)
    recipe.setup()
    recipe._save_checkpoint()
    other = ClicRecipe(tiny_train_config(lr=2e-3), load_model(tiny_open_clip_spec),
                       SyntheticBatchSource(16, 4, 32, adapter.tokenize), out, resume=True)
    with pytest.raises(ResumeError, match="config_fingerprint"):
        other.setup()


def test_existing_output_is_never_overwritten(tiny_open_clip_spec: str, tmp_path: Path) -> None:
    out = tmp_path / "run"
    out.mkdir()
    adapter = load_model(tiny_open_clip_spec)
    with pytest.raises(OutputExistsError, match="already exists"):
        run_training(tiny_train_config(), adapter, SyntheticBatchSource(8, 4, 32, adapter.tokenize), out)


@pytest.mark.parametrize("damage", ["missing", "corrupt"])
def test_bad_weights_fail_clearly_and_leave_no_output(tiny_open_clip_spec: str, tmp_path: Path,
                                                     damage: str) -> None:
    weights = Path(tiny_open_clip_spec.rpartition("@")[2])
    if damage == "missing":
        weights.unlink()
    else:
        weights.write_bytes(b"not a safetensors file at all")
    out = tmp_path / "out" / "run"
    result = _cli("train", "--base", tiny_open_clip_spec, "--snapshot", "latest", "--out", str(out),
                  "--db", f"sqlite:///{tmp_path / 'catalog.db'}")
    assert result.returncode == 3, result.stderr
    assert str(weights) in result.stderr
    assert not out.exists() and not work_dir_for(out).exists() and not (tmp_path / "catalog.db").exists()


def test_config_file_and_overrides(tmp_path: Path) -> None:
    path = tmp_path / "train.toml"
    path.write_text('lr = 2e-6\nbatch_size = 8\n[loss]\nuni = 0.0\nuse_sneg = false\n', encoding="utf-8")
    config = TrainConfig.from_file(path).with_overrides(batch_size=16, max_steps=None)
    assert (config.lr, config.batch_size, config.loss.uni, config.loss.use_sneg) == (2e-6, 16, 0.0, False)
    assert config.betas == (0.9, 0.98) and config.warmup_epoch_fraction == 0.2
    path.write_text('{"lr": 1e-6, "learning_rate": 3}', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"unknown setting.*learning_rate"):
        TrainConfig.from_file(path.rename(tmp_path / "train.json"))


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "COLUMNS": "500"}
    return subprocess.run([sys.executable, "-m", "toolkit", *args], env=env, capture_output=True, text=True,
                          timeout=300)


def test_gradient_accumulation_steps_and_kinds(tiny_open_clip_spec: str, tmp_path: Path) -> None:
    # 16 samples / batch 4 = 4 micro-batches per epoch; 2 per step -> 2 optimizer steps: CLIC, then plain.
    adapter = load_model(tiny_open_clip_spec)
    tracker = RecordingTracker()
    source = SyntheticBatchSource(16, 4, 32, adapter.tokenize)
    result = run_training(tiny_train_config(max_steps=None, grad_accum=2, log_every=1), adapter, source,
                          tmp_path / "run", tracker=tracker)
    assert result.global_step == 2
    assert [(step, sorted(k for k in m if k.startswith("loss/"))) for step, m in tracker.metrics] == [
        (1, ["loss/clic"]), (2, ["loss/plain"])]


def test_every_kind_is_logged_when_log_every_falls_on_one_kind(tiny_open_clip_spec: str, tmp_path: Path) -> None:
    # Kinds alternate and log_every is even: each logging step also logs the other kind's latest step, at
    # its own step number (alone, the logging steps would all be plain ones and MLflow would show no CLIC loss).
    adapter = load_model(tiny_open_clip_spec)
    tracker = RecordingTracker()
    run_training(tiny_train_config(max_steps=6, log_every=4), adapter,
                 SyntheticBatchSource(32, 4, 32, adapter.tokenize), tmp_path / "run", tracker=tracker)
    assert [(step, sorted(k for k in m if k.startswith("loss/"))) for step, m in tracker.metrics] == [
        (3, ["loss/clic"]), (4, ["loss/plain"]), (5, ["loss/clic"]), (6, ["loss/plain"])]


def test_torch_weight_files_are_read_safely_and_mismatches_listed(tiny_open_clip_spec: str, tmp_path: Path) -> None:
    from toolkit.adapters.base import ModelLoadError
    from toolkit.adapters.open_clip_adapter import OpenClipAdapter

    config = tiny_open_clip_spec.removeprefix("open_clip:").rpartition("@")[0]
    state = load_model(tiny_open_clip_spec).model.state_dict()
    as_pt = tmp_path / "weights.pt"
    torch.save({"state_dict": state}, as_pt)  # a training checkpoint's layout loads too
    assert torch.equal(OpenClipAdapter.create(config, str(as_pt)).model.text_projection, state["text_projection"])

    class Payload:  # any pickled object could run code on load: weights_only refuses it
        def __reduce__(self):  # type: ignore[no-untyped-def]
            return (print, ("pickled code ran",))
    pickled = tmp_path / "pickled.pt"
    torch.save({"text_projection": Payload()}, pickled)
    with pytest.raises(ModelLoadError, match="weights_only=True"):
        OpenClipAdapter.create(config, str(pickled))

    bad = {k: v for k, v in state.items() if k != "ln_final.bias"}
    bad["text_projection"] = torch.zeros(3, 3)
    bad["extra.weight"] = torch.zeros(1)
    torch.save(bad, tmp_path / "bad.pt")
    with pytest.raises(ModelLoadError, match=r"missing keys \[ln_final\.bias\].*unexpected keys \[extra\.weight\]"
                                             r".*wrong shapes \[text_projection \(3, 3\) != \(64, 32\)\]"):
        OpenClipAdapter.create(config, str(tmp_path / "bad.pt"))

