"""CLIC training throughput on a CPU host, side by side: torch threads against DataLoader workers.

On a small machine the training process's torch threads and the data path share the same cores: with
num_workers = 0 every sample is planned, read and tokenised between the steps, and torch's intra-op threads
(one per core by default) mostly wait on tiny tensors. Each variant runs the same training (the workspace's
latest snapshot, `toolkit demo`'s CLIC config with the given overrides) for --steps steps in a fresh process,
one after another, and reports optimizer steps per second of training (setup excluded: the trainer's own
elapsed time), with each variant's ratio to the first, and each process's whole wall time (setup included:
loading, the catalog, and e.g. image features computed once). A variant may carry settings of its own as a
third element, e.g. [1, 1, {"precompute_image_features": true}].

    python bench/bench_train_cpu.py --workspace W [--base MODEL] [--steps 300] [--set KEY=JSON ...]
        [--variants '[[threads, workers(, {settings})], ...]'] [--out bench/results/train-cpu.md] [--append]

W is a workspace `toolkit demo run` (or bench/demo_clic_diagnosis.py's preparation) filled; nothing is kept.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from run_records import head_commit

# One training run in a child process (its torch threads must be set before torch starts working).
CHILD = r"""
import json, sys
from pathlib import Path
import torch
threads, workspace, base, out = int(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], Path(sys.argv[4])
overrides = json.loads(sys.argv[5])
torch.set_num_threads(threads)
from toolkit.demo.chain import DEMO_TRAIN_CONFIG
from toolkit.train.config import TrainConfig
from toolkit.train.job import train_on_snapshot
config = TrainConfig.from_file(DEMO_TRAIN_CONFIG).with_overrides(**overrides)
train_on_snapshot(base, "latest", out, config, f"sqlite:///{workspace / 'demo' / 'catalog.db'}", track=False,
                  workspace=workspace)
"""
ELAPSED = re.compile(r"step (\d+)/\d+ .*elapsed (\d+):(\d+):(\d+)")


def run_variant(threads: int, workers: int, args: argparse.Namespace,
                overrides: dict[str, object]) -> tuple[float, float]:
    """Steps per second of one variant, from the trainer's last progress line (setup not counted), and the
    child process's wall seconds."""
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        settings = overrides | {"num_workers": workers, "max_steps": args.steps, "log_every": 10,
                                "progress": True, "checkpoint_every": 10 * args.steps}
        env = os.environ | {"OMP_NUM_THREADS": str(threads)}
        done = subprocess.run([sys.executable, "-c", CHILD, str(threads), str(args.workspace), str(args.base),
                               str(Path(tmp) / "run"), json.dumps(settings)],
                              capture_output=True, text=True, env=env)
        if done.returncode:
            raise SystemExit(f"variant threads={threads} workers={workers} failed:\n{done.stderr[-3000:]}")
        lines = ELAPSED.findall(done.stderr + done.stdout)
        if not lines:
            raise SystemExit(f"variant threads={threads} workers={workers} printed no progress line")
        step, hours, minutes, seconds = (int(x) for x in lines[-1])
        return step / max(1, hours * 3600 + minutes * 60 + seconds), time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workspace", type=Path, required=True)
    parser.add_argument("--base", type=Path, default=Path("toolkit/demo/base-two-stage"))
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=JSON")
    parser.add_argument("--variants", default="[[2, 0], [1, 0], [1, 1], [2, 1]]",
                        help="[torch threads, DataLoader workers] pairs; the first is the reference")
    parser.add_argument("--out", type=Path, default=Path("bench/results/train-cpu.md"))
    parser.add_argument("--append", action="store_true", help="add this run's section to --out instead of "
                        "replacing the file")
    args = parser.parse_args()
    overrides = {key: json.loads(value) for key, _, value in (item.partition("=") for item in args.set)}
    variants = [(v[0], v[1], v[2] if len(v) > 2 else {}) for v in json.loads(args.variants)]
    commit, started = head_commit(), time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    results = []
    for threads, workers, own in variants:
        results.append(run_variant(threads, workers, args, overrides | own))
        print(f"threads {threads}, workers {workers}, {own or 'no settings of its own'}: "
              f"{results[-1][0]:.2f} steps/s, {results[-1][1]:.0f} s in all", flush=True)
    reference = results[0][0]
    rows = [f"| {t} | {w} | {own or ''} | {rate:.2f} | {rate / reference:.2f} | {wall:.0f} |"
            for (t, w, own), (rate, wall) in zip(variants, results, strict=True)]
    report = "\n".join([
        "# CLIC training throughput on CPU: torch threads against DataLoader workers (bench/bench_train_cpu.py)",
        "",
        f"{started}, commit {commit}, cpu_count {os.cpu_count()}, load average {os.getloadavg()} after the runs; "
        f"{args.steps} steps per variant, one after another, workspace {args.workspace}, base {args.base}, "
        f"overrides {overrides or 'none'}.",
        "",
        "| torch threads | DataLoader workers | its own settings | steps/s | ratio to the first | process wall s |",
        "|---|---|---|---|---|---|",
        *rows, ""])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.append and args.out.is_file():
        report = args.out.read_text(encoding="utf-8").rstrip("\n") + "\n\n" + report.replace("# CLIC", "## CLIC", 1)
    args.out.write_text(report, encoding="utf-8")
    print(report)


if __name__ == "__main__":
    main()
