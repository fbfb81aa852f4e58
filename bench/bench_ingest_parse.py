"""Ingest with the stored parse against the tagger-only ingest it replaced, side by side in one run (issue #16).

The parse (tagger + parser + lemmatizer at ingest, every token's fields stored) landed in 2db5d6d; its parent is
"today's" ingest of the issue. That code is exported from git history into a temporary folder (not kept as a
copy) and both versions ingest the same manifest into a fresh SQLite catalog, in fresh processes, taking turns
for --rounds rounds. Reported per version: the median rows/s (wall) and the median CPU-seconds per row of the
whole ingest (tagger loading included), and the ratios new/old. CPU per row hardly depends on what else the
machine runs; rows/s does.

Two manifests, 1 worker each (in the ingesting process, so its own CPU time is all of it):
- `small-png`: tiny PNGs and real COCO captions (the SugarCrepe positives): tagging is almost all of the cost,
  the worst case for the parse;
- `jpeg`: 640x480 photo-like JPEGs (about 80 KB) with three-sentence captions, as bench_ingest.py's workers part.

    python bench/bench_ingest_parse.py [--rows 3000] [--rounds 3] [--data ../shared/data/sugarcrepe]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path
from typing import Any

from PIL import Image as PILImage

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_ingest import make_jpeg_manifest
from bench_negatives import read_captions

ROOT = Path(__file__).resolve().parents[1]
PARSE_COMMIT = "2db5d6d"  # the stored parse; its parent is the tagger-only ingest

# Run in a child process with PYTHONPATH set to the version under test; prints one JSON line.
CHILD = """
import json, resource, sys, time
from pathlib import Path
import toolkit
from toolkit.catalog import open_store
from toolkit.core.config import IngestConfig
from toolkit.ingest import ingest_source
manifest, url = Path(sys.argv[1]), sys.argv[2]
start = time.perf_counter()
store = open_store(url)
report = ingest_source(store, manifest, IngestConfig(images_root=manifest.parent), blob_dir=Path(sys.argv[3]))
store.close()
seconds = time.perf_counter() - start
usage = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"package": toolkit.__file__, "rows": report.rows_read, "captions_added": report.captions_added,
                  "seconds": seconds, "cpu_s": usage.ru_utime + usage.ru_stime}))
"""


def export_old_tree(into: Path) -> Path:
    """The toolkit package as it was just before the parse landed."""
    archive = subprocess.run(["git", "archive", f"{PARSE_COMMIT}^", "toolkit"], cwd=ROOT, capture_output=True,
                             check=True).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


def small_png_manifest(base: Path, captions: list[str], rows: int) -> Path:
    folder = base / "png"
    folder.mkdir(parents=True)
    lines = []
    for index in range(rows):
        PILImage.new("RGB", (48, 32), (index % 251, (index // 251) % 251, 7)).save(folder / f"{index}.png")
        lines.append(json.dumps({"image": f"png/{index}.png", "caption": captions[index % len(captions)]}))
    manifest = base / "small-png.jsonl"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


def ingest_once(code_root: Path, manifest: Path, work: Path, label: str) -> dict[str, Any]:
    work.mkdir(parents=True)
    env = {**os.environ, "PYTHONPATH": str(code_root), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", CHILD, str(manifest), f"sqlite:///{work / 'catalog.db'}",
                          str(work / "blobs")], env=env, capture_output=True, text=True,
                         cwd=work)  # not the repository root: `python -c` puts the working folder first on sys.path
    if out.returncode != 0:
        raise RuntimeError(f"{label} ingest of {manifest.name} failed:\n{out.stderr[-3000:]}")
    measured: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    expected = code_root / "toolkit" / "__init__.py"
    if Path(measured["package"]).resolve() != expected.resolve():  # the other version must not leak in
        raise RuntimeError(f"{label} ran {measured['package']}, expected {expected}")
    return measured


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "sugarcrepe")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-ingest-parse-") as tmp:
        base = Path(tmp)
        versions = {"tagger-only (before 2db5d6d)": export_old_tree(base / "old"), "stored parse (this tree)": ROOT}
        manifests = {"small-png": small_png_manifest(base / "m1", read_captions(args.data), args.rows),
                     "jpeg": make_jpeg_manifest(base / "m2", args.rows, images=args.rows // 10)}
        print(f"{args.rows} rows per manifest, {args.rounds} rounds, 1 worker, load {os.getloadavg()[0]:.2f}",
              flush=True)
        for name, manifest in manifests.items():
            runs: dict[str, list[dict[str, Any]]] = {label: [] for label in versions}
            for round_ in range(args.rounds):
                for label, code_root in versions.items():
                    run_dir = base / "runs" / f"{name}-{round_}-{'new' if code_root == ROOT else 'old'}"
                    measured = ingest_once(code_root, manifest, run_dir, label)
                    runs[label].append(measured)
                    print(f"  {name} round {round_ + 1} {label}: {measured['rows'] / measured['seconds']:.1f} rows/s, "
                          f"{1000 * measured['cpu_s'] / measured['rows']:.2f} CPU ms/row", flush=True)
            summary = {label: {"rows_per_s": statistics.median(r["rows"] / r["seconds"] for r in rs),
                               "cpu_ms_per_row": statistics.median(1000 * r["cpu_s"] / r["rows"] for r in rs)}
                       for label, rs in runs.items()}
            old, new = summary.values()
            print(f"{name}: rows/s old {old['rows_per_s']:.1f} | new {new['rows_per_s']:.1f} | ratio "
                  f"{new['rows_per_s'] / old['rows_per_s']:.3f}x;  CPU ms/row old {old['cpu_ms_per_row']:.2f} | new "
                  f"{new['cpu_ms_per_row']:.2f} | rows per CPU-second ratio "
                  f"{old['cpu_ms_per_row'] / new['cpu_ms_per_row']:.3f}x  (target >= 0.6)", flush=True)
        print(f"load {os.getloadavg()[0]:.2f} at the end; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")


if __name__ == "__main__":
    main()
