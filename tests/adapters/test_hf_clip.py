"""The Hugging Face CLIP adapter on a tiny random model folder."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from tests.helpers import TINY_CONTEXT_LENGTH, TINY_IMAGE_SIZE, make_tiny_hf_clip
from toolkit.adapters.base import ModelLoadError
from toolkit.adapters.hf_clip import HFClipAdapter
from toolkit.adapters.loading import load_model


@pytest.fixture(scope="module")
def tiny_hf_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_hf_clip(tmp_path_factory.mktemp("hf") / "tiny-clip")


def test_loads_and_encodes(tiny_hf_folder: Path) -> None:
    adapter = load_model(f"hf:{tiny_hf_folder}")
    assert isinstance(adapter, HFClipAdapter)
    assert adapter.context_length == TINY_CONTEXT_LENGTH and adapter.embed_dim == 16
    tokens = adapter.tokenize(["a red cube left of a blue ball.", "word " * 100])
    assert tokens.shape == (2, TINY_CONTEXT_LENGTH) and tokens.dtype == torch.int64
    eos = adapter.tokenizer.eos_token_id
    assert tokens[1, -1].item() == eos  # truncated text still ends with the pooled end token
    with torch.no_grad():
        text = adapter.encode_text(tokens)
        image = adapter.encode_image(torch.zeros(3, 3, TINY_IMAGE_SIZE, TINY_IMAGE_SIZE))
    assert text.shape == (2, 16) and image.shape == (3, 16)
    assert torch.allclose(text.norm(dim=-1), torch.ones(2), atol=1e-5)


def test_pooling_ignores_padding(tiny_hf_folder: Path) -> None:
    adapter = HFClipAdapter.from_folder(tiny_hf_folder)
    tokens = adapter.tokenize(["a dog on a mat."])
    padded_differently = tokens.clone()
    first_eos = int((tokens[0] == adapter.tokenizer.eos_token_id).nonzero()[0])
    padded_differently[0, first_eos + 1:] = 7  # arbitrary tokens after the end
    with torch.no_grad():
        assert torch.allclose(adapter.encode_text(tokens), adapter.encode_text(padded_differently), atol=1e-6)


def test_parameter_split(tiny_hf_folder: Path) -> None:
    adapter = HFClipAdapter.from_folder(tiny_hf_folder)
    vision = dict(adapter.vision_parameters())
    text = dict(adapter.text_parameters())
    assert "visual_projection.weight" in vision and "vision_model.embeddings.patch_embedding.weight" in vision
    assert "logit_scale" in text and "text_projection.weight" in text
    assert not any(name.startswith("vision") for name in text)


def test_save_round_trip(tiny_hf_folder: Path, tmp_path: Path) -> None:
    adapter = HFClipAdapter.from_folder(tiny_hf_folder)
    with torch.no_grad():
        adapter.model.text_projection.weight.add_(1.0)
    card = adapter.save(tmp_path / "run")
    assert card == {"family": "hf", "hf_folder": "hf"}
    (tmp_path / "run" / "model.json").write_text('{"family": "hf", "hf_folder": "hf"}', encoding="utf-8")
    reloaded = load_model(str(tmp_path / "run"))
    for (name, a), (_, b) in zip(adapter.model.state_dict().items(), reloaded.model.state_dict().items(),
                                 strict=True):
        assert torch.equal(a, b), name
    assert torch.equal(adapter.tokenize(["a cat"]), reloaded.tokenize(["a cat"]))


def test_hf_cache_layout(tiny_hf_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = tmp_path / "hub" / "models--acme--tiny-clip"
    shutil.copytree(tiny_hf_folder, repo / "snapshots" / "abc123")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123", encoding="utf-8")
    assert HFClipAdapter.from_folder(repo).source == repo / "snapshots" / "abc123"
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    assert HFClipAdapter.from_folder("acme/tiny-clip").source == repo / "snapshots" / "abc123"
    with pytest.raises(ModelLoadError, match="local Hugging Face cache"):
        HFClipAdapter.from_folder("acme/absent")


def test_missing_weights(tiny_hf_folder: Path, tmp_path: Path) -> None:
    folder = tmp_path / "broken"
    shutil.copytree(tiny_hf_folder, folder)
    (folder / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match="holds no weights"):
        HFClipAdapter.from_folder(folder)


def test_corrupt_weights(tiny_hf_folder: Path, tmp_path: Path) -> None:
    folder = tmp_path / "corrupt"
    shutil.copytree(tiny_hf_folder, folder)
    (folder / "model.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(ModelLoadError, match="not a readable safetensors"):
        HFClipAdapter.from_folder(folder)


def test_missing_keys_listed(tiny_hf_folder: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    folder = tmp_path / "partial"
    shutil.copytree(tiny_hf_folder, folder)
    state = load_file(str(folder / "model.safetensors"))
    del state["text_projection.weight"]
    state["extra.weight"] = torch.zeros(1)
    save_file(state, str(folder / "model.safetensors"))
    expected = r"missing keys \[text_projection.weight\].*unexpected keys \[extra"
    with pytest.raises(ModelLoadError, match=expected):
        HFClipAdapter.from_folder(folder)
