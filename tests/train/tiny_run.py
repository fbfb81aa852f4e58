"""A tiny CPU training run in its own process (for the SIGKILL-resume and torchrun DDP tests).

    python tests/train/tiny_run.py --spec open_clip:cfg.json@w.safetensors --out DIR [--resume]
        [--kill-after-step N] [--batch-size 4] [--max-steps 6] [--samples 24] [--anchors]

Under torchrun each rank reads its own share of every global batch from the synthetic source.
"""

from __future__ import annotations

import argparse
import os
import signal
from pathlib import Path
from typing import Any

import torch

from toolkit.adapters.loading import load_model
from toolkit.data.batches import SyntheticBatchSource
from toolkit.train import distributed as dist_utils
from toolkit.train.recipe import TrainConfig, run_training


class KillAfterStep:
    """A tracker that SIGKILLs its own process right after step N's update, before that step's checkpoint."""

    def __init__(self, step: int | None) -> None:
        self.step = step

    def log_params(self, params: dict[str, Any]) -> None:
        pass

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        if self.step is not None and step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)

    def log_artifact(self, path: str) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--spec", required=True)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--kill-after-step", type=int)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-steps", type=int, default=6)
    parser.add_argument("--samples", type=int, default=24)
    parser.add_argument("--grad-accum", type=int, default=1)
    parser.add_argument("--anchors", action="store_true", help="add the anchor term (3 of 5 texts per step)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    device = dist_utils.init_distributed("cpu")
    adapter = load_model(args.spec)
    source = SyntheticBatchSource(args.samples, args.batch_size, adapter.image_norm.size, adapter.tokenize,
                                  seed=3, rank=dist_utils.rank(), world_size=dist_utils.world_size())
    config = TrainConfig(batch_size=args.batch_size, max_steps=args.max_steps, lr=1e-3, min_lr=1e-5,
                         checkpoint_every=2, log_every=1, progress=False, grad_accum=args.grad_accum, seed=7,
                         anchor_weight=5.0 if args.anchors else 0.0, anchor_batch=3)
    anchors = ["a photo of a dog.", "a red circle.", "the blue square.", "a tree.", "two cats."]
    run_training(config, adapter, source, args.out, {"base": args.spec},
                 KillAfterStep(args.kill_after_step), resume=args.resume, anchor_texts=anchors)
    del device


if __name__ == "__main__":
    main()
