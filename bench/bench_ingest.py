"""Ingest benchmark, side by side in one run:

1. workers: rows/s of `toolkit ingest` with 1 worker and with all cores on real-size JPEGs (640x480, about
   80 KB, three-sentence captions), against the measured decode+tag ceiling (one process's per-row cost of
   decoding, hashing and tagging, times the cores); then peak RSS of the writer and of the largest worker at
   two sizes (flat memory: the same peak at 10k and 200k rows). Each ingest runs in a fresh process.
2. rows/s of `ingest_source` on SQLite and on PostgreSQL for the same generated manifest;
3. captions/s per core of POS tagging: the reference's per-caption `nlp()` (full pipeline) against our
   batched, tagger-only `nlp.pipe`, as a ratio.

Every part prints a JSON line as soon as it is measured, and appends it to --out if given.

    python bench/bench_ingest.py --parts workers --jpeg-rows 3000 --rss-rows 10000,200000 --repeats 3
    python bench/bench_ingest.py --rows 20000 --pg-url postgresql+psycopg://toolkit:toolkit@127.0.0.1/toolkit_test
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image as PILImage

from toolkit.catalog import open_store
from toolkit.core.config import IngestConfig
from toolkit.ingest import ingest_source, load_tagger
from toolkit.ingest.parallel import default_workers
from toolkit.ingest.validate import inspect_image

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


def make_jpeg_manifest(base: Path, rows: int, images: int | None = None, size: tuple[int, int] = (640, 480),
                       sentences: int = 3) -> Path:
    """`images` distinct photo-like JPEGs (smooth colour fields plus sensor-like noise: about 80 KB at
    640x480, quality 85), one caption of `sentences` sentences per row, every caption distinct."""
    rng, text_rng = np.random.default_rng(0), random.Random(0)
    folder = base / "jpegs"
    folder.mkdir(parents=True, exist_ok=True)
    images = images or rows
    for index in range(images):
        low = rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)
        smooth = np.asarray(PILImage.fromarray(low).resize(size, PILImage.Resampling.BICUBIC), np.int16)
        pixels = np.clip(smooth + rng.normal(0, 8, smooth.shape), 0, 255).astype(np.uint8)
        PILImage.fromarray(pixels).save(folder / f"{index}.jpg", quality=85)
    lines = []
    for row in range(rows):
        parts = caption(text_rng).rstrip(".").split(". ")[:sentences]
        parts[-1] += f" in shot {row}"  # every caption distinct: no duplicate skips its tagging
        text = ". ".join(parts) + "."
        lines.append(json.dumps({"image": f"jpegs/{row % images}.jpg", "caption": text}))
    manifest = base / f"jpeg-{rows}.jsonl"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


def ingest_in_child(manifest: Path, url: str, workers: int) -> dict[str, float]:
    """One ingest in a fresh process: rows/s, and the peak RSS of the writer and of its largest worker."""
    out = subprocess.run([sys.executable, __file__, "--child", str(manifest), url, str(workers)],
                         capture_output=True, text=True, check=True)
    measured: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return measured


def peak_rss_mb(pid: int | str = "self") -> int | None:
    """A process's own peak RSS (VmHWM), None once it has gone. Not getrusage's ru_maxrss: Linux carries that
    over from the parent at fork and through exec, so a child started by a big parent reports the parent's
    size (the writer's 112 / 149 MB at 80k / 200k rows were this bench's own manifest lists, not the ingest)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024)
    except OSError:
        return None
    return None


def child_pids() -> list[int]:
    pids: list[int] = []
    for task in Path("/proc/self/task").iterdir():
        pids += [int(pid) for pid in (task / "children").read_text().split()]
    return pids


def child(manifest: Path, url: str, workers: int) -> None:
    store = open_store(url)
    commits: list[tuple[float, int]] = []  # (time, rows) at each committed chunk
    worker_peaks: dict[int, int] = {}  # read while they run: they are gone when ingest_source returns

    def committed(report: Any) -> None:
        commits.append((time.perf_counter(), report.rows_read))
        for pid in child_pids():
            if (peak := peak_rss_mb(pid)) is not None:
                worker_peaks[pid] = max(peak, worker_peaks.get(pid, 0))

    start = time.perf_counter()
    report = ingest_source(store, manifest, IngestConfig(images_root=manifest.parent), blob_dir=manifest.parent / "b",
                           workers=workers, on_progress=committed)
    seconds = time.perf_counter() - start
    store.close()
    # Steady state, without start-up (tagger loads, pipeline fill): from the end of the first round of
    # chunks to the last commit. N workers finish their first N chunks together, so counting from the
    # first commit would credit N-1 chunks to almost no time (the earlier figures did: 1.25x too high for
    # 2 workers on 6 chunks).
    (first_at, first_rows), (last_at, last_rows) = commits[min(workers, len(commits)) - 1], commits[-1]
    steady = (last_rows - first_rows) / (last_at - first_at) if last_at > first_at else float("nan")
    def cpu_s(who: int) -> float:  # workers count once they have exited (the pool joins them)
        usage = resource.getrusage(who)
        return usage.ru_utime + usage.ru_stime

    print(json.dumps({"workers": workers, "rows": report.rows_read, "seconds": round(seconds, 2),
                      "rows_per_s": round(report.rows_read / seconds, 1), "steady_rows_per_s": round(steady, 1),
                      # CPU per row does not depend on what else the machine runs, unlike rows/s
                      "writer_cpu_ms_per_row": round(1000 * cpu_s(resource.RUSAGE_SELF) / report.rows_read, 2),
                      "workers_cpu_ms_per_row": round(1000 * cpu_s(resource.RUSAGE_CHILDREN) / report.rows_read, 2),
                      "writer_peak_rss_mb": peak_rss_mb(),
                      "largest_worker_peak_rss_mb": max(worker_peaks.values()) if workers > 1 else None}))


def decode_tag_ceiling(manifest: Path, sample: int, cores: int) -> dict[str, float]:
    """Per-row seconds of decode+hash+validate and of tagging in this one process; the ceiling for `cores`
    workers is cores / (decode + tag): perfect scaling, nothing spent on reading, writing or transfers."""
    rows = [json.loads(line) for line in manifest.read_text().splitlines()[:sample]]
    tagger = load_tagger()
    limits = IngestConfig(images_root=manifest.parent).images
    tagger.tag([r["caption"] for r in rows[:20]])  # warm up
    start = time.perf_counter()
    for row in rows:
        inspect_image((manifest.parent / row["image"]).read_bytes(), limits, row["image"])
    decode = (time.perf_counter() - start) / len(rows)
    from toolkit.core.text import split_sentences

    sentences = [s for r in rows for s in split_sentences(r["caption"])]
    start = time.perf_counter()
    tagger.tag(sentences)
    tag = (time.perf_counter() - start) / len(rows)
    return {"decode_rows_per_s_per_core": round(1 / decode, 1), "tag_rows_per_s_per_core": round(1 / tag, 1),
            "ceiling_rows_per_s_1": round(1 / (decode + tag), 1),
            f"ceiling_rows_per_s_{cores}": round(cores / (decode + tag), 1)}


def bench_workers(base: Path, rows: int, rss_rows: list[int], repeats: int, emit: Any) -> None:
    cores = default_workers()
    manifest = make_jpeg_manifest(base / "speed", rows)
    jpeg_kb = sum(p.stat().st_size for p in (base / "speed" / "jpegs").glob("*.jpg")) / rows / 1024
    every: dict[int, list[dict[str, float]]] = {}
    # The ingests run first, before the ceiling loads a tagger here (peaks are read per process, see
    # `peak_rss_mb`, so this no longer matters for memory; it keeps the machine's state the same as before).
    # 1 worker and all cores take turns, so a change in the machine's load hits both; each figure below is
    # the median of its runs.
    for repeat in range(repeats):
        for workers in sorted({1, cores}):
            url = f"sqlite:///{base / f'w{workers}-{repeat}.db'}"
            every.setdefault(workers, []).append(ingest_in_child(manifest, url, workers))
            emit(f"ingest_workers_{workers}", {**every[workers][-1], "repeat": repeat,
                                               "loadavg_1min": os.getloadavg()[0]})
    runs = {workers: {key: statistics.median(run[key] for run in done)
                      for key in ("rows_per_s", "steady_rows_per_s")} for workers, done in every.items()}
    # Peak memory against length: small images and short captions, so 200k rows take minutes, not hours;
    # five captions per image as in COCO (the writer's duplicate check reads every caption of a chunk's images).
    for count in rss_rows:
        small = make_jpeg_manifest(base / f"rss{count}", count, images=count // 5, size=(64, 48), sentences=1)
        emit(f"rss_{count}_rows", ingest_in_child(small, f"sqlite:///{base / f'rss{count}.db'}", cores))
    ceiling = decode_tag_ceiling(manifest, min(rows, 400), cores)
    emit("ceiling", {**ceiling, "mean_jpeg_kb": round(jpeg_kb, 1)})
    emit("workers_summary", {
        "cores": cores, "repeats": repeats, "rows_per_s_1": runs[1]["rows_per_s"],
        f"rows_per_s_{cores}": runs[cores]["rows_per_s"],
        "speedup_wall": round(runs[cores]["rows_per_s"] / runs[1]["rows_per_s"], 2),
        "speedup_steady": round(runs[cores]["steady_rows_per_s"] / runs[1]["steady_rows_per_s"], 2),
        "share_of_ceiling_steady": round(runs[cores]["steady_rows_per_s"] / ceiling[f"ceiling_rows_per_s_{cores}"], 2),
        "share_of_ceiling_steady_1": round(runs[1]["steady_rows_per_s"] / ceiling["ceiling_rows_per_s_1"], 2),
        "loadavg_1min": os.getloadavg()[0]})

def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--child":
        child(Path(sys.argv[2]), sys.argv[3], int(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default="workers,store,tagging")
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--jpeg-rows", type=int, default=3000)
    parser.add_argument("--rss-rows", default="10000,200000")
    parser.add_argument("--repeats", type=int, default=1, help="runs of 1 worker and of all cores, taking turns")
    parser.add_argument("--pg-url", default=os.environ.get("TOOLKIT_TEST_PG_URL"))
    parser.add_argument("--tag-sample", type=int, default=2000)
    parser.add_argument("--out", type=Path, help="append each result here as a JSON line")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    # One thread each so "per core" means per core.
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    def emit(name: str, values: dict[str, Any]) -> None:
        line = json.dumps({"part": name, **values})
        print(line, flush=True)
        if args.out:
            with args.out.open("a") as handle:
                handle.write(line + "\n")

    emit("machine", {"cpu_count": os.cpu_count(), "usable_cores": default_workers(),
                     "loadavg_1min": os.getloadavg()[0]})
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        if "workers" in parts:
            bench_workers(base, args.jpeg_rows, [int(n) for n in args.rss_rows.split(",") if n], args.repeats,
                          emit)
        if "store" in parts:
            manifest = make_manifest(base / "store", args.rows)
            tagger = load_tagger()
            emit("sqlite", bench_store(f"sqlite:///{base / 'bench.db'}", manifest, tagger, base / "blobs"))
            if args.pg_url:
                from toolkit.catalog.db import recreate_database

                emit("postgres", bench_store(recreate_database(args.pg_url, "bench_ingest"), manifest, tagger,
                                             base / "blobs"))
    if "tagging" in parts:
        emit("tagging", bench_tagging(args.tag_sample))


if __name__ == "__main__":
    main()
