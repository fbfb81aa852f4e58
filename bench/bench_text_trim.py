"""Training's text step on the used context only (`ClipAdapter.encode_text_trimmed`) against the full context,
side by side: forward + backward of the text tower for one batch of real captions.

The texts are SugarCrepe positives (COCO captions, tests/fixtures, MIT), joined in pairs as CLIC joins two images'
first sentences ("c1. c2.") or alone as on single images ("c1."); ViT-B-32 pads every text to 77 tokens, the
demo's tiny model to 32. The embeddings must be the same (the max difference is printed), the time should not.

    python bench/bench_text_trim.py [--texts 64] [--repeats 3] [--out bench/results/text-trim.md]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from toolkit.adapters.loading import load_model
from toolkit.adapters.open_clip_adapter import OpenClipAdapter, trim_padding

SUBSET = Path("tests/fixtures/sugarcrepe/subset.json")


def clic_texts(count: int, pairs: bool) -> list[str]:
    """'c1. c2.' from consecutive SugarCrepe positives, as CLIC joins two images' first sentences, or 'c1.'
    alone (single images, concatenate = false)."""
    captions = [item["caption"].strip().rstrip(".") for item in json.loads(SUBSET.read_text(encoding="utf-8"))]
    if not pairs:
        return [f"{captions[i % len(captions)]}.".lower() for i in range(count)]
    return [f"{captions[i % len(captions)]}. {captions[(i + 1) % len(captions)]}.".lower() for i in range(count)]


def step_seconds(encoders: list[Callable[[torch.Tensor], torch.Tensor]], model: torch.nn.Module,
                 tokens: torch.Tensor, repeats: int) -> list[float]:
    """Median seconds of forward + backward per encoder, the encoders alternating so drift hits both alike."""
    times: list[list[float]] = [[] for _ in encoders]
    for repeat in range(repeats + 1):  # the first round warms up
        for encode, kept in zip(encoders, times, strict=True):
            model.zero_grad()
            started = time.perf_counter()
            encode(tokens).sum().backward()  # type: ignore[no-untyped-call]
            if repeat:
                kept.append(time.perf_counter() - started)
    return [statistics.median(kept) for kept in times]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=int, default=64, help="texts per step (CLIC: 5 per image)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("bench/results/text-trim.md"))
    args = parser.parse_args()
    torch.manual_seed(0)
    models = {"ViT-B-32 (random weights)": OpenClipAdapter.create("ViT-B-32", None),
              "demo two-stage base": load_model("toolkit/demo/base-two-stage")}
    rows = []
    for (name, adapter), pairs in ((item, pairs) for item in models.items() for pairs in (True, False)):
        tokens = adapter.tokenize(clic_texts(args.texts, pairs))
        model = adapter.model
        model.train()
        full, trimmed = step_seconds([adapter.encode_text, adapter.encode_text_trimmed], model, tokens,
                                     args.repeats)
        with torch.no_grad():
            model.eval()
            difference = float((adapter.encode_text(tokens) - adapter.encode_text_trimmed(tokens)).abs().max())
        rows.append(f"| {name} | {'c1. c2.' if pairs else 'c1.'} | {tokens.shape[1]} | "
                    f"{trim_padding(tokens).shape[1]} | {full * 1000:.0f} | {trimmed * 1000:.0f} | "
                    f"{full / trimmed:.2f} | {difference:.1e} |")
        print(rows[-1], flush=True)
    report = "\n".join([
        "# Text step on the used context against the full context (bench/bench_text_trim.py)", "",
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, cpu_count {os.cpu_count()}, torch threads "
        f"{torch.get_num_threads()}, load average {os.getloadavg()}; {args.texts} texts per step (SugarCrepe "
        f"positives: pairs as CLIC joins them, or single first sentences), forward + backward of the text tower, "
        f"median of {args.repeats}, full and trimmed alternating.", "",
        "| model | texts | context | used columns | full ms | trimmed ms | speed-up | max abs difference |",
        "|---|---|---|---|---|---|---|---|", *rows, ""])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report, encoding="utf-8")
    print(report)


if __name__ == "__main__":
    main()
