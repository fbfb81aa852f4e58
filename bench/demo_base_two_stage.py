"""Pretrain a two-stage demo base (toolkit.demo.two_stage) with some settings changed, then probe its image tower.

    python bench/demo_base_two_stage.py --name e1 --set stage_a.steps=3000 --set embed_dim=128

Writes the model to <workdir>/<name>/ and appends one JSON line (settings, timings, probe figures) to
bench/results/demo-base-two-stage.jsonl. Probe scenes are the probes' own held-out streams; the kinds' test sets
are not touched. Quick probe sizes by default (K = 4, 300 / 200 scenes); --full for the committed sizes.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from run_records import append_record, head_commit

RESULTS = Path("bench/results/demo-base-two-stage.jsonl")


def with_setting(config: Any, dotted: str, raw: str) -> Any:
    """`config` with one (possibly nested) field replaced; the value is parsed as JSON, else kept a string."""
    head, _, rest = dotted.partition(".")
    if rest:
        return replace(config, **{head: with_setting(getattr(config, head), rest, raw)})
    if not hasattr(config, head):
        raise SystemExit(f"{type(config).__name__} has no setting {head!r}")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return replace(config, **{head: value})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", required=True)
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/demo-base-two-stage"))
    parser.add_argument("--full", action="store_true", help="probe at the committed sizes (K = 8, 500 / 300)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    import torch

    from toolkit.adapters.loading import load_model
    from toolkit.demo.probe import ProbeConfig, run_probes
    from toolkit.demo.two_stage import TwoStageConfig, pretrain_two_stage

    # the code that runs is the code at the start; HEAD may move during a half-hour run
    commit = head_commit()
    config = replace(TwoStageConfig(), threads=args.threads)
    for item in args.set:
        key, _, value = item.partition("=")
        config = with_setting(config, key, value)
    out = args.workdir / args.name
    started = time.perf_counter()

    def progress(stage: str, step: int, loss: float) -> None:
        if step % 250 == 0:
            print(f"[{args.name}] stage {stage} step {step} loss {loss:.3f} ({time.perf_counter() - started:.0f} s)",
                  flush=True)

    summary = pretrain_two_stage(out, config, on_step=progress)
    torch.set_num_threads(args.threads)
    probe_config = ProbeConfig(render_size=config.image_size) if args.full else ProbeConfig(
        combinations=4, train_items=300, test_items=200, render_size=config.image_size)
    adapter = load_model(str(out))
    probes = run_probes(adapter, probe_config, say=lambda line: print(f"[{args.name}] {line}", flush=True))
    record = {"name": args.name, "commit": commit, "settings": args.set, "config": asdict(config),
              "probe_config": asdict(probe_config),
              "seconds": {k: summary[k] for k in summary if k.endswith("seconds")},
              "load_average": os.getloadavg(), "probes": probes,
              "final_loss": {"A": summary["stage_a_loss_every_50_steps"][-1],
                             "B": summary["stage_b_loss_every_50_steps"][-1]}}
    append_record(RESULTS, record)
    brief = {task: {view: round(per["views"][view]["mean"], 1) for view in ("single", "pair")}
             for task, per in probes.items()}
    print(json.dumps(brief))


if __name__ == "__main__":
    main()
