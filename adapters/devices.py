"""Which torch device a model runs on, checked before any work starts."""

from __future__ import annotations

import torch

from toolkit.core.errors import InputError


class DeviceError(InputError):
    """A device (--device, --approve-device) that is not a torch device, or one this machine lacks."""


def resolve_device(name: str) -> torch.device:
    """`name` as a torch device, refused with a clear message when this machine cannot run it (torch's own
    error for a CPU-only build is an AssertionError deep inside `.to()`)."""
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise DeviceError(f"device {name!r} is not a torch device (cpu, cuda, cuda:1, ...): {err}") from err
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"device {name!r} was asked for but torch {torch.__version__} sees no CUDA device"
                              f"{'' if torch.version.cuda else ' (a CPU-only build)'}; use cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DeviceError(f"device {name!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device
