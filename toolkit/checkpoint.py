"""Resumable training checkpoints: trainable weights, optimizer, scheduler, every rank's RNG, and the
named resume state. Written atomically (temp file + os.replace); read with torch's weights_only loader."""

from __future__ import annotations

import os
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

CHECKPOINT_FILE = "checkpoint.pt"


class ResumeError(RuntimeError):
    """A checkpoint is missing, unreadable, or belongs to a different run configuration."""


@dataclass(frozen=True)
class ResumeState:
    """Everything needed to continue at the exact step with the identical data order."""

    epoch: int
    global_step: int  # optimizer steps completed
    data_offset: int  # batch slots of `epoch` already consumed
    seed: int
    config_fingerprint: str
    data: dict[str, Any]  # the batch source's description (snapshot hash, sample count…)
    world_size: int


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch RNG states as tensors and plain values (weights_only-loadable)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": [kind, torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos), int(has_gauss),
                  float(cached)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ResumeError(f"no checkpoint at {path}; start without --resume")
    try:
        payload: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # corrupt file: torch raises many types
        raise ResumeError(f"checkpoint {path} is unreadable ({err}); start again without --resume") from err
    return payload


def check_resume_state(saved: dict[str, Any], expected: ResumeState, path: Path) -> ResumeState:
    """The saved state must come from the same seed, config, data and world size as this run."""
    state = ResumeState(**saved)
    mismatches = [
        f"{name}: checkpoint has {getattr(state, name)!r}, this run has {getattr(expected, name)!r}"
        for name in ("seed", "config_fingerprint", "data", "world_size")
        if getattr(state, name) != getattr(expected, name)
    ]
    if mismatches:
        raise ResumeError(f"checkpoint {path} belongs to a different run ({'; '.join(mismatches)}); "
                          "resume with the same config, snapshot and number of processes, or start afresh")
    return state


def resume_state_dict(state: ResumeState) -> dict[str, Any]:
    return asdict(state)
