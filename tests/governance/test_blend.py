"""The WiSE-FT blend chosen on validation items, as a library function and `toolkit interpolate --choose-on`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.helpers import run_toolkit, write_sugarcrepe, write_zeroshot
from toolkit.adapters.loading import load_model
from toolkit.train.interpolate import save_interpolated


@pytest.fixture
def tuned_folder(tiny_open_clip_spec: str, tmp_path: Path) -> Path:
    """A 'fine-tune' (text projection moved, image tower untouched) saved like a run."""
    tuned = load_model(tiny_open_clip_spec)
    with torch.no_grad():
        tuned.model.text_projection.add_(1.0)
    save_interpolated(tuned, tmp_path / "tuned", tiny_open_clip_spec, tiny_open_clip_spec, 1.0)
    return tmp_path / "tuned"


def test_choose_on_validation_from_the_command_line(tiny_open_clip_spec: str, tuned_folder: Path,
                                                     tmp_path: Path) -> None:
    from toolkit.governance.gates import choose_blend

    specs = [f"sugarcrepe:{write_sugarcrepe(tmp_path / 'sc')}", f"zeroshot:{write_zeroshot(tmp_path / 'zs')}"]
    out = tmp_path / "blends"
    result = run_toolkit(["interpolate", "--base", tiny_open_clip_spec, "--tuned", tuned_folder, "--out", out,
                          "--choose-on", specs[0], "--choose-on", specs[1], "--alphas", "0,0.5,1",
                          "--confidence-z", "0"])
    assert result.exit_code == 0, result.output
    chosen = json.loads(result.stdout)
    assert chosen["blends"] == {"0": str(out / "wise0"), "0.5": str(out / "wise0.5"), "1": str(tuned_folder)}
    assert all((Path(folder) / "model.json").is_file() for folder in chosen["blends"].values())
    validation = chosen["validation"]
    assert set(validation) == {"base", "0", "0.5", "1"}
    assert validation["0"] == pytest.approx(validation["base"])  # alpha 0 is the base text tower again
    blends = {float(alpha): metrics for alpha, metrics in validation.items() if alpha != "base"}
    assert chosen["alpha"] == choose_blend(validation["base"], blends)  # z = 0: no standard errors needed
    assert chosen["model"] == (None if chosen["alpha"] is None else chosen["blends"][f"{chosen['alpha']:g}"])


def test_interpolate_needs_exactly_one_way_to_pick_alpha(tiny_open_clip_spec: str, tmp_path: Path) -> None:
    neither = run_toolkit(["interpolate", "--base", "nowhere", "--tuned", "nowhere", "--out", tmp_path / "x"])
    assert neither.exit_code == 2 and "--choose-on" in neither.output
    no_alphas = run_toolkit(["interpolate", "--base", "nowhere", "--tuned", "nowhere", "--out", tmp_path / "x",
                             "--choose-on", "zeroshot:/nowhere.json"])
    assert no_alphas.exit_code == 2 and "--alphas" in no_alphas.output
    bad = run_toolkit(["interpolate", "--base", "nowhere", "--tuned", "nowhere", "--out", tmp_path / "x",
                       "--choose-on", "zeroshot:/nowhere.json", "--alphas", "0.5,1.5"])
    assert bad.exit_code == 2 and "[0, 1]" in bad.output
    assert not (tmp_path / "x").exists()
