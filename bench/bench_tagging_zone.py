"""Cost of the memory zone around each tagging batch (toolkit.ingest.tagging): captions/s of the tagger with
it and of the same pipeline without it, taking turns on the same captions so load hits both alike.

    OMP_NUM_THREADS=1 python bench/bench_tagging_zone.py [--captions 3000] [--rounds 4]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

from bench_ingest import caption

from toolkit.ingest import load_tagger


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--captions", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    tagger = load_tagger()
    rng = random.Random(0)
    # every caption distinct, with a new number: the strings a zone frees
    texts = [f"{caption(rng)} in shot {index}" for index in range(2 * args.captions)]

    def without_zone(batch: Sequence[str]) -> Any:
        return tagger.tag(batch, memory_zone=False)

    ways: dict[str, Callable[[Sequence[str]], Any]] = {"zone": tagger.tag, "no_zone": without_zone}
    for way in ways.values():
        way(texts[:300])  # warm both
    rates: dict[str, list[float]] = {name: [] for name in ways}
    for round_ in range(args.rounds):
        order = list(ways) if round_ % 2 == 0 else list(reversed(ways))
        chunk = texts[(round_ % 2) * args.captions:(round_ % 2 + 1) * args.captions]
        for name in order:
            started = time.perf_counter()
            ways[name](chunk)
            rates[name].append(len(chunk) / (time.perf_counter() - started))
    medians = {name: statistics.median(values) for name, values in rates.items()}
    print({name: [round(v) for v in values] for name, values in rates.items()})
    print(f"median captions/s: zone {medians['zone']:.0f}, no zone {medians['no_zone']:.0f}, "
          f"ratio {medians['zone'] / medians['no_zone']:.3f}")


if __name__ == "__main__":
    main()
