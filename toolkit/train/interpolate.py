"""WiSE-FT: blend a fine-tuned text tower back towards its base, the lever when zero-shot drops.

    θ_text(α) = (1 − α)·θ_base + α·θ_tuned      (α = 0: the base model, α = 1: the fine-tuned one)

Only text-side tensors are blended. The image tower must be bit-identical in both models (CLIC never
changes it); anything else means the two models are not base and fine-tune of each other.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch

from toolkit.adapters.base import ClipAdapter
from toolkit.adapters.outputs import atomic_output_dir, weights_sha256, write_model_folder
from toolkit.core.errors import InputError


class InterpolationError(InputError):
    """The two models cannot be interpolated; the message names the tensor at fault."""


def interpolate(base: ClipAdapter, tuned: ClipAdapter, alpha: float) -> ClipAdapter:
    """A new adapter (a copy of `tuned`) whose text tensors are (1 − alpha)·base + alpha·tuned."""
    if not 0.0 <= alpha <= 1.0:
        raise InterpolationError(f"alpha must be in [0, 1], got {alpha}")
    if base.family != tuned.family:
        raise InterpolationError(f"base is a {base.family} model and tuned a {tuned.family} model")
    base_state, tuned_state = base.model.state_dict(), tuned.model.state_dict()
    if set(base_state) != set(tuned_state):
        differing = sorted(set(base_state) ^ set(tuned_state))[:10]
        raise InterpolationError(f"the models have different tensors (e.g. {', '.join(differing)}); "
                                 "interpolate a fine-tuned run with the base it was trained from")
    blended: dict[str, torch.Tensor] = {}
    for name, tuned_value in tuned_state.items():
        base_value = base_state[name]
        if base_value.shape != tuned_value.shape:
            raise InterpolationError(f"tensor {name} has shape {tuple(base_value.shape)} in base and "
                                     f"{tuple(tuned_value.shape)} in tuned")
        if base.is_vision_parameter(name):
            if not torch.equal(base_value, tuned_value):
                raise InterpolationError(f"image-tower tensor {name} differs between base and tuned; CLIC "
                                         "keeps the image tower frozen, so these are not base and fine-tune")
            blended[name] = tuned_value
        elif tuned_value.is_floating_point():
            blended[name] = torch.lerp(base_value.to(tuned_value.dtype), tuned_value, alpha)
        else:
            blended[name] = tuned_value
    result = copy.deepcopy(tuned)
    result.model.load_state_dict(blended, strict=True)
    return result


def save_interpolated(adapter: ClipAdapter, out_dir: Path, base_spec: str, tuned_spec: str,
                      alpha: float) -> dict[str, Any]:
    """Write the blended model as a folder `load_model` reads; it appears whole or not at all."""
    provenance = {"kind": "wise-ft", "alpha": alpha, "base": base_spec, "tuned": tuned_spec,
                  "base_weights_sha256": weights_sha256(base_spec),
                  "tuned_weights_sha256": weights_sha256(tuned_spec)}
    with atomic_output_dir(out_dir) as tmp:
        card = write_model_folder(adapter, tmp, provenance)
    return card
