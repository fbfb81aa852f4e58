"""Hugging Face `transformers` CLIP models from a local folder (or a local HF cache entry); never downloads.

Weights are loaded by us, strictly, from the folder's safetensors (or torch files read with
weights_only=True), so a missing or mismatched tensor is an error instead of a silent random init.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from toolkit.adapters.base import ClipAdapter, ImageNorm, ModelLoadError
from toolkit.adapters.loading import ModelFamily, model_card_file, register_family
from toolkit.adapters.weights import check_state_dict_matches, load_state_dict_file

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
PREPROCESSOR_FILE = "preprocessor_config.json"
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
_INDEX_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")


def _hub_cache_dir() -> Path:
    explicit = os.environ.get("HF_HUB_CACHE")
    if explicit:
        return Path(explicit)
    home = os.environ.get("HF_HOME") or str(Path("~/.cache/huggingface").expanduser())
    return Path(home) / "hub"


def _snapshot_of_cache_repo(repo_dir: Path) -> Path:
    """`models--org--name` cache folder -> its snapshot for refs/main (or its only snapshot)."""
    ref = repo_dir / "refs" / "main"
    if ref.is_file():
        snapshot = repo_dir / "snapshots" / ref.read_text(encoding="utf-8").strip()
        if snapshot.is_dir():
            return snapshot
    snapshots = sorted(p for p in (repo_dir / "snapshots").iterdir() if p.is_dir())
    if len(snapshots) == 1:
        return snapshots[0]
    raise ModelLoadError(f"{repo_dir} is a Hugging Face cache entry with {len(snapshots)} snapshots and no "
                         "refs/main; pass the snapshot folder itself (…/snapshots/<revision>)")


def resolve_hf_folder(target: str | Path) -> Path:
    """A folder with config.json: given directly, as a cache `models--…` folder, or as `org/name` found
    in the local HF cache ($HF_HUB_CACHE or $HF_HOME/hub), as HF_HUB_OFFLINE would resolve it."""
    path = Path(target).expanduser()
    if path.is_dir() and (path / "config.json").is_file():
        return path
    if path.is_dir() and (path / "snapshots").is_dir():
        return resolve_hf_folder(_snapshot_of_cache_repo(path))
    text = str(target)
    if not path.exists() and text.count("/") == 1 and not text.startswith((".", "/", "~")):
        cached = _hub_cache_dir() / ("models--" + text.replace("/", "--"))
        if cached.is_dir():
            return resolve_hf_folder(cached)
        raise ModelLoadError(f"{text!r} is neither a folder nor in the local Hugging Face cache ({cached}); "
                             "nothing is downloaded: copy the model folder here and pass its path")
    if path.is_dir():
        raise ModelLoadError(f"{path} has no config.json; pass a Hugging Face CLIP folder "
                             "(config.json, model.safetensors, tokenizer files)")
    raise ModelLoadError(f"Hugging Face model folder {path} does not exist")


def _read_weights(folder: Path) -> dict[str, torch.Tensor]:
    for name in _WEIGHT_FILES:
        if (folder / name).exists():
            return load_state_dict_file(folder / name)
    for name in _INDEX_FILES:
        index_path = folder / name
        if index_path.is_file():
            try:
                weight_map = json.loads(index_path.read_text(encoding="utf-8"))["weight_map"]
            except (OSError, ValueError, KeyError, TypeError) as err:
                raise ModelLoadError(f"{index_path} is not a valid shard index: {err}") from err
            state: dict[str, torch.Tensor] = {}
            for shard in sorted(set(weight_map.values())):
                state.update(load_state_dict_file(folder / shard))
            return state
    expected = ", ".join(_WEIGHT_FILES + _INDEX_FILES)
    raise ModelLoadError(f"{folder} holds no weights: expected one of {expected}")


def _read_image_norm(folder: Path, size: int) -> ImageNorm:
    path = folder / PREPROCESSOR_FILE
    if not path.is_file():
        return ImageNorm(OPENAI_MEAN, OPENAI_STD, size)
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"{path} is not valid JSON: {err}") from err
    mean = tuple(float(v) for v in config.get("image_mean", OPENAI_MEAN))
    std = tuple(float(v) for v in config.get("image_std", OPENAI_STD))
    return ImageNorm(mean, std, size)  # type: ignore[arg-type]


class HFClipAdapter(ClipAdapter):
    family = "hf"

    def __init__(self, model: Any, tokenizer: Any, norm: ImageNorm, source: Path | None = None) -> None:
        self.model = model
        self._clip: Any = model  # transformers' CLIPModel; typed loosely because its stubs are partial
        self.tokenizer = tokenizer
        self._norm = norm
        self.source = source
        self._context_length = int(self._clip.config.text_config.max_position_embeddings)

    @classmethod
    def from_folder(cls, path: str | Path) -> HFClipAdapter:
        """Strictly load config, weights and tokenizer from local files."""
        from transformers import AutoTokenizer, CLIPConfig, CLIPModel

        folder = resolve_hf_folder(path)
        try:
            config = CLIPConfig.from_pretrained(str(folder), local_files_only=True)
        except (OSError, ValueError) as err:
            raise ModelLoadError(f"{folder / 'config.json'} is not a readable CLIP config: {err}") from err
        if getattr(config, "model_type", "") != "clip":
            raise ModelLoadError(f"{folder / 'config.json'} describes a {config.model_type!r} model, "
                                 "not CLIP")
        model: Any = CLIPModel(config)
        model.float()
        state = _read_weights(folder)
        expected = model.state_dict()
        # Older exports carry the non-persistent position_ids buffers; they hold no learned values.
        state = {k: v for k, v in state.items() if k in expected or not k.endswith("position_ids")}
        check_state_dict_matches(model, state, f"weights in {folder} (Hugging Face CLIP)")
        model.load_state_dict(state, strict=True)
        model.eval()
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        except (OSError, ValueError, TypeError) as err:
            raise ModelLoadError(f"{folder} has no usable tokenizer (vocab.json + merges.txt or "
                                 f"tokenizer.json): {err}") from err
        vision_config: Any = config.vision_config
        norm = _read_image_norm(folder, int(vision_config.image_size))
        return cls(model, tokenizer, norm, folder)

    @property
    def context_length(self) -> int:
        return self._context_length

    @property
    def embed_dim(self) -> int:
        return int(self._clip.config.projection_dim)

    @property
    def image_norm(self) -> ImageNorm:
        return self._norm

    @property
    def logit_scale(self) -> nn.Parameter:
        scale: nn.Parameter = self._clip.logit_scale
        return scale

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        encoded = self.tokenizer(list(texts), padding="max_length", max_length=self._context_length,
                                 truncation=True, return_tensors="pt")
        ids: torch.Tensor = encoded["input_ids"].long()
        # Truncation can cut off the end token, which the text tower pools at: put it back.
        eos = self.tokenizer.eos_token_id
        missing_eos = ~(ids == eos).any(dim=1)
        ids[missing_eos, -1] = eos
        return ids

    def _attention_mask(self, tokens: torch.Tensor) -> torch.Tensor:
        # Attend up to and including the first end token; padding may reuse the end token's id.
        first_eos = (tokens == self.tokenizer.eos_token_id).int().argmax(dim=1, keepdim=True)
        positions = torch.arange(tokens.shape[1], device=tokens.device).unsqueeze(0)
        mask: torch.Tensor = positions <= first_eos
        return mask.long()

    def encode_text(self, tokens: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        outputs = self._clip.text_model(input_ids=tokens, attention_mask=self._attention_mask(tokens))
        features: torch.Tensor = self._clip.text_projection(outputs.pooler_output)
        return nn.functional.normalize(features, dim=-1) if normalize else features

    def encode_image(self, images: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        outputs = self._clip.vision_model(pixel_values=images)
        features: torch.Tensor = self._clip.visual_projection(outputs.pooler_output)
        return nn.functional.normalize(features, dim=-1) if normalize else features

    def image_transform(self) -> Callable[[Any], torch.Tensor]:
        from torchvision import transforms

        size = self._norm.size
        transform: Callable[[Any], torch.Tensor] = transforms.Compose([
            transforms.Resize(size, interpolation=transforms.InterpolationMode.BICUBIC),
            transforms.CenterCrop(size),
            transforms.Lambda(lambda image: image.convert("RGB")),
            transforms.ToTensor(),
            transforms.Normalize(self._norm.mean, self._norm.std),
        ])
        return transform

    def is_vision_parameter(self, name: str) -> bool:
        return name.startswith(("vision_model.", "visual_projection."))

    def save(self, out_dir: Path) -> dict[str, Any]:
        hf_dir = out_dir / "hf"
        hf_dir.mkdir(parents=True, exist_ok=True)
        self._clip.save_pretrained(str(hf_dir))
        self.tokenizer.save_pretrained(str(hf_dir))
        if self.source is not None and (self.source / PREPROCESSOR_FILE).is_file():
            shutil.copyfile(self.source / PREPROCESSOR_FILE, hf_dir / PREPROCESSOR_FILE)
        return {"family": self.family, "hf_folder": "hf"}


def _weights_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix in (".safetensors", ".bin"))


def _saved_hf_folder(folder: Path, card: dict[str, Any]) -> Path:
    return model_card_file(folder, card.get("hf_folder", "hf"), "hf_folder")


register_family(ModelFamily(
    name=HFClipAdapter.family,
    load=lambda spec, allow_random_init: HFClipAdapter.from_folder(Path(spec.target)),
    load_saved=lambda folder, card: HFClipAdapter.from_folder(_saved_hf_folder(folder, card)),
    weight_files=lambda spec: _weights_in(resolve_hf_folder(spec.target)),
    saved_weight_files=lambda folder, card: _weights_in(_saved_hf_folder(folder, card))))
