"""Ablation on the generated demo domain, in the manner of the CLIC paper's table.

Rows, all from the same base and the same snapshot, scored on the same held-out items:
- base: the demo's base CLIP (the two-stage model), untouched;
- CLIC pairs, the paper's recipe: concatenated pairs, swap_across negatives, the reference loss weights;
- single image, reference loss weights: the demo's settings with the sentence-negative weight back at 0.5;
- single image, generators weighted equally: the demo's settings without generator_weights;
- demo settings: toolkit/demo/clic-demo.toml as `toolkit demo run` trains it;
- demo settings + WiSE-FT: that run blended back towards the base, alpha chosen on the validation sets
  (never on the test items below), which is the candidate `toolkit demo run` reports.

Every fine-tuned row changes only what its name says. Columns: swap-attribute pairwise accuracy (SugarCrepe
style), ITT and TOT (SugarCrepe++ style), two-object retrieval R@5 (mean of both directions), zero-shot top-1
over 80 classes, the stored domain test set, and ITT per composition kind on wordings kept out of training.
Nothing here picks a setting: the table only reports, and every row is a look at the test items.

    python bench/ablation_demo.py [--workspace DIR] [--config TOML] [--out bench/results/ablation-demo]

It reuses the workspace of `toolkit demo run` (same data, base, catalog and trained run); rows that are
already trained are reused too. About 6 minutes per single-image row and 25 per pair row on 2 idle cores.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

from toolkit.demo.kinds import KINDS

COLUMNS = (("swap_att_acc", "swap-att acc"), ("swap_att_itt", "swap-att ITT"), ("swap_att_tot", "swap-att TOT"),
           ("retrieval_r5", "R@5"), ("zeroshot_top1", "zero-shot"), ("domain_acc", "domain"),
           # one column per composition kind: ITT on wordings kept out of training (issue #19)
           *((f"kind_{kind}_itt", f"{kind} ITT, unseen wording") for kind in KINDS))


DEMO_ROW = "demo settings"


def variants(config: Any) -> dict[str, Any]:
    """Row label -> training config (None for the base). DEMO_ROW is the demo's own setting."""
    return {
        "base": None,
        "CLIC pairs, the paper's recipe": config.with_overrides(
            concatenate=True, precompute_image_features=False, generators=["swap_across"], mix_generators=False,
            generator_weights=[], **{"loss.sneg": 0.5}),
        "single image, reference loss weights": config.with_overrides(**{"loss.sneg": 0.5}),
        "single image, generators weighted equally": config.with_overrides(generator_weights=[]),
        DEMO_ROW: config,
    }


def markdown_table(rows: dict[str, dict[str, float]], base: str = "base") -> str:
    """Scores with the change over the base in brackets, one row per variant."""
    head = "| variant | " + " | ".join(label for _, label in COLUMNS) + " |"
    lines = [head, "|" + "---|" * (len(COLUMNS) + 1)]
    for name, figures in rows.items():
        cells = []
        for key, _ in COLUMNS:
            value = figures[key]
            delta = "" if name == base else f" ({value - rows[base][key]:+.1f})"
            cells.append(f"{value:.1f}{delta}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workspace", type=Path, default=None,
                        help="toolkit workspace (default $TOOLKIT_WORKSPACE or ./toolkit-workspace)")
    parser.add_argument("--config", type=Path, default=None, help="training settings (default: the demo's)")
    parser.add_argument("--out", type=Path, default=Path("bench/results/ablation-demo"),
                        help="writes <out>.md and <out>.json")
    args = parser.parse_args()

    from toolkit.core.config import workspace_dir
    from toolkit.demo.chain import (
        DEMO_TRAIN_CONFIG,
        DemoSettings,
        benchmarks_for,
        blend_on_validation,
        headline_metrics,
        make_training_tiles,
        prepare,
        train_candidate,
    )
    from toolkit.eval.benchmarks import load_benchmark, parse_benchmark_spec
    from toolkit.eval.evaluate import evaluate
    from toolkit.train.config import TrainConfig

    workspace = args.workspace or workspace_dir()
    settings = DemoSettings(workspace=workspace, db_url=f"sqlite:///{workspace / 'demo' / 'catalog.db'}",
                            train_config=args.config or DEMO_TRAIN_CONFIG)
    config = TrainConfig.from_file(settings.train_config).with_overrides(progress=False)
    inputs = prepare(settings, say=print)
    configs = variants(config)
    if any(row is not None and not row.precompute_image_features for row in configs.values()):
        make_training_tiles(settings, inputs.base, inputs.snapshot, say=print)  # rows that read pixels every step
    models: dict[str, str] = {}
    seconds: dict[str, float] = {}
    for name, variant in configs.items():
        if variant is None:
            models[name] = str(inputs.base)
            continue
        label = "clic" if variant == config else "ablation"
        started = time.perf_counter()
        models[name] = str(train_candidate(settings, inputs, variant, label, say=print))
        seconds[name] = round(time.perf_counter() - started, 1)
    blend = blend_on_validation(settings, inputs, Path(models[DEMO_ROW]), say=print)
    alpha = "none passed" if blend.alpha is None else f"{blend.alpha:g}"
    models[f"{DEMO_ROW} + WiSE-FT (alpha {alpha}, chosen on validation)"] = str(blend.model)
    specs = benchmarks_for(inputs.data, inputs.snapshot)
    benchmarks = [load_benchmark(parse_benchmark_spec(spec), None, settings.db_url) for spec in specs]
    report = evaluate(list(dict.fromkeys(models.values())), benchmarks)  # alpha 1 is the trained model itself
    rows = {name: headline_metrics(report.results[model]) for name, model in models.items()}
    table = markdown_table(rows)
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text(
        f"# Ablation on the generated demo domain\n\n`python bench/ablation_demo.py` on {os.cpu_count()} "
        f"cores; training settings {settings.train_config.name}; held-out items only; points, change over "
        f"the base in brackets.\n\n{table}\n", encoding="utf-8")
    args.out.with_suffix(".json").write_text(json.dumps(
        {"rows": rows, "models": models, "train_seconds": seconds, "wise_ft_validation": blend.validation,
         "wise_ft_validation_standard_errors": blend.standard_errors, "wise_ft_confidence_z": blend.confidence_z,
         "train_config": config.to_dict(), "benchmarks": specs}, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
