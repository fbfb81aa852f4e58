"""Safe weight files: safetensors, or torch files read with weights_only=True. Never arbitrary pickle."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from toolkit.adapters.base import ModelLoadError


def load_state_dict_file(path: Path) -> dict[str, torch.Tensor]:
    """Read a state dict from safetensors or a torch file (optionally wrapped in {"state_dict": ...})."""
    if not path.is_file():
        raise ModelLoadError(f"weights file {path} does not exist")
    if path.stat().st_size == 0:
        raise ModelLoadError(f"weights file {path} is empty")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as err:
            raise ModelLoadError(f"weights file {path} is not a readable safetensors file: {err}") from err
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises a zoo of types for corrupt or unsafe files
        raise ModelLoadError(
            f"weights file {path} could not be read as a torch state dict with weights_only=True "
            f"(corrupt, or it contains pickled code): {err}"
        ) from err
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
        raise ModelLoadError(f"weights file {path} does not hold a state dict of tensors")
    return loaded


def save_state_dict_file(state: dict[str, torch.Tensor], path: Path) -> None:
    """Write safetensors atomically (temp file + rename), so a crash never leaves half a file."""
    from safetensors.torch import save_file

    tmp = path.with_name(path.name + ".tmp")
    # safetensors refuses shared storage; contiguous clones make every tensor its own.
    save_file({k: v.detach().contiguous().clone() for k, v in state.items()}, str(tmp))
    os.replace(tmp, path)


def check_state_dict_matches(model: nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    """Refuse a checkpoint that does not fit `model`, listing missing, unexpected and mis-shaped keys."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mis_shaped = sorted(
        f"{k} {tuple(state[k].shape)} != {tuple(expected[k].shape)}"
        for k in set(expected) & set(state)
        if state[k].shape != expected[k].shape
    )
    if not (missing or unexpected or mis_shaped):
        return

    def listing(items: list[str]) -> str:
        shown = ", ".join(items[:15])
        return f"[{shown}{', …' if len(items) > 15 else ''}] ({len(items)} in all)"

    raise ModelLoadError(
        f"{what} does not match the model: missing keys {listing(missing)}; "
        f"unexpected keys {listing(unexpected)}; wrong shapes {listing(mis_shaped)}"
    )
