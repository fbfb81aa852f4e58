"""WiSE-FT interpolation between a base model and its fine-tune, and the `toolkit interpolate` verb."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers import REPO
from toolkit.adapters.loading import load_model
from toolkit.adapters.open_clip_adapter import OpenClipAdapter
from toolkit.train.interpolate import InterpolationError, interpolate, save_interpolated


@pytest.fixture
def tuned_folder(tiny_open_clip_spec: str, tmp_path: Path) -> Path:
    """A 'fine-tune': text projection +1 and logit_scale +0.5, image tower untouched, saved like a run."""
    tuned = load_model(tiny_open_clip_spec)
    with torch.no_grad():
        tuned.model.text_projection.add_(1.0)
        tuned.logit_scale.add_(0.5)
    save_interpolated(tuned, tmp_path / "tuned", tiny_open_clip_spec, tiny_open_clip_spec, 1.0)
    return tmp_path / "tuned"


def test_text_blended_vision_kept(tiny_open_clip_spec: str, tuned_folder: Path) -> None:
    base, tuned = load_model(tiny_open_clip_spec), load_model(str(tuned_folder))
    blended = interpolate(base, tuned, 0.25)
    assert torch.allclose(blended.model.text_projection, base.model.text_projection + 0.25)
    assert blended.logit_scale.item() == pytest.approx(base.logit_scale.item() + 0.125, abs=1e-6)
    assert torch.equal(blended.model.visual.proj, base.model.visual.proj)
    # Neither input is modified.
    assert torch.allclose(tuned.model.text_projection, base.model.text_projection + 1.0)
    assert torch.equal(interpolate(base, tuned, 0.0).model.text_projection, base.model.text_projection)


def test_refuses_different_image_towers(tiny_open_clip_spec: str, tuned_folder: Path) -> None:
    base, tuned = load_model(tiny_open_clip_spec), load_model(str(tuned_folder))
    with torch.no_grad():
        tuned.model.visual.proj.add_(1e-3)
    with pytest.raises(InterpolationError, match=r"image-tower tensor visual\.proj differs"):
        interpolate(base, tuned, 0.5)
    with pytest.raises(InterpolationError, match=r"alpha must be in \[0, 1\]"):
        interpolate(base, tuned, 1.5)


def test_refuses_different_architectures(tuned_folder: Path, tmp_path: Path) -> None:
    config = {"embed_dim": 32, "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 8},
              "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1}}
    (tmp_path / "other.json").write_text(json.dumps(config), encoding="utf-8")
    other = OpenClipAdapter.create(str(tmp_path / "other.json"), None)
    with pytest.raises(InterpolationError, match="different tensors"):
        interpolate(other, load_model(str(tuned_folder)), 0.5)


def test_cli_writes_loadable_folder(tiny_open_clip_spec: str, tuned_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "blend"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "COLUMNS": "500"}
    done = subprocess.run([sys.executable, "-m", "toolkit", "interpolate", "--base", tiny_open_clip_spec,
                           "--tuned", str(tuned_folder), "--alpha", "0.5", "--out", str(out)],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    for alpha in ("1.5", "nan"):  # a bad option value, refused before any model loads
        refused = subprocess.run([sys.executable, "-m", "toolkit", "interpolate", "--base", "nowhere", "--tuned",
                                  "nowhere", "--alpha", alpha, "--out", str(tmp_path / "x")],
                                 env=env, capture_output=True, text=True, timeout=300)
        assert refused.returncode == 2 and "is not in [0, 1]" in refused.stderr, refused.stderr
    card = json.loads((out / "model.json").read_text())
    assert (card["kind"], card["alpha"], card["family"]) == ("wise-ft", 0.5, "open_clip")
    base = load_model(tiny_open_clip_spec)
    assert torch.allclose(load_model(str(out)).model.text_projection, base.model.text_projection + 0.5)
    again = subprocess.run([sys.executable, "-m", "toolkit", "interpolate", "--base", tiny_open_clip_spec,
                            "--tuned", str(tuned_folder), "--alpha", "0.5", "--out", str(out)],
                           env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 3 and "already exists" in again.stderr


def test_a_saved_model_card_is_checked_before_anything_loads(tuned_folder: Path, tmp_path: Path) -> None:
    import shutil

    from toolkit.adapters.base import ModelLoadError
    from toolkit.adapters.outputs import weights_sha256

    card = json.loads((tuned_folder / "model.json").read_text(encoding="utf-8"))
    shutil.copy(tuned_folder / card["weights"], tmp_path / "elsewhere.safetensors")
    edits = {
        r"'weights' must name a file in": {**card, "weights": "../elsewhere.safetensors"},
        r"'weights' must name a file in .*got None": {k: v for k, v in card.items() if k != "weights"},
        r"needs 'name' \(text\) and 'config' \(an object\)": {k: v for k, v in card.items() if k != "config"},
        r"its 'config' does not build a model": {**card, "config": {"embed_dim": "wide"}},
    }
    for n, (message, edited) in enumerate(edits.items()):
        folder = tmp_path / f"m{n}"
        shutil.copytree(tuned_folder, folder)
        (folder / "model.json").write_text(json.dumps(edited), encoding="utf-8")
        with pytest.raises(ModelLoadError, match=message):
            load_model(str(folder))
        if "weights" in message:  # the base-weights hash reads the same file name, by the same rule
            with pytest.raises(ModelLoadError, match=message):
                weights_sha256(str(folder))
    linked = tmp_path / "linked"
    shutil.copytree(tuned_folder, linked)
    (linked / card["weights"]).unlink()
    (linked / card["weights"]).symlink_to(tmp_path / "elsewhere.safetensors")
    with pytest.raises(ModelLoadError, match="is a symlink"):
        load_model(str(linked))
