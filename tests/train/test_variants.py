"""The recipe on a Hugging Face CLIP, and with LoRA on the text tower."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.helpers import TINY_IMAGE_SIZE, make_tiny_hf_clip
from toolkit.adapters.loading import load_model
from toolkit.data.batches import SyntheticBatchSource
from toolkit.train.recipe import TrainConfig, run_training


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def _config(**overrides: object) -> TrainConfig:
    return TrainConfig.from_dict({"batch_size": 4, "max_steps": 2, "lr": 1e-3, "min_lr": 1e-5,
                                  "progress": False, **overrides})


def test_hf_clip_trains_text_only_and_reloads(tmp_path: Path) -> None:
    folder = make_tiny_hf_clip(tmp_path / "hf-base")
    adapter = load_model(f"hf:{folder}")
    before = {n: p.detach().clone() for n, p in adapter.model.named_parameters()}
    source = SyntheticBatchSource(8, 4, TINY_IMAGE_SIZE, adapter.tokenize)
    run_training(_config(), adapter, source, tmp_path / "run")
    for name, param in adapter.vision_parameters():
        assert torch.equal(param, before[name]), name
    assert not torch.equal(adapter.model.text_projection.weight, before["text_projection.weight"])
    reloaded = load_model(str(tmp_path / "run"))
    assert reloaded.family == "hf"
    state = reloaded.model.state_dict()
    for name, tensor in adapter.model.state_dict().items():
        assert torch.equal(tensor, state[name]), name


def test_lora_trains_adapters_and_saves_merged_weights(tiny_open_clip_spec: str, tmp_path: Path) -> None:
    adapter = load_model(tiny_open_clip_spec)
    before = {n: p.detach().clone() for n, p in adapter.model.named_parameters()}
    source = SyntheticBatchSource(8, 4, 32, adapter.tokenize)
    run_training(_config(lora={"rank": 2, "alpha": 4.0}), adapter, source, tmp_path / "run")
    reloaded = load_model(str(tmp_path / "run"))  # plain architecture: LoRA merged into the weights
    state = reloaded.model.state_dict()
    assert set(before) <= set(state) and not any("lora" in name for name in state)
    assert not torch.equal(state["transformer.resblocks.0.mlp.c_fc.weight"],
                           before["transformer.resblocks.0.mlp.c_fc.weight"])
    # Under LoRA the original text weights are frozen except via the low-rank update; embeddings stay.
    assert torch.equal(state["token_embedding.weight"], before["token_embedding.weight"])
    for name, value in before.items():
        if name.startswith("visual."):
            assert torch.equal(state[name], value), name
