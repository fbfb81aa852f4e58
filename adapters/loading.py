"""The MODEL syntax shared by every command, and the one function that turns it into an adapter.

    open_clip:<arch name | model-config.json>[@<weights.safetensors | weights.pt>]
    hf:<local Hugging Face CLIP folder>
    <folder written by `toolkit train` / `toolkit interpolate`>   (holds model.json)

Weights come from local files only; nothing is ever downloaded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolkit.adapters.base import ClipAdapter, ModelLoadError

MODEL_CARD = "model.json"


@dataclass(frozen=True)
class ModelSpec:
    family: str  # open_clip | hf | run
    target: str  # arch name / config path, HF folder, or run folder
    weights: str | None = None


def parse_model_spec(spec: str) -> ModelSpec:
    if spec.startswith("open_clip:"):
        body = spec[len("open_clip:"):]
        arch, _, weights = body.partition("@")
        if not arch:
            raise ModelLoadError(f"{spec!r}: expected open_clip:<architecture or config.json>@<weights file>")
        return ModelSpec("open_clip", arch, weights or None)
    if spec.startswith("hf:"):
        folder = spec[len("hf:"):]
        if not folder:
            raise ModelLoadError(f"{spec!r}: expected hf:<local folder with config.json and weights>")
        return ModelSpec("hf", folder)
    if (Path(spec) / MODEL_CARD).is_file():
        return ModelSpec("run", spec)
    raise ModelLoadError(
        f"cannot read model {spec!r}: use open_clip:<arch or config.json>@<weights>, hf:<folder>, "
        f"or a folder written by `toolkit train` (with {MODEL_CARD})"
    )


def read_model_card(folder: Path) -> dict[str, Any]:
    try:
        card = json.loads((folder / MODEL_CARD).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelLoadError(f"{folder / MODEL_CARD} is unreadable: {err}") from err
    if not isinstance(card, dict) or "family" not in card:
        raise ModelLoadError(f"{folder / MODEL_CARD} has no 'family' key; was it written by the toolkit?")
    return card


def load_model(spec: str, allow_random_init: bool = False) -> ClipAdapter:
    """Load a model from local files. Random initialisation needs `allow_random_init` (tests, benchmarks)."""
    parsed = parse_model_spec(spec)
    if parsed.family == "open_clip":
        from toolkit.adapters.open_clip_adapter import OpenClipAdapter

        if parsed.weights is None and not allow_random_init:
            raise ModelLoadError(f"{spec!r} names no weights file; use open_clip:<arch>@<weights file>")
        return OpenClipAdapter.create(parsed.target, parsed.weights)
    if parsed.family == "hf":
        from toolkit.adapters.hf_clip import HFClipAdapter

        return HFClipAdapter.from_folder(Path(parsed.target))
    return load_saved_model(Path(parsed.target))


def load_saved_model(folder: Path) -> ClipAdapter:
    """Reload what `ClipAdapter.save` wrote (a training run's output, an interpolation)."""
    card = read_model_card(folder)
    family = card["family"]
    if family == "open_clip":
        from toolkit.adapters.open_clip_adapter import OpenClipAdapter, _build

        name, config = card.get("name"), card.get("config")
        if not isinstance(name, str) or not isinstance(config, dict):
            raise ModelLoadError(f"{folder / MODEL_CARD}: an open_clip card needs 'name' (text) and 'config' "
                                 "(an object); was it written by the toolkit?")
        weights = model_card_file(folder, card.get("weights"), "weights")
        try:
            model = _build(name, config)
        except (TypeError, ValueError, KeyError) as err:
            raise ModelLoadError(f"{folder / MODEL_CARD}: its 'config' does not build a model: {err}") from err
        adapter = OpenClipAdapter(name, config, model)
        adapter.load_weights(weights)
        return adapter
    if family == "hf":
        from toolkit.adapters.hf_clip import HFClipAdapter

        return HFClipAdapter.from_folder(model_card_file(folder, card.get("hf_folder", "hf"), "hf_folder"))
    raise ModelLoadError(f"{folder / MODEL_CARD}: unknown model family {family!r}")


def model_card_file(folder: Path, name: Any, key: str) -> Path:
    """A model card names its files beside itself: a plain name, never a path that leaves the folder, so
    a moved or copied run folder carries everything it loads (and a card cannot pull in other weights)."""
    if not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\\" in name:
        raise ModelLoadError(f"{folder / MODEL_CARD}: {key!r} must name a file in {folder}, got {name!r}")
    path = folder / name
    if path.is_symlink():
        raise ModelLoadError(f"{path} is a symlink; a model folder holds its own files")
    return path
