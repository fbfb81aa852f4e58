"""Resumable training checkpoints: trainable weights, optimizer, scheduler, every rank's RNG, and the
named resume state. Written atomically (temp file + os.replace); read with torch's weights_only loader."""

from __future__ import annotations

import os
import random
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from toolkit.core.errors import InputError

CHECKPOINT_FILE = "checkpoint.pt"


class ResumeError(InputError):
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
    # Of the base weights the run started from: the trainable weights in the checkpoint are deltas on top
    # of them, so another base would silently give a model that model.json misnames.
    base_weights_sha256: str | None = None


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


class CheckpointWriteError(InputError):
    """The checkpoint could not be written (disk full, no permission); the previous one is kept."""


def _os_error_in(err: BaseException) -> OSError | None:
    """The OSError behind `err`: torch.save reports a failed write of a file object as a RuntimeError whose
    context is the file's own OSError (ENOSPC, EFBIG, EACCES...)."""
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, OSError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write atomically: a failed write (a full disk) removes its temp file and leaves the previous
    checkpoint as it was, and is reported as an error naming the file, not a traceback."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as handle:  # a file object, so torch keeps the OSError as the context
            torch.save(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())  # delayed-allocation filesystems report a full disk only here
        os.replace(tmp, path)
    except (OSError, RuntimeError) as err:
        cause = _os_error_in(err)
        tmp.unlink(missing_ok=True)
        if cause is None:  # a RuntimeError of torch's own, not a write failure: a bug
            raise
        kept = "the previous checkpoint is kept" if path.exists() else "no checkpoint was kept"
        raise CheckpointWriteError(f"cannot write checkpoint {path}: {cause.strerror or cause}; {kept}. Free "
                                   "space (or fix permissions) and continue with --resume") from err


CHECKPOINT_KEYS = ("trainable", "optimizer", "scheduler", "rng", "resume")


def load_checkpoint(path: Path) -> dict[str, Any]:
    """The checkpoint's payload, refused (ResumeError naming the file) unless it has the layout
    `save_checkpoint` writes: a dict of CHECKPOINT_KEYS with dicts and a list where they belong."""
    if not path.is_file():
        raise ResumeError(f"no checkpoint at {path}; start without --resume")
    try:
        payload: Any = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # corrupt file: torch raises many types
        raise ResumeError(f"checkpoint {path} is unreadable ({err}); start again without --resume") from err
    if not isinstance(payload, dict):
        raise ResumeError(f"checkpoint {path} holds a {type(payload).__name__}, not a training checkpoint; "
                          "delete it and start again without --resume")
    missing = [key for key in CHECKPOINT_KEYS if key not in payload]
    wrong = [key for key in CHECKPOINT_KEYS if key in payload
             and not isinstance(payload[key], list if key == "rng" else dict)]
    if missing or wrong:
        raise ResumeError(f"checkpoint {path} is not a training checkpoint of this toolkit (missing "
                          f"{missing or 'nothing'}, wrong type {wrong or 'nothing'}); delete it and start "
                          "again without --resume")
    return payload


def check_resume_state(saved: dict[str, Any], expected: ResumeState, path: Path) -> ResumeState:
    """The saved state must come from the same seed, config, data, world size and base weights as this run."""
    names = {f.name for f in fields(ResumeState)}
    unknown, missing = sorted(set(saved) - names), sorted(names - set(saved))
    if unknown or missing:  # another toolkit version's layout: its resume state cannot be trusted
        raise ResumeError(f"checkpoint {path} has a resume state this toolkit does not read (unknown "
                          f"{unknown or 'nothing'}, missing {missing or 'nothing'}); finish it with the "
                          "toolkit version that wrote it, or delete it and start again without --resume")
    state = ResumeState(**saved)
    mismatches = [
        f"{name}: checkpoint has {getattr(state, name)!r}, this run has {getattr(expected, name)!r}"
        for name in ("seed", "config_fingerprint", "data", "world_size", "base_weights_sha256")
        if getattr(state, name) != getattr(expected, name)
    ]
    if mismatches:
        raise ResumeError(f"checkpoint {path} belongs to a different run ({'; '.join(mismatches)}); "
                          "resume with the same config, snapshot, base model and number of processes, or "
                          "start afresh")
    return state


def resume_state_dict(state: ResumeState) -> dict[str, Any]:
    return asdict(state)
