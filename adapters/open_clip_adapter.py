"""open_clip models: any registered architecture name or a model-config JSON, weights from local files."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from toolkit.adapters.base import ClipAdapter, ImageNorm, ModelLoadError
from toolkit.adapters.loading import MODEL_CARD, ModelFamily, ModelSpec, model_card_file, register_family
from toolkit.adapters.weights import check_state_dict_matches, load_state_dict_file, save_state_dict_file

WEIGHTS_FILE = "model.safetensors"


def _model_config(arch: str) -> tuple[str, dict[str, Any]]:
    """(name, config) for a registered architecture name or a path to a model-config JSON."""
    import open_clip

    path = Path(arch)
    if arch.endswith(".json") or path.is_file():
        if not path.is_file():
            raise ModelLoadError(f"model config {arch} does not exist")
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ModelLoadError(f"model config {arch} is not valid JSON: {err}") from err
        if not isinstance(config, dict) or not {"embed_dim", "vision_cfg", "text_cfg"} <= config.keys():
            raise ModelLoadError(f"model config {arch} must be an object with embed_dim, vision_cfg and "
                                 "text_cfg (open_clip's model-config format)")
        return path.stem, config
    config = open_clip.get_model_config(arch)
    if config is None:
        raise ModelLoadError(f"unknown open_clip architecture {arch!r}; pass a registered name "
                             "(see open_clip.list_models()) or a path to a model-config JSON")
    return arch, config


def _build(name: str, config: dict[str, Any]) -> nn.Module:
    from open_clip.model import CLIP, CustomTextCLIP

    config = dict(config)
    config.pop("custom_text", None)
    model_cls = CustomTextCLIP if "hf_model_name" in config.get("text_cfg", {}) else CLIP
    if model_cls is CustomTextCLIP:
        raise ModelLoadError(f"{name}: open_clip models with a Hugging Face text tower are not supported; "
                             "use the hf: adapter for Hugging Face CLIP models")
    model = model_cls(**{k: v for k, v in config.items() if k != "preprocess_cfg"})
    model.eval()
    return model


def trim_padding(tokens: torch.Tensor) -> torch.Tensor:
    """Drop the all-padding tail columns (SimpleTokenizer pads with 0). Exact for a causal text tower pooled
    at the end token: no token attends to anything after itself, so padding never changes the pooled output."""
    used = int((tokens != 0).any(dim=0).nonzero().max()) + 1
    return tokens[:, :used]


def encode_text_trimmed(model: Any, tokens: torch.Tensor, normalize: bool = True) -> torch.Tensor:
    """open_clip `CLIP.encode_text` on a context shorter than the model's (positional embedding and causal
    mask sliced to fit); with `trim_padding`'s tokens, the same embeddings at a fraction of the cost."""
    from open_clip.transformer import text_global_pool

    length = tokens.shape[1]
    cast_dtype = model.transformer.get_cast_dtype()
    x = model.token_embedding(tokens).to(cast_dtype) + model.positional_embedding[:length].to(cast_dtype)
    x = model.transformer(x, attn_mask=model.attn_mask[:length, :length])
    x = model.ln_final(x)
    x = text_global_pool(x, tokens, model.text_pool_type, eos_token_id=getattr(model, "text_eos_id", None))
    x = model.text_projection(x) if isinstance(model.text_projection, nn.Linear) else x @ model.text_projection
    return nn.functional.normalize(x, dim=-1) if normalize else x


# Pooling that reads the end token (or the first), never a position after it: trimming padding is exact.
_TRIMMABLE_POOLING = ("argmax", "eos", "first")


class OpenClipAdapter(ClipAdapter):
    family = "open_clip"

    def __init__(self, name: str, config: dict[str, Any], model: nn.Module) -> None:
        import open_clip

        self.name = name
        self.config = config
        self.model = model
        text_cfg = config.get("text_cfg", {})
        self._context_length = int(text_cfg.get("context_length", 77))
        self.tokenizer = open_clip.SimpleTokenizer(context_length=self._context_length)
        vision = config.get("vision_cfg", {})
        size = vision.get("image_size", 224)
        preprocess = config.get("preprocess_cfg", {})
        self._norm = ImageNorm(
            mean=tuple(preprocess.get("mean", open_clip.OPENAI_DATASET_MEAN)),
            std=tuple(preprocess.get("std", open_clip.OPENAI_DATASET_STD)),
            size=int(size if isinstance(size, int) else size[0]),
        )

    @classmethod
    def create(cls, arch: str, weights: str | Path | None) -> OpenClipAdapter:
        """Build `arch` and load `weights` (a state dict with open_clip key names); None = random init."""
        name, config = _model_config(arch)
        model = _build(name, config)
        adapter = cls(name, config, model)
        if weights is not None:
            adapter.load_weights(Path(weights))
        return adapter

    def load_weights(self, path: Path) -> None:
        state = load_state_dict_file(path)
        # DDP and open_clip training checkpoints prefix keys with "module."
        if state and all(k.startswith("module.") for k in state):
            state = {k[len("module."):]: v for k, v in state.items()}
        check_state_dict_matches(self.model, state, f"{path} (open_clip architecture {self.name})")
        self.model.load_state_dict(state, strict=True)

    @property
    def context_length(self) -> int:
        return self._context_length

    @property
    def embed_dim(self) -> int:
        return int(self.config["embed_dim"])

    @property
    def image_norm(self) -> ImageNorm:
        return self._norm

    @property
    def logit_scale(self) -> nn.Parameter:
        return self.model.logit_scale  # type: ignore[return-value]

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        return self.tokenizer(list(texts))

    def encode_text(self, tokens: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        return self.model.encode_text(tokens, normalize=normalize)  # type: ignore[operator]

    def encode_text_trimmed(self, tokens: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        model = self.model
        if (getattr(model, "attn_mask", None) is None or model.text_projection is None
                or getattr(model, "text_pool_type", None) not in _TRIMMABLE_POOLING):
            return self.encode_text(tokens, normalize)  # not causal, or pooled over every position
        return encode_text_trimmed(model, trim_padding(tokens), normalize)

    def encode_image(self, images: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        return self.model.encode_image(images, normalize=normalize)  # type: ignore[operator]

    def image_transform(self) -> Callable[[Any], torch.Tensor]:
        from open_clip.transform import image_transform

        return image_transform(self._norm.size, is_train=False, mean=self._norm.mean, std=self._norm.std)

    def is_vision_parameter(self, name: str) -> bool:
        return name.startswith("visual.")

    def save(self, out_dir: Path) -> dict[str, Any]:
        out_dir.mkdir(parents=True, exist_ok=True)
        save_state_dict_file(self.model.state_dict(), out_dir / WEIGHTS_FILE)
        return {"family": self.family, "name": self.name, "config": self.config, "weights": WEIGHTS_FILE}


def _load(spec: ModelSpec, allow_random_init: bool) -> ClipAdapter:
    if spec.weights is None and not allow_random_init:
        raise ModelLoadError(f"'open_clip:{spec.target}' names no weights file; use open_clip:<arch>@<weights file>")
    return OpenClipAdapter.create(spec.target, spec.weights)


def _load_saved(folder: Path, card: dict[str, Any]) -> ClipAdapter:
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


register_family(ModelFamily(
    name=OpenClipAdapter.family, load=_load, load_saved=_load_saved,
    weight_files=lambda spec: [Path(spec.weights)] if spec.weights else [],
    saved_weight_files=lambda folder, card: [model_card_file(folder, card.get("weights"), "weights")]))
