"""Why does CLIC gain on one demo base and not on another? (issue #19) Validation sets only.

    python bench/demo_clic_diagnosis.py --workspace W --base MODEL --label NAME [--set key=JSON ...]

W is a workspace `toolkit demo run` has filled (its data, catalog and snapshot are reused). CLIC trains the
base's text tower on that snapshot with the demo's settings (toolkit/demo/clic-demo.toml) and `--set`
overrides (e.g. --set 'generators=["swap_relation","replace"]' --set mix_generators=true), then base and
trained model are scored on:

- the *validation* sets of the demo (the test items are never read here), per kind in unseen wordings;
- fresh scenes in the *training* wordings ("{a} {rel} {b}."), from a stream of their own: positive against
  its objects swapped, its relation replaced by the opposite, its colours swapped. Pairwise accuracy (%),
  chance 50. If a kind does not move here, no wording question arises: training did not teach it at all;
- `clic/hard_negative_accuracy`, the share of training positives closer to their image than the hard
  negative, from the run's MLflow metrics (first and last logged values, and the mean of the last ten).

Appends one JSON line to bench/results/demo-clic-diagnosis.jsonl and prints it.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from run_records import append_record, head_commit

RESULTS = Path("bench/results/demo-clic-diagnosis.jsonl")
OPPOSITE = {"left": "right", "right": "left", "above": "below", "below": "above"}
NEGATIVE_KINDS = ("swap_obj", "replace_rel", "swap_att")


@dataclass(frozen=True)
class WordingItem:
    scene: Any
    positive: str
    negatives: dict[str, str]  # kind -> caption


def wording_item(scene: Any) -> WordingItem:
    """A scene's first two objects captioned in the training frame "{a} {rel} {b}.", one negative per kind."""
    from toolkit.demo import scenes

    a, b = scene.objects[:2]
    rel = scenes.relation(a, b)
    phrase, opposite = scenes.RELATION_PHRASES[rel], scenes.RELATION_PHRASES[OPPOSITE[rel]]
    first, second = scenes.with_article(a.noun_phrase), scenes.with_article(b.noun_phrase)
    swapped = (scenes.with_article(f"{b.colour} {a.shape}"), scenes.with_article(f"{a.colour} {b.shape}"))
    return WordingItem(scene, f"{first} {phrase} {second}.", {
        "swap_obj": f"{second} {phrase} {first}.",
        "replace_rel": f"{first} {opposite} {second}.",
        "swap_att": f"{swapped[0]} {phrase} {swapped[1]}.",
    })


def training_wording_items(count: int, seed: int = 7, stream: str = "diagnosis-training-wording") -> list[WordingItem]:
    """Fresh two-object scenes of `stream`, each as a `wording_item`."""
    from toolkit.demo import scenes

    return [wording_item(scenes.sample_scene(scenes.scene_rng(seed, stream, index), 2)) for index in range(count)]


def wording_image_embeddings(adapter: Any, items: list[WordingItem]) -> Any:
    """The items' scenes rendered at the model's input size and embedded by its frozen image tower."""
    import torch

    from toolkit.demo import scenes
    from toolkit.demo.probe import embed, single_view

    size = adapter.image_norm.size
    return embed(adapter, torch.stack([single_view(scenes.render(item.scene, size), adapter.image_norm)
                                       for item in items]))


def wording_accuracy(adapter: Any, items: list[WordingItem], image: Any) -> dict[str, float]:
    """Pairwise accuracy (%) per negative kind: the positive closer to its image than that kind's negative."""
    import torch

    with torch.inference_mode():
        positive = (image * adapter.encode_text(adapter.tokenize([i.positive for i in items]), normalize=True)).sum(-1)
        out = {}
        for kind in NEGATIVE_KINDS:
            negative = adapter.encode_text(adapter.tokenize([i.negatives[kind] for i in items]), normalize=True)
            out[kind] = round(100.0 * float((positive > (image * negative).sum(-1)).double().mean()), 1)
    return out


def training_wording_accuracy(model: str, items: list[WordingItem]) -> dict[str, float]:
    from toolkit.adapters.loading import load_model

    adapter = load_model(model)
    return wording_accuracy(adapter, items, wording_image_embeddings(adapter, items))


def hard_negative_accuracy(trained: Path) -> dict[str, float]:
    from toolkit.tracking import tracking_client

    run_id = json.loads((trained / "model.json").read_text(encoding="utf-8"))["mlflow_run_id"]
    history = sorted(tracking_client().get_metric_history(run_id, "clic/hard_negative_accuracy"),
                     key=lambda m: m.step)
    if not history:
        raise SystemExit(f"run {run_id} logged no clic/hard_negative_accuracy (trained before the metric existed?)")
    last = [m.value for m in history[-10:]]
    return {"first": round(history[0].value, 3), "last": round(history[-1].value, 3),
            "mean_of_last_10": round(sum(last) / len(last), 3), "logged": len(history)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workspace", type=Path, required=True)
    parser.add_argument("--base", type=Path, required=True)
    parser.add_argument("--label", required=True)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=JSON")
    parser.add_argument("--wording-items", type=int, default=600)
    args = parser.parse_args()
    workspace = args.workspace.resolve()
    # the code that runs is the code at the start; HEAD may move during a half-hour run
    commit = head_commit()
    os.environ.setdefault("TOOLKIT_WORKSPACE", str(workspace))  # the run is tracked in the workspace's MLflow

    from toolkit.catalog import open_store
    from toolkit.catalog.snapshot import resolve_snapshot
    from toolkit.demo.chain import (
        DEMO_TRAIN_CONFIG,
        DemoInputs,
        DemoSettings,
        headline_metrics,
        held_out_benchmarks,
        train_candidate,
    )
    from toolkit.demo.generate import paths_under
    from toolkit.eval.benchmarks import load_benchmarks
    from toolkit.eval.evaluate import evaluate
    from toolkit.train.config import TrainConfig

    db_url = f"sqlite:///{workspace / 'demo' / 'catalog.db'}"
    store = open_store(db_url)
    try:
        with store.session() as session:
            snapshot = resolve_snapshot(session, "latest").content_hash
    finally:
        store.close()
    overrides = {key: json.loads(value) for key, _, value in (item.partition("=") for item in args.set)}
    config = TrainConfig.from_file(DEMO_TRAIN_CONFIG).with_overrides(**overrides)
    settings = DemoSettings(workspace=workspace, db_url=db_url)
    data = paths_under(workspace / "demo" / "data")
    inputs = DemoInputs(data, args.base.resolve(), snapshot)
    started = time.perf_counter()
    trained = train_candidate(settings, inputs, config, args.label)
    train_seconds = round(time.perf_counter() - started, 1)
    report = evaluate([str(inputs.base), str(trained)], load_benchmarks(held_out_benchmarks(data.validation)))
    items = training_wording_items(args.wording_items)
    record = {
        "label": args.label, "base": str(args.base), "settings": args.set, "snapshot": snapshot[:12],
        "commit": commit,
        "recorded": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "train_seconds": train_seconds,
        "validation": {"base": headline_metrics(report.results[str(inputs.base)]),
                       "trained": headline_metrics(report.results[str(trained)])},
        "training_wording": {"items": len(items), "base": training_wording_accuracy(str(inputs.base), items),
                             "trained": training_wording_accuracy(str(trained), items)},
        "hard_negative_accuracy": hard_negative_accuracy(trained),
    }
    append_record(RESULTS, record)
    print(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
