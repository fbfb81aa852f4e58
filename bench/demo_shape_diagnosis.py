"""Why binding stays low in CLIC pairs (issue #19): can the image tower tell the shapes apart there at all?

    python bench/demo_shape_diagnosis.py pairs --model M [--train 400] [--test 200] [--scale 1.0] [--shapes a/b,c/d]
    python bench/demo_shape_diagnosis.py capacity --model M [--steps 1500] [--widths 64,128]

`pairs`: for each pair of shapes, a logistic-regression probe (toolkit.demo.probe) of the frozen, L2-normalised
image embedding on scenes of ONE object drawn as either shape (colour random), seen alone (`single`) and as
the top half of a CLIC pair above a random 2-3 object scene (`pair`). `--scale` draws the object that many
times larger (its centre pulled halfway to the middle so it stays in the frame): does it help in pairs?

`capacity`: the same question with direct supervision instead of a probe. A linear head on the normalised
embedding learns the shape (8-way) of the one object in a pair's top half, training the image tower with it,
from the model's own weights and from seeded random towers of the same architecture at each width. Test
accuracy on fresh scenes (chance 12.5). If the model's own tower learns it, the tower can see the shapes and
its pretraining did not ask for them hard enough; if no width learns it, the pixels are too few.

Scenes come from streams of their own (`shape-pairs-*`, `capacity-*`), never a domain, probe or kind-set
scene. One torch thread. Prints one JSON line per result and appends them to bench/results/demo-shape-diagnosis.jsonl.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from run_records import append_record, head_commit

RESULTS = Path("bench/results/demo-shape-diagnosis.jsonl")


def one_object_scene(stream: str, index: int, shapes: tuple[str, str]) -> tuple[Any, Any, bool]:
    """(probed scene, pair partner, label): one object of shapes[0] (even indices) or shapes[1]."""
    from toolkit.demo import scenes

    rng = scenes.scene_rng(0, stream, index)
    want = index % 2 == 0
    base = scenes.sample_scene(rng, 1)
    obj = base.objects[0]
    # a fresh jitter of its own colour, as the probes restyle objects (same draws, same scenes)
    rgb = scenes.jitter_colour(scenes.COLOURS[obj.colour], rng)
    obj = replace(obj, shape=shapes[0] if want else shapes[1], rgb=rgb)
    partner = scenes.sample_scene(rng, rng.choice((2, 3)))
    return scenes.Scene((obj,), base.background), partner, want


def scaled(scene: Any, scale: float) -> Any:
    from toolkit.demo.scenes import Scene

    return Scene(tuple(replace(o, radius=o.radius * scale, x=0.5 + (o.x - 0.5) / 2, y=0.5 + (o.y - 0.5) / 2)
                       for o in scene.objects), scene.background)


def shape_pair_probes(model: str, train: int, test: int, scale: float, pairs: list[tuple[str, str]]) -> dict[str, Any]:
    import torch

    from toolkit.adapters.loading import load_model
    from toolkit.demo import probe

    adapter = load_model(model)
    norm, size = adapter.image_norm, adapter.image_norm.size
    aspect = probe.pair_aspect(size)
    out: dict[str, Any] = {}
    for shapes in pairs:
        split_items = {}
        for split, count in (("train", train), ("test", test)):
            items = []
            for i in range(count):
                scene, partner, label = one_object_scene(f"shape-pairs-{shapes[0]}-{shapes[1]}-{split}", i, shapes)
                items.append(probe.ProbeItem(scaled(scene, scale) if scale != 1.0 else scene, partner, label))
            split_items[split] = items
        labels = {split: torch.tensor([item.label for item in items]) for split, items in split_items.items()}
        row = {}
        for view, probe_view in (("single", "single"), ("pair", "pair_first")):
            x = {split: probe.embed(adapter, probe.view_images(items, probe_view, norm, size, aspect))
                 for split, items in split_items.items()}
            row[view] = round(100 * probe.probe_accuracy(x["train"], labels["train"], x["test"], labels["test"]), 1)
        out["/".join(shapes)] = row
        print(json.dumps({"shapes": "/".join(shapes), **row}), flush=True)
    return out


def capacity(model: str, steps: int, widths: list[int], train: int = 6000, test: int = 1000) -> dict[str, Any]:
    import torch

    from toolkit.adapters.loading import load_model
    from toolkit.adapters.open_clip_adapter import _build
    from toolkit.demo import scenes
    from toolkit.demo.pretrain import image_uint8, normalise
    from toolkit.demo.probe import half_tile

    source: Any = load_model(model)  # an open_clip model: its config is read for the random towers
    size = source.image_norm.size

    def data(split: str, count: int) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = [], []
        for i in range(count):
            rng = scenes.scene_rng(0, f"capacity-{split}", i)
            scene = scenes.sample_scene(rng, 1)
            partner = scenes.sample_scene(rng, rng.choice((2, 3)))
            halves = [image_uint8(half_tile(scenes.render(s, size), size // 2, size)) for s in (scene, partner)]
            images.append(torch.cat(halves, dim=1))  # top / bottom, as square images are paired
            labels.append(scenes.SHAPES.index(scene.objects[0].shape))
        return torch.stack(images), torch.tensor(labels)

    x_train, y_train = data("train", train)
    x_test, y_test = data("test", test)
    embed_dim = int(source.config["embed_dim"])
    towers: dict[str, Any] = {"own weights": source.model.visual}
    for width in widths:
        config = json.loads(json.dumps(source.config))
        config["vision_cfg"]["width"] = width
        torch.manual_seed(0)
        towers[f"random, width {width}"] = _build("capacity", config).visual
    out: dict[str, Any] = {}
    for name, visual in towers.items():
        torch.manual_seed(0)
        visual.train()
        head = torch.nn.Linear(embed_dim, len(scenes.SHAPES))
        optimiser = torch.optim.AdamW([*visual.parameters(), *head.parameters()], lr=1e-3, weight_decay=0.05)
        generator = torch.Generator().manual_seed(0)
        curve = []
        for step in range(1, steps + 1):
            lr = 1e-3 * min(1.0, step / 100) * 0.5 * (1 + math.cos(math.pi * step / steps))
            for group in optimiser.param_groups:
                group["lr"] = lr
            batch = torch.randint(0, len(x_train), (64,), generator=generator)
            logits = head(torch.nn.functional.normalize(visual(normalise(x_train[batch], source)), dim=-1) * 10)
            loss = torch.nn.functional.cross_entropy(logits, y_train[batch])
            optimiser.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            optimiser.step()
            if step % 500 == 0 or step == steps:
                visual.eval()
                with torch.inference_mode():
                    predicted = torch.cat([head(torch.nn.functional.normalize(
                        visual(normalise(x_test[i:i + 250], source)), dim=-1) * 10).argmax(-1)
                        for i in range(0, len(x_test), 250)])
                visual.train()
                accuracy = round(100 * float((predicted == y_test).double().mean()), 1)
                curve.append([step, accuracy])
                print(json.dumps({"tower": name, "step": step, "loss": round(float(loss.detach()), 3),
                                  "test_accuracy": accuracy}), flush=True)
        out[name] = curve
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", choices=("pairs", "capacity"))
    parser.add_argument("--model", required=True)
    parser.add_argument("--train", type=int, default=400)
    parser.add_argument("--test", type=int, default=200)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--shapes", default=None, help="comma-separated a/b pairs (default: all 28)")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--widths", default="64,128", help="random towers to train too (\"\" for none)")
    args = parser.parse_args()

    import torch

    from toolkit.demo.scenes import SHAPES

    torch.set_num_threads(1)
    commit = head_commit()
    started = time.perf_counter()
    if args.part == "pairs":
        pairs: list[tuple[str, str]] = (
            [(a, b) for a, _, b in (p.partition("/") for p in args.shapes.split(","))] if args.shapes
            else list(itertools.combinations(SHAPES, 2)))
        results = shape_pair_probes(args.model, args.train, args.test, args.scale, pairs)
        settings = {"train": args.train, "test": args.test, "scale": args.scale}
    else:
        results = capacity(args.model, args.steps, [int(w) for w in args.widths.split(",") if w])
        settings = {"steps": args.steps, "widths": args.widths}
    record = {"part": args.part, "model": args.model, "settings": settings, "commit": commit,
              "recorded": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "seconds": round(time.perf_counter() - started, 1), "results": results}
    append_record(RESULTS, record)


if __name__ == "__main__":
    main()
