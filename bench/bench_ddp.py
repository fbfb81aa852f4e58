"""DDP gradient overlap against averaging by hand after backward, side by side in one run.

Two CPU processes (gloo), one thread each, train the same CLIP-style text transformer on the same batches
both ways, alternating the two ways step by step so machine load falls on both alike:

- manual: backward, then one all-reduce of all gradients flattened (what the recipe did before);
- ddp: the model inside DistributedDataParallel, whose buckets are all-reduced while backward still runs.

Prints the median step time of each and the ratio ddp/manual (below 1: overlap pays), and checks both ways
give the same gradients. Each result is printed as a JSON line as soon as it is measured.

    python bench/bench_ddp.py --width 512 --layers 6 --steps 12
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel


class TextTransformer(nn.Module):
    def __init__(self, width: int, layers: int, context: int = 77, vocab: int = 49408) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.position = nn.Parameter(torch.randn(context, width) * 0.01)
        layer = nn.TransformerEncoderLayer(width, width // 64, 4 * width, dropout=0.0, batch_first=True,
                                           norm_first=True, activation="gelu")
        self.blocks = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.projection = nn.Linear(width, width, bias=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        hidden = self.blocks(self.embed(tokens) + self.position)
        return self.projection(hidden[:, -1])


def _step(model: nn.Module, tokens: torch.Tensor, target: torch.Tensor) -> None:
    loss = nn.functional.mse_loss(model(tokens), target)
    loss.backward()  # type: ignore[no-untyped-call]


def _manual_average(model: nn.Module) -> None:
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for grad in grads:
        grad.copy_(flat[offset:offset + grad.numel()].view_as(grad))
        offset += grad.numel()


def _worker(rank: int, args: argparse.Namespace, port: int, queue: mp.Queue) -> None:  # type: ignore[type-arg]
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.manual_seed(0)
    manual = TextTransformer(args.width, args.layers)
    wrapped = TextTransformer(args.width, args.layers)
    wrapped.load_state_dict(manual.state_dict())
    ddp = DistributedDataParallel(wrapped)
    data = torch.Generator().manual_seed(rank)
    times: dict[str, list[float]] = {"manual": [], "ddp": []}
    max_diff = 0.0
    for step in range(args.steps + 2):  # the first two of each: warm-up, not timed
        tokens = torch.randint(0, 49408, (args.batch, 77), generator=data)
        target = torch.randn(args.batch, args.width, generator=data)
        for way in (("manual", "ddp") if step % 2 else ("ddp", "manual")):
            model = manual if way == "manual" else ddp
            model.zero_grad(set_to_none=True)
            dist.barrier()
            start = time.perf_counter()
            _step(model, tokens, target)
            if way == "manual":
                _manual_average(manual)
            dist.barrier()  # both ranks done: the same end point for both ways
            if step >= 2:
                times[way].append(time.perf_counter() - start)
        max_diff = max(max_diff, max(float((a.grad - b.grad).abs().max())  # type: ignore[operator]
                                     for a, b in zip(manual.parameters(), wrapped.parameters(), strict=True)))
    if rank == 0:
        queue.put({"manual_s": statistics.median(times["manual"]), "ddp_s": statistics.median(times["ddp"]),
                   "max_grad_diff": max_diff})
    dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=12)
    args = parser.parse_args()
    print(json.dumps({"part": "machine", "cpu_count": os.cpu_count(), "loadavg_1min": os.getloadavg()[0]}),
          flush=True)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    context = mp.get_context("spawn")
    queue = context.Queue()
    mp.start_processes(_worker, args=(args, port, queue), nprocs=2, start_method="spawn")
    result = queue.get()
    params = sum(p.numel() for p in TextTransformer(args.width, args.layers).parameters())
    print(json.dumps({"part": "ddp_overlap", "params_m": round(params / 1e6, 1), "batch_per_rank": args.batch,
                      "manual_step_s": round(result["manual_s"], 3), "ddp_step_s": round(result["ddp_s"], 3),
                      "ratio_ddp_over_manual": round(result["ddp_s"] / result["manual_s"], 3),
                      "max_grad_diff": result["max_grad_diff"], "loadavg_1min": os.getloadavg()[0]}), flush=True)


if __name__ == "__main__":
    main()
