"""bench/ablation_demo.py's rows: each a valid training config on the demo's settings that changes only
what its name says."""

from __future__ import annotations

import sys

from tests.helpers import REPO

sys.path.insert(0, str(REPO / "bench"))

from ablation_demo import DEMO_ROW, variants

from toolkit.demo.chain import DEMO_TRAIN_CONFIG
from toolkit.train.config import TrainConfig


def test_each_row_changes_only_what_its_name_says() -> None:
    demo = TrainConfig.from_file(DEMO_TRAIN_CONFIG)
    rows = variants(demo)
    assert rows["base"] is None and rows[DEMO_ROW] == demo

    def changed(config: TrainConfig) -> dict[str, object]:
        ours, theirs = demo.to_dict(), config.to_dict()
        return {key: theirs[key] for key in ours if ours[key] != theirs[key]}

    pairs = rows["CLIC pairs, the paper's recipe"]
    assert pairs.concatenate and pairs.generators == ("swap_across",) and pairs.loss.sneg == 0.5
    assert set(changed(pairs)) == {"concatenate", "precompute_image_features", "generators", "mix_generators",
                                   "generator_weights", "loss"}
    assert changed(rows["single image, reference loss weights"]) == {"loss": {**demo.to_dict()["loss"], "sneg": 0.5}}
    assert changed(rows["single image, generators weighted equally"]) == {"generator_weights": ()}
