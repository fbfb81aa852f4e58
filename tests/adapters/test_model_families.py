"""One model-family registry: adapters register themselves, MODEL specs are parsed in one place."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from toolkit.adapters import loading
from toolkit.adapters.base import ModelLoadError
from toolkit.adapters.loading import ModelFamily, ModelSpec, load_model, model_family, parse_model_spec, weight_files
from toolkit.adapters.outputs import weights_sha256, write_model_folder
from toolkit.core.hashing import file_sha256


def test_specs_parse_in_one_place() -> None:
    assert parse_model_spec("open_clip:ViT-B-32@w.safetensors") == ModelSpec("open_clip", "ViT-B-32", "w.safetensors")
    assert parse_model_spec("open_clip:ViT-B-32") == ModelSpec("open_clip", "ViT-B-32", None)
    assert parse_model_spec("hf:/models/clip@v2") == ModelSpec("hf", "/models/clip@v2")  # a folder keeps its '@'
    for spec, usage in (("hf:", "expected hf:<local folder"), ("open_clip:@w.pt", "expected open_clip:<arch"),
                        ("nowhere", "cannot read model 'nowhere'")):
        with pytest.raises(ModelLoadError, match=usage):
            parse_model_spec(spec)
    with pytest.raises(ModelLoadError, match="unknown model family 'toy'"):
        model_family("toy")


def test_families_register_themselves_and_load_their_folders(tiny_open_clip_spec: str, tmp_path: Path) -> None:
    adapter = load_model(tiny_open_clip_spec)
    assert model_family("open_clip").name == adapter.family == "open_clip"
    weights = Path(tiny_open_clip_spec.rpartition("@")[2])
    assert weight_files(tiny_open_clip_spec) == [weights]
    assert weights_sha256(tiny_open_clip_spec) == file_sha256(weights)
    card = write_model_folder(adapter, tmp_path / "run", {"note": "saved"})
    assert weight_files(str(tmp_path / "run")) == [tmp_path / "run" / card["weights"]]
    assert load_model(str(tmp_path / "run")).family == "open_clip"
    # The tokenizer export reproduces is public: the plain SimpleTokenizer, with its <eot> id.
    assert adapter.tokenizer.eot_token_id == adapter.tokenize(["a"])[0].max().item()


def test_load_dispatches_through_the_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    loaded: list[tuple[ModelSpec, bool]] = []

    def load(spec: ModelSpec, allow_random_init: bool) -> Any:
        loaded.append((spec, allow_random_init))
        return "toy adapter"

    monkeypatch.setitem(loading.SPEC_SYNTAX, "toy", ("toy:<name>", False))
    monkeypatch.setitem(loading.FAMILY_MODULES, "toy", "toolkit.adapters.loading")
    monkeypatch.setitem(loading._FAMILIES, "toy", ModelFamily("toy", load, lambda f, c: "saved",
                                                               lambda s: [], lambda f, c: []))
    assert load_model("toy:small", allow_random_init=True) == "toy adapter"
    assert loaded == [(ModelSpec("toy", "small"), True)]
