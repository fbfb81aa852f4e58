"""Do the image-tower probe figures hang on the probe's settings? (a check on bench/probe_image_tower.py)

    python bench/probe_sensitivity.py [--model DIR] [--out bench/results/probe-image-tower-sensitivity.txt]

For the cells near chance or in between (relations on single images, binding in the top half of a pair):
K = 4 combinations, 2,000 training scenes each (4x the default) and 500 test scenes, a probe per training
size (500, 2,000) and L2 strength (1e-4 … 1e-1). If relations stay near chance with 4x the data and any
regularisation, the probe is not what is missing. One torch thread; under 2 minutes on one idle core.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

CELLS = (("relation_horizontal", "single"), ("relation_vertical", "single"), ("binding", "pair_first"))
TRAIN_SIZES = (500, 2000)
L2S = (1e-4, 1e-3, 1e-2, 1e-1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=Path("toolkit/demo/base"))
    parser.add_argument("--out", type=Path, default=Path("bench/results/probe-image-tower-sensitivity.txt"))
    parser.add_argument("--combinations", type=int, default=4)
    args = parser.parse_args()

    import torch

    from toolkit.adapters.loading import load_model
    from toolkit.demo import probe

    torch.set_num_threads(1)
    adapter = load_model(str(args.model))
    norm = adapter.image_norm
    aspect = probe.pair_aspect(64)
    started = time.perf_counter()
    lines = [f"# bench/probe_sensitivity.py --model {args.model}: test accuracy % (mean ± SE over "
             f"K = {args.combinations}), 500 test scenes per combination, 1 torch thread"]
    for task, view in CELLS:
        accuracies: dict[tuple[int, float], list[float]] = {}
        for k, combo in enumerate(probe.combinations(task, 0, args.combinations)):
            train = probe.probe_items(task, combo, k, 0, "train", max(TRAIN_SIZES))
            test = probe.probe_items(task, combo, k, 0, "test", 500)
            train_y = torch.tensor([item.label for item in train])
            test_y = torch.tensor([item.label for item in test])
            train_x = probe.embed(adapter, probe.view_images(train, view, norm, 64, aspect))
            test_x = probe.embed(adapter, probe.view_images(test, view, norm, 64, aspect))
            for n in TRAIN_SIZES:
                for l2 in L2S:
                    accuracy = probe.probe_accuracy(train_x[:n], train_y[:n], test_x, test_y, l2)
                    accuracies.setdefault((n, l2), []).append(100 * accuracy)
        for (n, l2), values in accuracies.items():
            mean, se = probe.mean_and_standard_error(values)
            lines.append(f"{task:20s} {view:11s} n_train {n:5d}  l2 {l2:g}:  {mean:5.1f} ± {se:.1f}")
            print(lines[-1], flush=True)
    lines.append(f"# {time.perf_counter() - started:.0f} s, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
