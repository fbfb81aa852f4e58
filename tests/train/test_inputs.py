"""Bad training inputs are refused by name before (or instead of) a wrong or NaN model: resume state,
checkpoints, config values, option values, output folders, changed image files, non-finite losses."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers import REPO, run_toolkit, tiny_train_config
from toolkit.adapters.loading import load_model
from toolkit.data.batches import SyntheticBatchSource
from toolkit.train.checkpoint import CHECKPOINT_FILE, ResumeError
from toolkit.train.recipe import ClicRecipe, TrainConfig, work_dir_for


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)  # the test machine's cores are shared


def _recipe(spec: str, out: Path, resume: bool = False, base_sha: str = "a" * 64,
            config: TrainConfig | None = None) -> ClicRecipe:
    adapter = load_model(spec)
    return ClicRecipe(config or tiny_train_config(), adapter, SyntheticBatchSource(16, 4, 32, adapter.tokenize), out,
                      provenance={"base": spec, "base_weights_sha256": base_sha}, resume=resume)


def _saved_checkpoint(spec: str, out: Path) -> tuple[Path, dict]:  # type: ignore[type-arg]
    """A run set up and checkpointed at step 0: the checkpoint's path and its payload, to damage."""
    first = _recipe(spec, out)
    first.setup()
    first._save_checkpoint()
    path = work_dir_for(out) / CHECKPOINT_FILE
    return path, torch.load(path, weights_only=True)


def _cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "COLUMNS": "500"}
    return subprocess.run([sys.executable, "-m", "toolkit", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


# ---- resume state and checkpoints -----------------------------------------------------------------------
def test_resume_refuses_another_base(tiny_open_clip_spec: str, tmp_path: Path) -> None:
    out = tmp_path / "run"
    first = _recipe(tiny_open_clip_spec, out)
    first.setup()
    first._save_checkpoint()
    with pytest.raises(ResumeError, match=r"base_weights_sha256: checkpoint has 'a{64}', this run has 'b{64}'"):
        _recipe(tiny_open_clip_spec, out, resume=True, base_sha="b" * 64).setup()
    _recipe(tiny_open_clip_spec, out, resume=True).setup()  # the same base resumes


@pytest.mark.parametrize("damage", ["empty_dict", "not_a_dict", "extra_resume_field", "missing_resume_field",
                                    "missing_weight", "resume_not_a_dict"])
def test_checkpoints_of_the_wrong_structure_are_refused_by_name(tiny_open_clip_spec: str, tmp_path: Path,
                                                                damage: str) -> None:
    out = tmp_path / "run"
    path, payload = _saved_checkpoint(tiny_open_clip_spec, out)
    if damage == "empty_dict":
        payload = {}
    elif damage == "not_a_dict":
        payload = [1, 2]
    elif damage == "extra_resume_field":
        payload["resume"]["extra"] = 1
    elif damage == "missing_resume_field":
        del payload["resume"]["seed"]
    elif damage == "missing_weight":
        payload["trainable"].pop(next(iter(payload["trainable"])))
    else:
        payload["resume"] = "resume"
    torch.save(payload, path)
    with pytest.raises(ResumeError, match=str(path)):
        _recipe(tiny_open_clip_spec, out, resume=True).setup()


def test_a_checkpoint_without_the_base_hash_is_refused_not_trusted(tiny_open_clip_spec: str,
                                                                   tmp_path: Path) -> None:
    out = tmp_path / "run"
    path, payload = _saved_checkpoint(tiny_open_clip_spec, out)
    del payload["resume"]["base_weights_sha256"]  # as an older toolkit wrote it
    torch.save(payload, path)
    with pytest.raises(ResumeError, match=r"missing \['base_weights_sha256'\]"):
        _recipe(tiny_open_clip_spec, out, resume=True).setup()


# ---- config values -------------------------------------------------------------------------------------
@pytest.mark.parametrize("setting,message", [
    ("lr = inf", "lr must be a finite number, got inf"),
    ("lr = nan", "lr must be a finite number, got nan"),
    ("min_lr = -inf", "min_lr must be a finite number"),
    ("weight_decay = nan", "weight_decay must be a finite number, got nan"),
    ("weight_decay = -0.1", "weight_decay must be >= 0"),
    ("anchor_weight = inf", "anchor_weight must be a finite number, got inf"),
    ("eps = -1.0", "eps must be > 0, got -1.0"),
    ("eps = nan", "eps must be a finite number"),
    ("eps = 0", "eps must be > 0"),
    ("max_logit_scale = inf", "max_logit_scale must be a finite number"),
    ("warmup_epoch_fraction = nan", "warmup_epoch_fraction must be a finite number"),
    ("betas = [0.9]", "betas must be two numbers in [0, 1)"),
    ('betas = ["a", "b"]', "betas must be two numbers in [0, 1)"),
    ("betas = [0.9, 1.0]", "betas must be two numbers in [0, 1)"),
    ("betas = [0.9, nan]", "betas must be two numbers in [0, 1)"),
    ("log_every = 0", "log_every must be >= 1"),
    ('max_steps = "2"', "max_steps must be a whole number of steps (or absent), got '2'"),
    ("max_steps = true", "max_steps must be a whole number of steps (or absent), got True"),
    ("max_steps = 1.5", "max_steps must be a whole number of steps (or absent), got 1.5"),
    ("epochs = true", "epochs must be an integer, got True"),
    ("batch_size = 1", "batch_size must be >= 2"),
    ("num_workers = -1", "num_workers must be >= 0"),
    ('generators = ["bogus"]', "generators: unknown ['bogus']"),
    ("generators = []", "generators must name at least one generator"),
    ('frozen_text = [""]', "frozen_text must be a list of non-empty strings"),
    ("[loss]\nuni = inf", "loss weights must be finite numbers >= 0"),
    ("[lora]\nalpha = nan", "lora.alpha must be a finite number > 0, got nan"),
    ("mix_generators = 1", "mix_generators must be true or false, got 1"),
    ('generators = ["swap_within", "replace"]\ngenerator_weights = [2, 1]',
     "generator weights set how often each generator leads a mixed order; they need mix_generators = true"),
    ('generators = ["swap_within", "replace"]\nmix_generators = true\ngenerator_weights = [2]',
     "generator weights: 1 given for 2 generators ['swap_within', 'replace']"),
    ('generators = ["swap_within", "replace"]\nmix_generators = true\ngenerator_weights = [2, 0]',
     "generator weights must be finite numbers > 0, got [2, 0]"),
    ('generators = ["swap_within", "replace"]\nmix_generators = true\ngenerator_weights = [2, nan]',
     "generator_weights must be a list of numbers"),
    ('generators = ["swap_within", "replace"]\nmix_generators = true\ngenerator_weights = ["2", 1]',
     "generator_weights must be a list of numbers, got ('2', 1)"),
    ("[lora]\nrank = -1", "lora.rank must be an integer >= 0"),
    ("[lora]\nrank = true", "lora.rank must be an integer >= 0"),
    ("[lora]\ndropout = 1.0", "lora.dropout must be a number in [0, 1)"),
    ("[lora]\ndropout = -0.5", "lora.dropout must be a number in [0, 1)"),
    ('[lora]\ntarget_suffixes = [""]', "lora.target_suffixes must be a list of non-empty strings"),
])
def test_bad_config_values_are_refused_naming_the_key(tmp_path: Path, setting: str, message: str) -> None:
    from toolkit.train.config import ConfigError

    path = tmp_path / "train.toml"
    path.write_text(setting + "\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=f"^{path}.*" + re.escape(message)):
        TrainConfig.from_file(path)


def test_json_infinities_and_huge_integers_are_refused(tmp_path: Path) -> None:
    from toolkit.train.config import ConfigError

    path = tmp_path / "train.json"
    path.write_text('{"lr": Infinity}', encoding="utf-8")  # Python's json reads it
    with pytest.raises(ConfigError, match="lr must be a finite number"):
        TrainConfig.from_file(path)
    path.write_text('{"lr": 1' + "0" * 400 + "}", encoding="utf-8")
    with pytest.raises(ConfigError, match="lr is too large"):
        TrainConfig.from_file(path)


def test_bad_config_files_exit_3_naming_the_key_without_a_traceback(tmp_path: Path) -> None:
    cases = {"nonutf8.toml": (b"lr = 1e-6\n# \xff\n", "is not UTF-8"),
             "inf.toml": (b"lr = inf\n", "lr must be a finite number"),
             "steps.toml": (b'max_steps = "2"\n', "max_steps must be a whole number"),
             "gen.toml": (b'generators = ["bogus"]\n', "generators: unknown"),
             "x.yaml": (b"lr: 1\n", "must end in .json or .toml")}
    for name, (content, message) in cases.items():
        (tmp_path / name).write_bytes(content)
        result = run_toolkit(["train", "--base", "open_clip:nowhere.json@nowhere.safetensors",
                                          "--out", str(tmp_path / "out"), "--config", str(tmp_path / name)])
        assert result.exit_code == 3, (name, result.output)
        assert message in result.output.replace("\n", "") and name in result.output.replace("\n", "")
        assert result.exception is None or isinstance(result.exception, SystemExit)


def test_grad_accum_beyond_the_epoch_and_unknown_names_are_config_errors(tiny_open_clip_spec: str,
                                                                        tmp_path: Path) -> None:
    from toolkit.train.config import ConfigError

    # 16 samples / batch 4 = 4 batches: grad_accum 8 cannot make one optimizer step.
    with pytest.raises(ConfigError, match=r"grad_accum = 8 .* only 4 batches of 4"):
        _recipe(tiny_open_clip_spec, tmp_path / "a", config=tiny_train_config(grad_accum=8)).setup()
    with pytest.raises(ConfigError, match="frozen_text: no parameter name starts with"):
        _recipe(tiny_open_clip_spec, tmp_path / "b", config=tiny_train_config(frozen_text=["token_embeding"])).setup()
    pytest.importorskip("peft")
    with pytest.raises(ConfigError, match=r"lora.target_suffixes: no text-tower Linear layer ends with \['nope'\]"):
        _recipe(tiny_open_clip_spec, tmp_path / "c",
                config=tiny_train_config(lora={"rank": 2, "target_suffixes": ["nope"]})).setup()


# ---- option values -------------------------------------------------------------------------------------
@pytest.mark.parametrize("option,value", [("--max-steps", "-1"), ("--max-steps", "0"), ("--batch-size", "0"),
                                          ("--batch-size", "1"), ("--tiles", "bogus"), ("--device", "tpu")])
def test_out_of_range_options_are_bad_options_named(tmp_path: Path, option: str, value: str) -> None:
    result = run_toolkit(["train", "--base", "open_clip:nowhere.json@nowhere.safetensors",
                                      "--out", str(tmp_path / "out"), option, value])
    assert result.exit_code == 2, result.output
    assert option in result.output and "overrides" not in result.output


# ---- output folder -------------------------------------------------------------------------------------
def test_an_out_folder_that_cannot_be_made_is_refused_before_the_model_loads(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("not a folder")
    # The base does not exist either: the --out check must come first, before any model is loaded.
    result = run_toolkit(["train", "--base", "open_clip:nowhere.json@nowhere.safetensors",
                                      "--out", str(tmp_path / "afile" / "sub" / "run")])
    assert result.exit_code == 3, result.output
    assert f"{tmp_path / 'afile'} is a file, not a folder" in result.output.replace("\n", "")


# ---- non-finite loss -----------------------------------------------------------------------------------
class PoisonAtStep:
    """A tracker that puts NaN into the text projection when step N is logged (after that step's update)."""

    def __init__(self, recipe_out: Path, adapter: object, step: int) -> None:
        self.adapter, self.step, self.checkpoint = adapter, step, work_dir_for(recipe_out) / CHECKPOINT_FILE
        self.checkpoint_bytes = b""

    def log_params(self, params: dict[str, object]) -> None:
        pass

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        if step == self.step:
            self.checkpoint_bytes = self.checkpoint.read_bytes()
            with torch.no_grad():
                self.adapter.model.text_projection.fill_(math.nan)  # type: ignore[attr-defined]

    def log_artifact(self, path: str) -> None:
        pass


def test_a_non_finite_loss_stops_before_the_step_and_keeps_the_checkpoint(tiny_open_clip_spec: str,
                                                                          tmp_path: Path) -> None:
    from toolkit.train.checkpoint import load_checkpoint
    from toolkit.train.recipe import TrainingDivergedError, run_training

    adapter = load_model(tiny_open_clip_spec)
    out = tmp_path / "run"
    tracker = PoisonAtStep(out, adapter, step=3)
    config = tiny_train_config(max_steps=6, checkpoint_every=2, log_every=1)
    with pytest.raises(TrainingDivergedError, match=r"optimizer step 4 .*loss is not finite.*checkpoint .*step 2"):
        run_training(config, adapter, SyntheticBatchSource(32, 4, 32, adapter.tokenize), out, tracker=tracker)
    checkpoint = work_dir_for(out) / CHECKPOINT_FILE
    assert checkpoint.read_bytes() == tracker.checkpoint_bytes  # the step-2 checkpoint, untouched
    assert load_checkpoint(checkpoint)["resume"]["global_step"] == 2
    assert not out.exists()


def test_mix_generators_reaches_the_samples() -> None:
    from toolkit.train.job import sample_config

    mixed = TrainConfig.from_dict({"generators": ["swap_within", "replace"], "mix_generators": True})
    assert sample_config(mixed).mix_generators is True
    assert sample_config(TrainConfig.from_dict({})).mix_generators is False


def test_generator_weights_reach_the_samples_and_only_weighted_runs_get_a_new_fingerprint() -> None:
    from toolkit.train.job import sample_config

    mixed = {"generators": ["swap_within", "replace"], "mix_generators": True}
    weighted = TrainConfig.from_dict({**mixed, "generator_weights": [3, 1]})
    assert sample_config(weighted).generator_weights == (3, 1)
    assert sample_config(TrainConfig.from_dict(mixed)).generator_weights == ()
    # Pinned from the code before the setting existed (5f67c83): unweighted runs keep their fingerprints,
    # so their checkpoints still resume.
    assert TrainConfig().fingerprint() == "5b2fabd3b0cfa2c2"
    assert TrainConfig.from_dict(mixed).fingerprint() == "5cf7dc2c38557d95"
    assert weighted.fingerprint() not in ("5cf7dc2c38557d95",
                                          TrainConfig.from_dict({**mixed, "generator_weights": [1, 3]}).fingerprint())
