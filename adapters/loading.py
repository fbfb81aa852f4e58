"""The MODEL syntax shared by every command, and the one function that turns it into an adapter.

    open_clip:<arch name | model-config.json>[@<weights.safetensors | weights.pt>]
    hf:<local Hugging Face CLIP folder>
    <folder written by `toolkit train` / `toolkit interpolate`>   (holds model.json)

Weights come from local files only; nothing is ever downloaded.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolkit.adapters.base import ClipAdapter, ModelLoadError

MODEL_CARD = "model.json"


@dataclass(frozen=True)
class ModelSpec:
    family: str  # a registered family (open_clip, hf), or "run" for a model folder
    target: str  # arch name / config path, HF folder, or run folder
    weights: str | None = None


@dataclass(frozen=True)
class ModelFamily:
    """One model family: how it loads from a spec and from a model folder, and which files are its weights.

    Each adapter module registers its family with `register_family` when imported; the spec syntax of
    every family is parsed here, in `parse_model_spec`, and nowhere else."""

    name: str  # the spec prefix (`name:`) and the model card's "family"
    load: Callable[[ModelSpec, bool], ClipAdapter]  # (spec, allow_random_init)
    load_saved: Callable[[Path, dict[str, Any]], ClipAdapter]  # (model folder, its card)
    weight_files: Callable[[ModelSpec], list[Path]]
    saved_weight_files: Callable[[Path, dict[str, Any]], list[Path]]


# The spec syntax of each family (`<prefix>:<body>`; True: the body is `target@weights`), and the module
# that registers it. Modules are imported on first use, so a spec of one family never imports another's
# stack (open_clip, transformers) and `toolkit --help` imports neither.
SPEC_SYNTAX = {
    "open_clip": ("open_clip:<architecture or config.json>@<weights file>", True),
    "hf": ("hf:<local folder with config.json and weights>", False),
}
FAMILY_MODULES = {"open_clip": "toolkit.adapters.open_clip_adapter", "hf": "toolkit.adapters.hf_clip"}
_FAMILIES: dict[str, ModelFamily] = {}


def register_family(family: ModelFamily) -> None:
    _FAMILIES[family.name] = family


def model_family(name: str) -> ModelFamily:
    """The registered family `name`; ModelLoadError for a name no adapter registers."""
    if name not in _FAMILIES and name in FAMILY_MODULES:
        importlib.import_module(FAMILY_MODULES[name])
    if name not in _FAMILIES:
        raise ModelLoadError(f"unknown model family {name!r}; known: {', '.join(sorted(FAMILY_MODULES))}")
    return _FAMILIES[name]


def parse_model_spec(spec: str) -> ModelSpec:
    prefix, colon, body = spec.partition(":")
    if colon and prefix in SPEC_SYNTAX:
        usage, takes_weights = SPEC_SYNTAX[prefix]
        target, _, weights = body.partition("@") if takes_weights else (body, "", "")
        if not target:
            raise ModelLoadError(f"{spec!r}: expected {usage}")
        return ModelSpec(prefix, target, weights or None)
    if (Path(spec) / MODEL_CARD).is_file():
        return ModelSpec("run", spec)
    raise ModelLoadError(
        f"cannot read model {spec!r}: use {', '.join(usage for usage, _ in SPEC_SYNTAX.values())}, "
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
    if parsed.family == "run":
        return load_saved_model(Path(parsed.target))
    return model_family(parsed.family).load(parsed, allow_random_init)


def load_saved_model(folder: Path) -> ClipAdapter:
    """Reload what `ClipAdapter.save` wrote (a training run's output, an interpolation)."""
    card = read_model_card(folder)
    return _saved_family(folder, card).load_saved(folder, card)


def weight_files(spec: str) -> list[Path]:
    """The weight files a spec loads (none for a randomly initialised open_clip architecture)."""
    parsed = parse_model_spec(spec)
    if parsed.family == "run":
        folder = Path(parsed.target)
        card = read_model_card(folder)
        return _saved_family(folder, card).saved_weight_files(folder, card)
    return model_family(parsed.family).weight_files(parsed)


def _saved_family(folder: Path, card: dict[str, Any]) -> ModelFamily:
    family = card["family"]
    if not isinstance(family, str) or family not in FAMILY_MODULES:
        raise ModelLoadError(f"{folder / MODEL_CARD}: unknown model family {family!r}")
    return model_family(family)


def model_card_file(folder: Path, name: Any, key: str) -> Path:
    """A model card names its files beside itself: a plain name, never a path that leaves the folder, so
    a moved or copied run folder carries everything it loads (and a card cannot pull in other weights)."""
    if not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\\" in name:
        raise ModelLoadError(f"{folder / MODEL_CARD}: {key!r} must name a file in {folder}, got {name!r}")
    path = folder / name
    if path.is_symlink():
        raise ModelLoadError(f"{path} is a symlink; a model folder holds its own files")
    return path
