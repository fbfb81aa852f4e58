"""Write the demo domain to disk: PNG folders, JSONL manifests and held-out evaluation files.

    <out>/generation.json                 settings and counts (what made this folder)
    <out>/pretrain/manifest.jsonl         alt-text captions (one object named): the base CLIP's corpus
    <out>/domain/manifest.jsonl           multi-sentence captions: the customer data `toolkit ingest` reads
    <out>/eval/two_object/manifest.jsonl  "a red circle and a blue square." per image (retrieval)
    <out>/eval/two_object/swap_att.json   SugarCrepe++-style items: caption, caption2, negative_caption
    <out>/eval/two_object/sugarcrepe/     the same items in SugarCrepe's format (pairwise accuracy);
                                          its images/ is a link to ../images
    <out>/eval/zeroshot/labels.json       single objects with class labels (zero-shot classification)
    <out>/eval/kinds/                     one held-out set per composition kind, in wordings training never
                                          uses (toolkit.demo.kinds): two_object/{swap_att,replace_att,
                                          swap_obj,replace_rel}.json, three_object/swap_att.json
    <out>/val/...                         the same kinds of set, smaller, from scenes of their own: for
                                          choosing settings (WiSE-FT's alpha), so eval/ is only ever reported

Manifest lines are {"image": <path relative to the manifest>, "caption": <text>}. Every stream draws from
its own seeded generator, so evaluation scenes are never pretraining, domain or validation scenes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from toolkit.core.errors import InputError
from toolkit.demo import kinds, scenes
from toolkit.demo.scenes import Scene

ZEROSHOT_TEMPLATES = (
    "a photo of the {}.",
    "the {}.",
    "a picture of the {}.",
    "the {} on a dark background.",
    "a drawing of the {}.",
)


class DemoDataError(InputError):
    """A demo folder, manifest or the bundled base is missing, not empty where it must be, or malformed."""


@dataclass(frozen=True)
class GenerateConfig:
    seed: int = 0
    image_size: int = 64
    pretrain_images: int = 20000
    # The alt-text corpus keeps its own size: the committed alt-text model was pretrained on it at 64 px.
    pretrain_image_size: int = 64
    domain_images: int = 3000
    eval_two_object_images: int = 500
    # Zero-shot is held to a 1-point tolerance, so both zero-shot sets are sized to resolve it: at 5 images
    # per class (the first test set, 400 images) a change's standard error was 1.34 points; at 25 it is
    # about 0.6. The test stream's first 400 images are those same 400: a larger set only adds images.
    zeroshot_images_per_class: int = 25
    validation_two_object_images: int = 500
    validation_zeroshot_images_per_class: int = 25
    # Items per composition kind (toolkit.demo.kinds; sizes decided in 193ffd4 before any scoring).
    kind_items: int = kinds.TEST_ITEMS_PER_KIND
    validation_kind_items: int = kinds.VALIDATION_ITEMS_PER_KIND


# What `toolkit demo run` generates: the two-stage base reads 128 px, and CLIC gains on it for every kind
# from about 12,000 domain images (bench/results/demo-clic-diagnosis.md). --pretrain adds the alt-text corpus.
DEMO_DATA = GenerateConfig(image_size=128, pretrain_images=0, domain_images=12000)


@dataclass(frozen=True)
class HeldOutPaths:
    """One held-out group (test or validation): two-object items and zero-shot labels."""

    root: Path
    two_object_manifest: Path
    swap_att: Path
    swap_att_pairwise: Path
    zeroshot_labels: Path
    kinds: Path  # toolkit.demo.kinds.write_kind_sets's folder

    @classmethod
    def under(cls, folder: Path) -> HeldOutPaths:
        return cls(root=folder, two_object_manifest=folder / "two_object" / "manifest.jsonl",
                   swap_att=folder / "two_object" / "swap_att.json",
                   swap_att_pairwise=folder / "two_object" / "sugarcrepe" / "swap_att.json",
                   zeroshot_labels=folder / "zeroshot" / "labels.json",
                   kinds=folder / "kinds")


@dataclass(frozen=True)
class GeneratedPaths:
    root: Path
    pretrain_manifest: Path
    domain_manifest: Path
    test: HeldOutPaths  # reported, never used to choose anything
    validation: HeldOutPaths  # for choosing settings


def paths_under(root: Path) -> GeneratedPaths:
    return GeneratedPaths(
        root=root,
        pretrain_manifest=root / "pretrain" / "manifest.jsonl",
        domain_manifest=root / "domain" / "manifest.jsonl",
        test=HeldOutPaths.under(root / "eval"),
        validation=HeldOutPaths.under(root / "val"),
    )


def pretrain_scene(seed: int, index: int) -> tuple[Scene, str]:
    """1–3 objects of random sizes; the caption names one of them (the first drawn, so any of them).

    Because the named object may be any object of the scene, the image tower must encode every object
    with its own colour and shape; the text tower only ever reads one object, so it learns no binding.
    """
    rng = scenes.scene_rng(seed, "pretrain", index)
    n_objects = rng.choices((1, 2, 3), weights=(0.4, 0.35, 0.25))[0]
    scene = scenes.sample_scene(rng, n_objects)
    return scene, scenes.alt_text_caption(scene, rng)


# General captions for anchor distillation (toolkit.train.anchors; the demo's earlier settings used them, its
# current ones train without anchors): alt text of single objects, in the style of the alt-text pretraining
# text but from a stream of their own. A customer's counterpart is a few
# thousand general captions they hold (public caption sets, search queries). Committed beside the demo
# config as reference-captions.txt; `reference_captions()` writes it again.
REFERENCE_CAPTION_DRAWS = 5000


def reference_captions(seed: int = 0, draws: int = REFERENCE_CAPTION_DRAWS) -> list[str]:
    """Distinct alt-text captions of `draws` single-object scenes, sorted (their order picks the samples)."""
    captions = set()
    for index in range(draws):
        rng = scenes.scene_rng(seed, "reference-text", index)
        captions.add(scenes.alt_text_caption(scenes.sample_scene(rng, 1), rng))
    return sorted(captions)


def domain_scene(seed: int, index: int) -> tuple[Scene, str]:
    """2–3 objects of any size, described in several sentences."""
    rng = scenes.scene_rng(seed, "domain", index)
    scene = scenes.sample_scene(rng, rng.choices((2, 3), weights=(0.7, 0.3))[0])
    return scene, scenes.domain_caption(scene, rng)


# Stream names per held-out group; the test streams keep their original names, so their items never change.
STREAMS = {"test": ("eval-two-object", "eval-zeroshot"), "validation": ("val-two-object", "val-zeroshot")}


def two_object_scene(seed: int, index: int, stream: str = "eval-two-object") -> Scene:
    rng = scenes.scene_rng(seed, stream, index)
    return scenes.sample_scene(rng, 2)


def zeroshot_classnames() -> list[str]:
    return [f"{colour} {shape}" for colour in scenes.COLOURS for shape in scenes.SHAPES]


def zeroshot_scene(seed: int, index: int, classname: str, stream: str = "eval-zeroshot") -> Scene:
    rng = scenes.scene_rng(seed, stream, index)
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


def write_two_object_eval(paths: HeldOutPaths, seed: int, count: int, stream: str, image_size: int) -> int:
    """Distinct captions only, so retrieval has exactly one right image per caption."""
    rows: list[dict[str, Any]] = []
    items: list[dict[str, Any]] = []
    seen: set[frozenset[str]] = set()
    index = 0
    while len(rows) < count:
        scene = two_object_scene(seed, index, stream)
        index += 1
        a, b = scene.objects
        key = frozenset((a.noun_phrase, b.noun_phrase))
        if key in seen:
            continue
        seen.add(key)
        image = _save(scene, paths.two_object_manifest.parent / "images", f"{len(rows):06d}.png", image_size)
        caption = scenes.two_object_phrase(a, b)
        rows.append({"image": image, "caption": caption})
        # As in the public SugarCrepe++ files: file names relative to the images folder (<dir>/images).
        items.append({"id": len(items), "filename": Path(image).name, "caption": caption,
                      "caption2": scenes.two_object_phrase(b, a),
                      "negative_caption": scenes.swap_attribute_phrase(a, b)})
    _write_jsonl(paths.two_object_manifest, rows)
    paths.swap_att.write_text(json.dumps(items, indent=1) + "\n", encoding="utf-8")
    # SugarCrepe's format (a dict keyed "0", "1", ...): one positive against the negative, which is the
    # pairwise hard-negative accuracy; the stricter SugarCrepe++ ITT needs both positives to win.
    pairwise = {str(item["id"]): {k: item[k] for k in ("filename", "caption", "negative_caption")}
                for item in items}
    paths.swap_att_pairwise.parent.mkdir(parents=True, exist_ok=True)
    paths.swap_att_pairwise.write_text(json.dumps(pairwise, indent=1) + "\n", encoding="utf-8")
    (paths.swap_att_pairwise.parent / "images").symlink_to(Path("..") / "images", target_is_directory=True)
    return len(rows)


def write_zeroshot_eval(paths: HeldOutPaths, seed: int, per_class: int, stream: str, image_size: int) -> int:
    classnames = zeroshot_classnames()
    images = []
    for index in range(len(classnames) * per_class):
        label = index % len(classnames)
        scene = zeroshot_scene(seed, index, classnames[label], stream)
        image = _save(scene, paths.zeroshot_labels.parent / "images", f"{index:06d}.png", image_size)
        images.append({"path": image, "label": label})
    labels = {"classnames": classnames, "templates": list(ZEROSHOT_TEMPLATES), "images": images}
    paths.zeroshot_labels.write_text(json.dumps(labels, indent=1) + "\n", encoding="utf-8")
    return len(images)


def generate_demo_data(out: Path, config: GenerateConfig = GenerateConfig()) -> GeneratedPaths:
    """Write every demo set under `out` (which must be empty or absent, so stale files never mix in)."""
    if out.exists() and any(out.iterdir()):
        raise DemoDataError(f"{out} is not empty; pass a new folder so old images never mix with new ones")
    paths = paths_under(out)
    write_captioned_set(paths.pretrain_manifest, config.pretrain_images,
                        lambda i: pretrain_scene(config.seed, i), config.pretrain_image_size)
    write_captioned_set(paths.domain_manifest, config.domain_images,
                        lambda i: domain_scene(config.seed, i), config.image_size)
    counts = {"pretrain": config.pretrain_images, "domain": config.domain_images}
    groups = {"test": (paths.test, config.eval_two_object_images, config.zeroshot_images_per_class,
                       config.kind_items),
              "validation": (paths.validation, config.validation_two_object_images,
                             config.validation_zeroshot_images_per_class, config.validation_kind_items)}
    for group, (held_out, two_objects, per_class, per_kind) in groups.items():
        two_object_stream, zeroshot_stream = STREAMS[group]
        counts[f"{group}_two_object"] = write_two_object_eval(held_out, config.seed, two_objects,
                                                              two_object_stream, config.image_size)
        counts[f"{group}_zeroshot"] = write_zeroshot_eval(held_out, config.seed, per_class, zeroshot_stream,
                                                          config.image_size)
        for kind, count in kinds.write_kind_sets(held_out.kinds, config.seed, group, per_kind,
                                                 config.image_size).items():
            counts[f"{group}_{kind}"] = count
    summary = {"config": asdict(config), "counts": counts}
    (out / "generation.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return paths
