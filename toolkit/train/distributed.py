"""Process-group plumbing for DDP launched by torchrun; every helper is a no-op in a single process.

torchrun sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT. We use NCCL on CUDA and
gloo on CPU. `all_gather_with_grad` is what the contrastive losses need: every rank sees every
rank's embeddings, and the gradient of each gathered row flows back to the rank that produced it.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.distributed as dist

from toolkit.adapters.devices import resolve_device


def env_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main_process() -> bool:
    return rank() == 0


def init_distributed(device: str) -> torch.device:
    """Join the torchrun process group if WORLD_SIZE > 1; return the device this rank should use."""
    chosen = resolve_device(device)
    if chosen.type == "cuda":
        chosen = torch.device("cuda", local_rank())  # torchrun gives each rank its own GPU
        torch.cuda.set_device(chosen)
    if env_world_size() > 1 and not dist.is_initialized():
        backend = "nccl" if chosen.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend)
    return chosen


def cleanup_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def broadcast_object(value: Any, src: int = 0) -> Any:
    """Rank `src`'s Python object on every rank (e.g. a temp-dir name chosen on rank 0)."""
    if not is_distributed():
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=src)
    return holder[0]


def all_reduce_mean(value: torch.Tensor) -> torch.Tensor:
    """Mean over ranks of a detached tensor (for logging)."""
    if not is_distributed():
        return value
    value = value.detach().clone()
    dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value / world_size()


class _AllGatherWithGrad(torch.autograd.Function):
    """Concatenate every rank's [B, D] into [world*B, D]; backward sums the incoming gradients over
    ranks (each rank's loss touches every row) and returns this rank's slice."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor) -> torch.Tensor:
        ctx.batch = tensor.shape[0]
        gathered = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
        dist.all_gather(gathered, tensor.contiguous())
        return torch.cat(gathered, dim=0)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> torch.Tensor:
        grad = grad_output.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = dist.get_rank() * ctx.batch
        return grad[start : start + ctx.batch]


def all_gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """[B, ...] on each rank -> [world*B, ...] in rank order, differentiable. Every rank must pass the
    same B. Identity when not distributed."""
    if not is_distributed():
        return tensor
    gathered: torch.Tensor = _AllGatherWithGrad.apply(tensor)
    return gathered


class TextTower(torch.nn.Module):
    """The trained side of a micro-batch as one forward: the caption texts and, if any, the anchor texts.

    It exists so the text tower can run inside DistributedDataParallel, whose reducer all-reduces each
    bucket of gradients as soon as backward has produced it (overlapping communication with the rest of
    backward) but only for work done within its forward. The adapter's `logit_scale` is used by the loss
    outside it and is still reduced by DDP's gradient hooks (it is a parameter of `model`).
    """

    def __init__(self, model: torch.nn.Module, encode_text: Any) -> None:
        super().__init__()
        self.model = model  # registers the parameters DDP reduces (frozen ones are skipped)
        self._encode_text = encode_text

    def forward(self, tokens: torch.Tensor,
                anchor_tokens: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        text = self._encode_text(tokens)
        return text, None if anchor_tokens is None else self._encode_text(anchor_tokens)


def wrap_text_tower(model: torch.nn.Module, encode_text: Any, device: torch.device) -> torch.nn.Module:
    """`TextTower`, inside DistributedDataParallel when distributed. Buffers are not broadcast each step
    (the frozen image tower's are identical on every rank, and the text tower has none that change)."""
    tower = TextTower(model, encode_text)
    if not is_distributed():
        return tower
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(tower, device_ids=[device] if device.type == "cuda" else None,
                                   broadcast_buffers=False)
