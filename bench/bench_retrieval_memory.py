"""Peak memory of retrieval scoring at COCO 5k size: the full cosine matrix against the blocked path.

    python bench/bench_retrieval_memory.py [--texts 25000] [--images 5000] [--dim 512]

Both paths score the same random embeddings in one run (numpy allocations traced with tracemalloc); the
ranks must agree, and the ratio of peaks is printed. No timing is asserted anywhere.
"""

from __future__ import annotations

import argparse
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import numpy as np

from toolkit.eval import metrics


def traced(run: Callable[[], Any]) -> tuple[Any, float, float]:
    """(result, peak MiB allocated during the call, seconds)."""
    tracemalloc.start()
    started = time.perf_counter()
    result = run()
    seconds = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1] / 2**20
    tracemalloc.stop()
    return result, peak, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=int, default=25000)
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--dim", type=int, default=512)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    images = rng.standard_normal((args.images, args.dim)).astype(np.float32)
    text_image = np.arange(args.texts) % args.images
    texts = images[text_image] + 6.0 * rng.standard_normal((args.texts, args.dim)).astype(np.float32)

    full, full_peak, full_s = traced(lambda: metrics.retrieval_from_similarities(
        metrics.cosine_matrix(texts, images), text_image))
    blocked, blocked_peak, blocked_s = traced(lambda: metrics.retrieval(images, texts, text_image))
    assert np.array_equal(full.text_ranks, blocked.text_ranks)
    assert np.array_equal(full.image_ranks, blocked.image_ranks)
    print(f"{args.texts} texts x {args.images} images, dim {args.dim}; identical ranks "
          f"(text R@1 {blocked.text_to_image.metrics['r1']:.1f})")
    print(f"full matrix: peak {full_peak:8.1f} MiB  {full_s:6.1f} s")
    print(f"blocked:     peak {blocked_peak:8.1f} MiB  {blocked_s:6.1f} s")
    print(f"peak memory ratio full/blocked: {full_peak / blocked_peak:.1f}x")


if __name__ == "__main__":
    main()
