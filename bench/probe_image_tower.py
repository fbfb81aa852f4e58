"""Linear probes of the frozen image tower (issue #19): does the image embedding carry colour–shape binding
and spatial relations, linearly, for single images and for CLIC pairs?

    python bench/probe_image_tower.py [--model DIR ...] [--out bench/results/probe-image-tower]
                                      [--combinations K] [--train N] [--test N] [--tasks a,b]

For each model (default: the committed demo base, toolkit/demo/base) and each task of toolkit.demo.probe,
K attribute combinations get one logistic-regression probe each on the L2-normalised image embedding; the
table gives the test accuracy (%) mean over the K probes ± its standard error. `pair` is the mean of the
probed scene in the first (top) and the second (bottom) half of the concatenated training image; both
halves are in the second table and in the JSON. The third table is the cosine gap between the classes'
mean embeddings: accuracy on standardised features says the property is there, the gap says how much of
the embedding it takes, which bounds what a text tower can read at its logit scale. Several --model folders
are reported side by side.
One torch thread; 378 s for one model at the default sizes on the 2-core dev machine shared with other jobs.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from run_records import head_commit

DEFAULT_MODEL = Path("toolkit/demo/base")


def _cell(figures: dict[str, Any]) -> str:
    return f"{figures['mean']:.1f} ± {figures['standard_error']:.1f}"


def markdown_tables(results: dict[str, dict[str, Any]], tasks: list[str]) -> str:
    """Rows = models; columns = task × {single, pair}; then the two halves of the pair per task; then the
    class gaps."""
    head = "| model | " + " | ".join(f"{task} single | {task} pair" for task in tasks) + " |"
    lines = [head, "|" + "---|" * (1 + 2 * len(tasks))]
    for model, per_task in results.items():
        cells = [f"{_cell(per_task[t]['views']['single'])} | {_cell(per_task[t]['views']['pair'])}" for t in tasks]
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    lines += ["", "| model | " + " | ".join(f"{task} top | {task} bottom" for task in tasks) + " |",
              "|" + "---|" * (1 + 2 * len(tasks))]
    for model, per_task in results.items():
        cells = [f"{_cell(per_task[t]['views']['pair_first'])} | {_cell(per_task[t]['views']['pair_second'])}"
                 for t in tasks]
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    lines += ["", "Distance between the two classes' mean unit image embeddings (`class_gap`, test scenes), the most "
              "a unit text embedding's cosine with the image can move by reading the property:", "",
              "| model | " + " | ".join(f"{task} single | {task} pair" for task in tasks) + " |",
              "|" + "---|" * (1 + 2 * len(tasks))]
    for model, per_task in results.items():
        cells = [" | ".join(_gap_cell(per_task[t]["views"][view]["cosine_gap"]) for view in ("single", "pair"))
                 for t in tasks]
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _gap_cell(figures: dict[str, Any]) -> str:
    return f"{figures['mean']:.3f} ± {figures['standard_error']:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, action="append", default=None,
                        help="a model folder load_model reads (repeat for several; default toolkit/demo/base)")
    parser.add_argument("--out", type=Path, default=Path("bench/results/probe-image-tower"),
                        help="writes <out>.md and <out>.json")
    parser.add_argument("--combinations", type=int, default=None, help="K combinations per task")
    parser.add_argument("--train", type=int, default=None, help="training scenes per combination")
    parser.add_argument("--test", type=int, default=None, help="test scenes per combination")
    parser.add_argument("--tasks", default=None, help="comma-separated subset of the tasks")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    import torch

    from toolkit.adapters.loading import load_model
    from toolkit.demo.probe import ProbeConfig, run_probes

    torch.set_num_threads(args.threads)
    commit = head_commit()  # the code that runs is the code at the start
    defaults = ProbeConfig()
    config = ProbeConfig(
        combinations=args.combinations or defaults.combinations,
        train_items=args.train or defaults.train_items,
        test_items=args.test or defaults.test_items,
        tasks=tuple(args.tasks.split(",")) if args.tasks else defaults.tasks,
    )
    models = args.model or [DEFAULT_MODEL]
    load_before = os.getloadavg()
    started = time.perf_counter()
    results: dict[str, dict[str, Any]] = {}
    seconds: dict[str, float] = {}
    for folder in models:
        t0 = time.perf_counter()
        adapter = load_model(str(folder))
        adapter.model.eval()

        def say(line: str, name: str = str(folder)) -> None:
            print(f"[{name}] {line}", flush=True)

        # Scenes rendered at the model's input size, as the demo stores them for it (64 px for the alt-text
        # model, 128 px for the two-stage base): each model is probed on the images it would be shown.
        results[str(folder)] = run_probes(adapter, replace(config, render_size=adapter.image_norm.size), say=say)
        seconds[str(folder)] = round(time.perf_counter() - t0, 1)
    wall = round(time.perf_counter() - started, 1)
    load_after = os.getloadavg()
    tasks = list(config.tasks)
    table = markdown_tables(results, tasks)
    print(table)

    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    note = (f"`python bench/probe_image_tower.py {' '.join(f'--model {m}' for m in models)}` at {commit}, "
            f"{stamp}; {args.threads} torch thread(s); K = {config.combinations} combinations per task, "
            f"{config.train_items} train / {config.test_items} test scenes per combination; logistic regression "
            f"(LBFGS, L2 {config.l2}) on the standardised, L2-normalised image embedding. Test accuracy in %, "
            f"mean over the K probes ± standard error; chance is 50. Wall time {wall} s "
            f"({', '.join(f'{m}: {s} s' for m, s in seconds.items())}); load average before "
            f"{load_before[0]:.2f}, after {load_after[0]:.2f} (`uptime` at the end: {uptime}).")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text(
        "# Linear probes of the frozen image tower\n\n" + note + "\n\n" + table + "\n", encoding="utf-8")
    record = {"config": asdict(config), "commit": commit, "recorded": stamp, "wall_seconds": wall,
              "seconds_per_model": seconds, "load_average_before": load_before, "load_average_after": load_after,
              "uptime": uptime, "threads": args.threads, "results": results}
    args.out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
