"""Ingest benchmark, side by side in one run:

1. rows/s of `ingest_source` on SQLite and on PostgreSQL for the same generated manifest;
2. captions/s per core of POS tagging: the reference's per-caption `nlp()` (full pipeline) against our
   batched, tagger-only `nlp.pipe`, as a ratio.

    python bench/bench_ingest.py --rows 20000 --pg-url postgresql+psycopg://toolkit:toolkit@127.0.0.1/toolkit_test
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from pathlib import Path

from PIL import Image as PILImage

from toolkit.catalog import open_store
from toolkit.core.config import IngestConfig
from toolkit.ingest import ingest_source, load_tagger

COLOURS = ["red", "blue", "green", "yellow", "purple", "orange", "white", "black"]
SHAPES = ["cube", "ball", "cone", "ring", "star", "box", "disc", "cup"]
RELATIONS = ["left of", "right of", "above", "below", "behind", "in front of"]


def caption(rng: random.Random) -> str:
    a, b = rng.sample(COLOURS, 2)
    s, t = rng.sample(SHAPES, 2)
    first = f"A {rng.choice(['small', 'large'])} {a} {s} {rng.choice(RELATIONS)} a {b} {t}."
    return f"{first} The {t} is {rng.choice(['shiny', 'matte', 'striped'])}. It sits on a {rng.choice(COLOURS)} table."


def make_manifest(base: Path, rows: int, captions_per_image: int = 4) -> Path:
    rng = random.Random(0)
    images = base / "images"
    images.mkdir(parents=True)
    lines = []
    for i in range(rows):
        index = i // captions_per_image
        if i % captions_per_image == 0:
            size = (48, 32) if index % 2 else (32, 48)
            PILImage.new("RGB", size, (index % 251, (index // 251) % 251, 7)).save(images / f"{index}.png")
        lines.append(json.dumps({"image": f"images/{index}.png", "caption": caption(rng)}))
    manifest = base / "manifest.jsonl"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


def bench_store(url: str, manifest: Path, tagger, blob_dir: Path) -> dict[str, float]:  # type: ignore[no-untyped-def]
    store = open_store(url)
    start = time.perf_counter()
    report = ingest_source(store, manifest, IngestConfig(images_root=manifest.parent, commit_every=1000),
                           blob_dir=blob_dir, tagger=tagger)
    seconds = time.perf_counter() - start
    store.close()
    return {"rows": report.rows_read, "seconds": round(seconds, 2), "rows_per_s": round(report.rows_read / seconds, 1),
            "captions_added": report.captions_added}


def bench_tagging(sample: int) -> dict[str, float]:
    rng = random.Random(1)
    captions = [caption(rng) for _ in range(sample)]
    tagger = load_tagger()
    full = tagger._full_pipeline()
    for text in captions[:50]:  # warm both paths
        full(text)
    tagger.tag(captions[:50])
    start = time.perf_counter()
    for text in captions:
        full(text)
    per_call = sample / (time.perf_counter() - start)
    start = time.perf_counter()
    tagger.tag(captions)
    batched = sample / (time.perf_counter() - start)
    return {"captions": sample, "per_caption_nlp_per_s": round(per_call, 1), "batched_pipe_per_s": round(batched, 1),
            "ratio": round(batched / per_call, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--pg-url", default=os.environ.get("TOOLKIT_TEST_PG_URL"))
    parser.add_argument("--tag-sample", type=int, default=2000)
    args = parser.parse_args()
    # One thread each so "per core" means per core.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    results: dict[str, object] = {"cpu_count": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        manifest = make_manifest(base, args.rows)
        tagger = load_tagger()
        results["sqlite"] = bench_store(f"sqlite:///{base / 'bench.db'}", manifest, tagger, base / "blobs")
        if args.pg_url:
            from toolkit.catalog.db import recreate_database

            results["postgres"] = bench_store(recreate_database(args.pg_url, "bench_ingest"), manifest, tagger,
                                              base / "blobs")
    results["tagging"] = bench_tagging(args.tag_sample)
    print(json.dumps(results, indent=2))
    print(f"ingest rows/s   sqlite {results['sqlite']['rows_per_s']}"  # type: ignore[index]
          + (f" | postgres {results['postgres']['rows_per_s']}" if "postgres" in results else ""))  # type: ignore[index]
    tagging = results["tagging"]
    print(f"tagging captions/s per core: per-caption nlp() {tagging['per_caption_nlp_per_s']} | batched tagger-only "  # type: ignore[index]
          f"pipe {tagging['batched_pipe_per_s']} | ratio {tagging['ratio']}x")  # type: ignore[index]


if __name__ == "__main__":
    main()
