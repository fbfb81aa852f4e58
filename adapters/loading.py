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

        adapter = OpenClipAdapter(card["name"], card["config"], _build(card["name"], card["config"]))
        adapter.load_weights(folder / card["weights"])
        return adapter
    if family == "hf":
        from toolkit.adapters.hf_clip import HFClipAdapter

        return HFClipAdapter.from_folder(folder / card.get("hf_folder", "hf"))
    raise ModelLoadError(f"{folder / MODEL_CARD}: unknown model family {family!r}")
