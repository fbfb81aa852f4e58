"""The one interface every model family implements. Training, evaluation and export see only this.

A `ClipAdapter` wraps a CLIP model whose image tower is frozen and whose text side is trained.
Tensor layouts: tokens are int64 [N, context_length]; images are float [N, 3, H, W] already
normalised with the model's own mean/std; embeddings are float [N, embed_dim].
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from toolkit.core.errors import InputError


class ModelLoadError(InputError):
    """A model could not be loaded; the message names the file and what is wrong with it."""


@dataclass(frozen=True)
class ImageNorm:
    """The model's own pixel normalisation and input size."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    size: int  # square input side, e.g. 224


class ClipAdapter(ABC):
    """Uniform view of a CLIP model. `model` is the underlying nn.Module (train/eval, .to(), DDP)."""

    family: str  # "open_clip" | "hf": the name it registers under (toolkit.adapters.loading.ModelFamily)
    model: nn.Module
    # The family's own tokenizer object (open_clip's SimpleTokenizer, a Hugging Face tokenizer), public for
    # export, which reproduces it in the bundle; `tokenize` is what training and evaluation call.
    tokenizer: Any

    @property
    @abstractmethod
    def context_length(self) -> int: ...

    @property
    @abstractmethod
    def embed_dim(self) -> int: ...

    @property
    @abstractmethod
    def image_norm(self) -> ImageNorm: ...

    @property
    @abstractmethod
    def logit_scale(self) -> nn.Parameter:
        """The real (trainable) temperature parameter, stored as log(scale)."""

    @abstractmethod
    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        """Texts -> int64 [N, context_length], truncated to the context like the model was trained."""

    @abstractmethod
    def encode_text(self, tokens: torch.Tensor, normalize: bool = True) -> torch.Tensor: ...

    def encode_text_trimmed(self, tokens: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """`encode_text`'s embeddings, computed on the batch's used context only where the architecture makes
        that exact (training's captions are far shorter than the context, so most columns are padding).
        Shapes then vary per batch: traced and compiled graphs use `encode_text`. Here: `encode_text`."""
        return self.encode_text(tokens, normalize)

    @abstractmethod
    def encode_image(self, images: torch.Tensor, normalize: bool = True) -> torch.Tensor: ...

    @abstractmethod
    def image_transform(self) -> Callable[[Any], torch.Tensor]:
        """PIL image -> normalised tensor [3, size, size], the model's own eval preprocessing."""

    @abstractmethod
    def is_vision_parameter(self, name: str) -> bool:
        """True for every parameter of the frozen image tower (by `model.named_parameters()` name)."""

    def text_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        """Everything that CLIC trains: all parameters outside the image tower."""
        for name, param in self.model.named_parameters():
            if not self.is_vision_parameter(name):
                yield name, param

    def vision_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        for name, param in self.model.named_parameters():
            if self.is_vision_parameter(name):
                yield name, param

    @abstractmethod
    def save(self, out_dir: Path) -> dict[str, Any]:
        """Write the weights (safetensors) and whatever is needed to reload them; returns a
        `model.json` description that `load_model` understands."""
