"""Write the demo domain to disk: PNG folders, JSONL manifests and held-out evaluation files.

    <out>/generation.json                 settings and counts (what made this folder)
    <out>/pretrain/manifest.jsonl         alt-text captions (one salient object): the base CLIP's corpus
    <out>/domain/manifest.jsonl           multi-sentence captions: the customer data `toolkit ingest` reads
    <out>/eval/two_object/manifest.jsonl  "a red circle and a blue square." per image (retrieval)
    <out>/eval/two_object/swap_att.json   SugarCrepe++-style items: caption, caption2, negative_caption
    <out>/eval/zeroshot/labels.json       single objects with class labels (zero-shot classification)

Manifest lines are {"image": <path relative to the manifest>, "caption": <text>}. Every stream draws from
its own seeded generator, so evaluation scenes are never pretraining or domain scenes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from toolkit.demo import scenes
from toolkit.demo.scenes import Scene

ZEROSHOT_TEMPLATES = (
    "a photo of the {}.",
    "the {}.",
    "a picture of the {}.",
    "the {} on a dark background.",
    "a drawing of the {}.",
)


@dataclass(frozen=True)
class GenerateConfig:
    seed: int = 0
    image_size: int = 64
    pretrain_images: int = 20000
    domain_images: int = 3000
    eval_two_object_images: int = 500
    zeroshot_images_per_class: int = 5


@dataclass(frozen=True)
class GeneratedPaths:
    root: Path
    pretrain_manifest: Path
    domain_manifest: Path
    two_object_manifest: Path
    swap_att: Path
    zeroshot_labels: Path


def paths_under(root: Path) -> GeneratedPaths:
    return GeneratedPaths(
        root=root,
        pretrain_manifest=root / "pretrain" / "manifest.jsonl",
        domain_manifest=root / "domain" / "manifest.jsonl",
        two_object_manifest=root / "eval" / "two_object" / "manifest.jsonl",
        swap_att=root / "eval" / "two_object" / "swap_att.json",
        zeroshot_labels=root / "eval" / "zeroshot" / "labels.json",
    )


def pretrain_scene(seed: int, index: int) -> tuple[Scene, str]:
    """1–3 objects; the first is large and salient, and the caption names only it."""
    rng = scenes.scene_rng(seed, "pretrain", index)
    n_objects = rng.choices((1, 2, 3), weights=(0.4, 0.35, 0.25))[0]
    scene = scenes.sample_scene(rng, n_objects, sizes=["large"] + ["small"] * (n_objects - 1))
    return scene, scenes.alt_text_caption(scene, rng)


def domain_scene(seed: int, index: int) -> tuple[Scene, str]:
    """2–3 objects of any size, described in several sentences."""
    rng = scenes.scene_rng(seed, "domain", index)
    scene = scenes.sample_scene(rng, rng.choices((2, 3), weights=(0.7, 0.3))[0])
    return scene, scenes.domain_caption(scene, rng)


def two_object_scene(seed: int, index: int) -> Scene:
    rng = scenes.scene_rng(seed, "eval-two-object", index)
    return scenes.sample_scene(rng, 2)


def zeroshot_classnames() -> list[str]:
    return [f"{colour} {shape}" for colour in scenes.COLOURS for shape in scenes.SHAPES]


def zeroshot_scene(seed: int, index: int, classname: str) -> Scene:
    rng = scenes.scene_rng(seed, "eval-zeroshot", index)
    colour, shape = classname.split(" ")
    size = rng.choice(list(scenes.SIZES))
    radius = rng.uniform(*scenes.SIZES[size])
    x, y = (rng.uniform(radius + 0.03, 1 - radius - 0.03) for _ in range(2))
    rgb = scenes.jitter_colour(scenes.COLOURS[colour], rng)
    obj = scenes.SceneObject(colour, shape, size, x, y, radius, rgb)
    level = rng.randint(*scenes.BACKGROUND_RANGE)
    return Scene((obj,), (level, level, level))


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def _save(scene: Scene, folder: Path, name: str, image_size: int) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    scenes.render(scene, image_size).save(folder / name, format="PNG")
    return f"images/{name}"


def write_captioned_set(
    manifest: Path, count: int, make: Callable[[int], tuple[Scene, str]], image_size: int
) -> list[dict[str, Any]]:
    rows = []
    for index in range(count):
        scene, caption = make(index)
        rows.append({"image": _save(scene, manifest.parent / "images", f"{index:06d}.png", image_size),
                     "caption": caption})
    _write_jsonl(manifest, rows)
    return rows


def write_two_object_eval(paths: GeneratedPaths, config: GenerateConfig) -> int:
    """Distinct captions only, so retrieval has exactly one right image per caption."""
    rows: list[dict[str, Any]] = []
    items: list[dict[str, Any]] = []
    seen: set[frozenset[str]] = set()
    index = 0
    while len(rows) < config.eval_two_object_images:
        scene = two_object_scene(config.seed, index)
        index += 1
        a, b = scene.objects
        key = frozenset((a.noun_phrase, b.noun_phrase))
        if key in seen:
            continue
        seen.add(key)
        image = _save(scene, paths.two_object_manifest.parent / "images", f"{len(rows):06d}.png",
                      config.image_size)
        caption = scenes.two_object_phrase(a, b)
        rows.append({"image": image, "caption": caption})
        # As in the public SugarCrepe++ files: file names relative to the images folder (<dir>/images).
        items.append({"id": len(items), "filename": Path(image).name, "caption": caption,
                      "caption2": scenes.two_object_phrase(b, a),
                      "negative_caption": scenes.swap_attribute_phrase(a, b)})
    _write_jsonl(paths.two_object_manifest, rows)
    paths.swap_att.write_text(json.dumps(items, indent=1) + "\n", encoding="utf-8")
    return len(rows)


def write_zeroshot_eval(paths: GeneratedPaths, config: GenerateConfig) -> int:
    classnames = zeroshot_classnames()
    images = []
    for index in range(len(classnames) * config.zeroshot_images_per_class):
        label = index % len(classnames)
        scene = zeroshot_scene(config.seed, index, classnames[label])
        image = _save(scene, paths.zeroshot_labels.parent / "images", f"{index:06d}.png", config.image_size)
        images.append({"path": image, "label": label})
    labels = {"classnames": classnames, "templates": list(ZEROSHOT_TEMPLATES), "images": images}
    paths.zeroshot_labels.write_text(json.dumps(labels, indent=1) + "\n", encoding="utf-8")
    return len(images)


def generate_demo_data(out: Path, config: GenerateConfig = GenerateConfig()) -> GeneratedPaths:
    """Write every demo set under `out` (which must be empty or absent, so stale files never mix in)."""
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty; pass a new folder so old images never mix with new ones")
    paths = paths_under(out)
    write_captioned_set(paths.pretrain_manifest, config.pretrain_images,
                        lambda i: pretrain_scene(config.seed, i), config.image_size)
    write_captioned_set(paths.domain_manifest, config.domain_images,
                        lambda i: domain_scene(config.seed, i), config.image_size)
    two_object = write_two_object_eval(paths, config)
    zeroshot = write_zeroshot_eval(paths, config)
    summary = {"config": asdict(config), "counts": {
        "pretrain": config.pretrain_images, "domain": config.domain_images,
        "eval_two_object": two_object, "eval_zeroshot": zeroshot}}
    (out / "generation.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return paths
