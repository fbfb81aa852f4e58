"""Held-out test sets per composition kind, in wordings the training captions never use (issue #19).

Five kinds, each a SugarCrepe++-style set (an image, two positive captions in two different wordings, one
hard negative; ITT = both positives beat the negative):

    swap_att        two objects, their colours swapped        "a red circle together with a blue square."
    replace_att     one colour replaced by one not in the scene
    swap_obj        two objects around a relation, exchanged  "a red circle is placed above a blue square."
    replace_rel     the relation replaced by its opposite
    swap_att_three  three objects, two of their colours swapped

The first four are the public SugarCrepe++ subset names, written together in one folder (one benchmark,
`sugarcrepe_pp:<folder>/two_object`); the three-object set is a `swap_att.json` of its own folder
(`sugarcrepe_pp:<folder>/three_object`).

Wordings: every caption here is made from TEST_FRAMES only. The domain captions the model trains on come from
`toolkit.demo.scenes.domain_sentences`, whose sentence frames are listed in TRAIN_FRAMES; tests check that no
test frame occurs in any training caption, so a gain here is a gain on wordings never trained on. The words
themselves (colours, shapes, relation phrases) are the domain's: only how they are put together is new.

Sizes, decided before any candidate was scored on these sets: a change between two models scored on the same
n items has a standard error of at most sqrt(0.5 / n) when their per-item scores are not negatively correlated
(each accuracy's variance is at most 1/4). `items_for_standard_error(1.5)` = 2,223, so each test set holds
2,250 items; validation sets (for choosing settings, never reported) 750 each. Every set draws its scenes from
a stream of its own, so no scene is shared between kinds, groups, training or pretraining.
"""

from __future__ import annotations

import json
import math
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolkit.demo import scenes
from toolkit.demo.scenes import Scene, SceneObject

KINDS: tuple[str, ...] = ("swap_att", "replace_att", "swap_obj", "replace_rel", "swap_att_three")
MAX_STANDARD_ERROR = 1.5  # points, for a change between two models (issue #19)
TEST_ITEMS_PER_KIND = 2250
VALIDATION_ITEMS_PER_KIND = 750

# Sentence frames of the domain training captions (toolkit.demo.scenes.domain_sentences), for the check that
# no test frame occurs in them. {a}/{b}: "a red circle"; {the_a}/{the_b}: "the red circle"; {rel}: a relation.
TRAIN_FRAMES: tuple[str, ...] = (
    "{a} {rel} {b}.", "there is {a} {rel} {b}.", "{a} and {b}.",
    "the {shape} is {colour}.", "the {noun} is {size}.", "{the_a} is {rel} {the_b}.",
    "there are {count} shapes on a dark background.",
)
# Test-only frames. Relation frames hold {rel}; list frames hold two or three noun phrases and no relation.
TEST_RELATION_FRAMES: tuple[str, ...] = (
    "{a} is placed {rel} {b}.",
    "{a} can be seen {rel} {b}.",
    "in this image, {a} sits {rel} {b}.",
    "{rel} {b}, you can see {a}.",
)
TEST_LIST_FRAMES: tuple[str, ...] = (
    "{a} together with {b}.",
    "{a} alongside {b}.",
    "an image showing {a} as well as {b}.",
    "{a} plus {b}, nothing else.",
)
TEST_THREE_FRAMES: tuple[str, ...] = (
    "{a} together with {b} as well as {c}.",
    "an image showing {a}, {b}, {c}.",
    "three shapes: {a}, {b}, {c}.",
    "{a} alongside {b} plus {c}.",
)
TEST_FRAMES: tuple[str, ...] = TEST_RELATION_FRAMES + TEST_LIST_FRAMES + TEST_THREE_FRAMES
OPPOSITE_RELATION = {"left": "right", "right": "left", "above": "below", "below": "above"}


def items_for_standard_error(max_points: float, worst_variance: float = 0.5) -> int:
    """Items needed so a change between two models' accuracies on them has a standard error of at most
    `max_points` (`worst_variance` bounds the variance of one item's score difference)."""
    return math.ceil(worst_variance / (max_points / 100) ** 2)


@dataclass(frozen=True)
class KindItem:
    caption: str
    caption2: str
    negative_caption: str


def _np(obj: SceneObject, colour: str | None = None) -> str:
    return scenes.with_article(f"{colour or obj.colour} {obj.shape}")


def _relation_item(scene: Scene, rng: random.Random, negative: Callable[[str, str, str], tuple[str, str, str]]
                   ) -> KindItem:
    a, b = scene.objects
    rel = scenes.relation(a, b)
    first, second = rng.sample(list(TEST_RELATION_FRAMES), 2)

    def say(frame: str, x: str, where: str, y: str) -> str:
        return frame.format(a=x, b=y, rel=scenes.RELATION_PHRASES[where])

    neg_a, neg_rel, neg_b = negative(_np(a), rel, _np(b))
    return KindItem(say(first, _np(a), rel, _np(b)), say(second, _np(a), rel, _np(b)),
                    say(first, neg_a, neg_rel, neg_b))


def _list_item(objects: tuple[SceneObject, ...], colours: list[str], frames: tuple[str, ...],
               rng: random.Random) -> KindItem:
    first, second = rng.sample(list(frames), 2)
    names = "abc"[: len(objects)]
    positive = {name: _np(obj) for name, obj in zip(names, objects, strict=True)}
    negative = {name: _np(obj, colour) for name, obj, colour in zip(names, objects, colours, strict=True)}
    return KindItem(first.format(**positive), second.format(**positive), first.format(**negative))


def make_item(kind: str, scene: Scene, rng: random.Random) -> KindItem:
    """The kind's item for `scene` (two objects, or three for swap_att_three), wordings drawn with `rng`."""
    objects = scene.objects
    colours = [obj.colour for obj in objects]
    if kind == "swap_att":
        return _list_item(objects, colours[::-1], TEST_LIST_FRAMES, rng)
    if kind == "replace_att":
        which = rng.randrange(2)
        absent = [name for name in scenes.COLOURS if name not in colours]
        replaced = list(colours)
        replaced[which] = rng.choice(absent)
        return _list_item(objects, replaced, TEST_LIST_FRAMES, rng)
    if kind == "swap_obj":
        return _relation_item(scene, rng, lambda a, rel, b: (b, rel, a))
    if kind == "replace_rel":
        return _relation_item(scene, rng, lambda a, rel, b: (a, OPPOSITE_RELATION[rel], b))
    if kind == "swap_att_three":
        i, j = sorted(rng.sample(range(3), 2))
        swapped = list(colours)
        swapped[i], swapped[j] = swapped[j], swapped[i]
        return _list_item(objects, swapped, TEST_THREE_FRAMES, rng)
    raise ValueError(f"unknown composition kind {kind!r}; known kinds: {', '.join(KINDS)}")


def stream(kind: str, group: str) -> str:
    if group not in ("test", "validation"):
        raise ValueError(f"group must be test or validation, got {group!r}")
    return f"kinds-{group}-{kind}"


def kind_scene(seed: int, kind: str, group: str, index: int) -> tuple[Scene, random.Random]:
    """A scene for one item: distinct colours and shapes (so every negative is false of the image)."""
    rng = scenes.scene_rng(seed, stream(kind, group), index)
    return scenes.sample_scene(rng, 3 if kind == "swap_att_three" else 2), rng


def write_kind_sets(folder: Path, seed: int, group: str, items_per_kind: int, image_size: int) -> dict[str, int]:
    """`folder`/two_object/{swap_att,replace_att,swap_obj,replace_rel}.json and `folder`/three_object/swap_att.json,
    with their images/. Returns the item count per kind."""
    counts = {}
    for kind in KINDS:
        subset_dir = folder / ("three_object" if kind == "swap_att_three" else "two_object")
        images = subset_dir / "images"
        images.mkdir(parents=True, exist_ok=True)
        records: list[dict[str, Any]] = []
        for index in range(items_per_kind):
            scene, rng = kind_scene(seed, kind, group, index)
            item = make_item(kind, scene, rng)
            name = f"{kind}-{index:06d}.png"
            scenes.render(scene, image_size).save(images / name, format="PNG")
            records.append({"id": index, "filename": name, "caption": item.caption, "caption2": item.caption2,
                            "negative_caption": item.negative_caption})
        subset = "swap_att" if kind == "swap_att_three" else kind
        (subset_dir / f"{subset}.json").write_text(json.dumps(records, indent=1) + "\n", encoding="utf-8")
        counts[kind] = len(records)
    return counts


def kind_benchmarks(folder: Path) -> list[str]:
    """The `toolkit eval` specs of the sets `write_kind_sets` wrote under `folder`."""
    return [f"sugarcrepe_pp:{folder / 'two_object'}", f"sugarcrepe_pp:{folder / 'three_object'}"]


def frame_pattern(frame: str) -> re.Pattern[str]:
    """A regex matching any sentence made from `frame` (each placeholder is one or more words)."""
    parts = re.split(r"\{[a-z_]+\}", frame)
    return re.compile(r"(?:^|(?<=[.] ))" + r"[a-z ,-]+?".join(re.escape(part) for part in parts) + r"(?=$| )")


def frames_in(text: str, frames: tuple[str, ...] = TEST_FRAMES) -> list[str]:
    """The frames of `frames` some sentence of `text` is made from."""
    return [frame for frame in frames if frame_pattern(frame).search(text)]
