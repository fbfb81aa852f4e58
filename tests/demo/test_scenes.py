"""The generated demo domain: determinism, captions that match what is drawn, and the file formats."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from toolkit.core.text import split_sentences
from toolkit.demo import scenes
from toolkit.demo.generate import (
    DemoDataError,
    GenerateConfig,
    domain_scene,
    generate_demo_data,
    pretrain_scene,
    zeroshot_classnames,
    zeroshot_scene,
)
from toolkit.demo.scenes import Scene, SceneObject

SMALL = GenerateConfig(seed=3, pretrain_images=6, domain_images=8, eval_two_object_images=6,
                       zeroshot_images_per_class=1, validation_two_object_images=4,
                       validation_zeroshot_images_per_class=1, kind_items=3, validation_kind_items=2)


def _obj(colour: str, shape: str, x: float, y: float, size: str = "large") -> SceneObject:
    return SceneObject(colour, shape, size, x, y, 0.15, scenes.COLOURS[colour])


def _centre_colour(image: Image.Image, obj: SceneObject) -> str:
    side = image.size[0]
    pixel = image.convert("RGB").getpixel((int(obj.x * side), int(obj.y * side)))
    assert isinstance(pixel, tuple)
    return scenes.nearest_colour_name((pixel[0], pixel[1], pixel[2]))


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    generate_demo_data(out, SMALL)
    return out


def test_same_seed_same_scene_and_pixels_other_seed_differs() -> None:
    first, again, other = pretrain_scene(0, 7), pretrain_scene(0, 7), pretrain_scene(1, 7)
    assert first == again
    assert scenes.render(first[0]).tobytes() == scenes.render(again[0]).tobytes()
    assert first != other


def test_generated_folder_is_byte_identical_for_the_same_seed(generated: Path, tmp_path: Path) -> None:
    generate_demo_data(tmp_path / "again", SMALL)
    files = sorted(p.relative_to(generated) for p in generated.rglob("*") if p.is_file())
    # generation.json; pretrain and domain manifests with images; per held-out group (test, validation):
    # two-object images, manifest and items in both public formats, zero-shot images and labels, and per
    # composition kind its images and its items file
    kind_files = {"test": 5 * SMALL.kind_items + 5, "validation": 5 * SMALL.validation_kind_items + 5}
    assert len(files) == (1 + (1 + 6) + (1 + 8) + (6 + 3 + 80 + 1 + kind_files["test"])
                          + (4 + 3 + 80 + 1 + kind_files["validation"]))
    for rel in files:
        assert (generated / rel).read_bytes() == (tmp_path / "again" / rel).read_bytes(), rel


def test_refuses_a_non_empty_output_folder(tmp_path: Path) -> None:
    (tmp_path / "old.png").write_bytes(b"x")
    with pytest.raises(DemoDataError, match="not empty"):
        generate_demo_data(tmp_path, SMALL)


def test_drawn_centre_colours_are_the_captioned_colours() -> None:
    for index in range(20):
        scene, caption = domain_scene(5, index)
        image = scenes.render(scene)
        first = split_sentences(caption)[0]
        for obj in scene.objects:
            assert _centre_colour(image, obj) == obj.colour, (index, obj)
        for obj in scene.objects[:2]:  # the first sentence names the main pair with their attributes
            assert f"{obj.colour} {obj.shape}" in first, (first, obj)


def test_alt_text_names_one_object_which_may_be_any_of_the_scene() -> None:
    styles = []
    named_smaller_than_another = 0
    for index in range(60):
        scene, caption = pretrain_scene(2, index)
        named, others = scene.objects[0], scene.objects[1:]
        words = caption.rstrip(".").split()
        styles.append((named.colour in words, named.shape in words))
        assert all(o.colour not in words and o.shape not in words for o in others), caption
        assert _centre_colour(scenes.render(scene), named) == named.colour
        named_smaller_than_another += any(o.radius > named.radius for o in others)
    # Shape only, colour only, or both; never neither. Both is the commonest (60 % of captions).
    assert set(styles) == {(True, True), (False, True), (True, False)}
    assert styles.count((True, True)) > styles.count((False, True)) > 0
    # Not always the biggest object: the image tower cannot get by on the salient object alone.
    assert named_smaller_than_another >= 10


def test_relations_follow_the_geometry() -> None:
    left, right = _obj("red", "circle", 0.2, 0.5), _obj("blue", "square", 0.8, 0.55)
    top, bottom = _obj("green", "star", 0.5, 0.1), _obj("white", "heart", 0.45, 0.9)
    assert scenes.relation(left, right) == "left" and scenes.relation(right, left) == "right"
    assert scenes.relation(top, bottom) == "above" and scenes.relation(bottom, top) == "below"


def test_swap_attribute_negative_swaps_colours_and_keeps_the_words() -> None:
    red_circle, orange_square = _obj("red", "circle", 0.2, 0.5), _obj("orange", "square", 0.8, 0.5)
    assert scenes.two_object_phrase(red_circle, orange_square) == "a red circle and an orange square."
    assert scenes.swap_attribute_phrase(red_circle, orange_square) == "an orange circle and a red square."


def test_domain_caption_has_several_sentences_and_a_composition_first() -> None:
    scene = Scene((_obj("red", "circle", 0.2, 0.5), _obj("blue", "square", 0.8, 0.55, "small")), (40, 40, 40))
    sentences = scenes.domain_sentences(scene, scenes.scene_rng(0, "t", 0))
    assert 3 <= len(sentences) <= 5
    assert "red circle" in sentences[0] and "blue square" in sentences[0]
    allowed = {"the circle is red.", "the square is blue.", "the red circle is large.",
               "the blue square is small.", "the red circle is to the left of the blue square.",
               "the blue square is to the right of the red circle.",
               "there are two shapes on a dark background."}
    assert set(sentences[1:]) <= allowed
    with pytest.raises(ValueError, match="at least two objects"):
        scenes.domain_sentences(Scene(scene.objects[:1], (40, 40, 40)), scenes.scene_rng(0, "t", 0))


def _read_jsonl(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_manifests_have_image_and_caption_and_the_images_exist(generated: Path) -> None:
    for name, count in (("pretrain", 6), ("domain", 8)):
        rows = _read_jsonl(generated / name / "manifest.jsonl")
        assert len(rows) == count
        for row in rows:
            assert set(row) == {"image", "caption"}
            assert isinstance(row["image"], str) and isinstance(row["caption"], str)
            with Image.open(generated / name / row["image"]) as image:
                assert image.size == (64, 64) and image.format == "PNG"
    for row in _read_jsonl(generated / "domain" / "manifest.jsonl"):
        assert len(split_sentences(str(row["caption"]))) >= 3


def test_swap_att_items_are_sugarcrepe_pp_shaped_and_bag_of_words_equal(generated: Path) -> None:
    folder = generated / "eval" / "two_object"
    items = json.loads((folder / "swap_att.json").read_text(encoding="utf-8"))
    manifest = _read_jsonl(folder / "manifest.jsonl")
    assert len(items) == len(manifest) == 6
    assert len({row["caption"] for row in manifest}) == 6  # one right image per retrieval query
    for item, row in zip(items, manifest, strict=True):
        assert set(item) == {"id", "filename", "caption", "caption2", "negative_caption"}
        # SugarCrepe++ names images relative to the images folder; the manifest relative to itself.
        assert f"images/{item['filename']}" == row["image"] and item["caption"] == row["caption"]
        assert item["negative_caption"] != item["caption"]
        strip = str.maketrans("", "", ".")
        assert sorted(item["negative_caption"].translate(strip).replace("an ", "a ").split()) == \
            sorted(item["caption"].translate(strip).replace("an ", "a ").split())
        assert (folder / "images" / item["filename"]).is_file()
    # The same items in SugarCrepe's format load through the public loader, images and all.
    from toolkit.eval.benchmarks import load_sugarcrepe

    pairwise = load_sugarcrepe(folder / "sugarcrepe")
    (subset,) = pairwise.subsets
    assert subset == "swap_att"
    loaded = pairwise.subsets[subset]
    assert [(x.positive, x.negative) for x in loaded] == [(i["caption"], i["negative_caption"]) for i in items]
    assert [x.image.name for x in loaded] == [i["filename"] for i in items]


def test_zeroshot_labels_file_format_and_drawn_class(generated: Path) -> None:
    folder = generated / "eval" / "zeroshot"
    labels = json.loads((folder / "labels.json").read_text(encoding="utf-8"))
    assert set(labels) == {"classnames", "templates", "images"}
    assert labels["classnames"] == zeroshot_classnames() and len(set(labels["classnames"])) == 80
    assert all("{}" in t for t in labels["templates"])
    assert [im["label"] for im in labels["images"]] == list(range(80))
    for index, entry in enumerate(labels["images"][:10]):
        classname = labels["classnames"][entry["label"]]
        scene = zeroshot_scene(SMALL.seed, index, classname)
        with Image.open(folder / entry["path"]) as image:
            assert _centre_colour(image, scene.objects[0]) == classname.split()[0]


def test_validation_sets_are_other_scenes_in_the_same_formats(generated: Path) -> None:
    """Settings are chosen on val/ and reported on eval/: same formats, never the same scenes."""
    from toolkit.eval.benchmarks import load_sugarcrepe, load_sugarcrepe_pp, load_zeroshot

    test, validation = generated / "eval", generated / "val"
    assert len(load_sugarcrepe_pp(validation / "two_object").subsets["swap_att"]) == 4
    assert len(load_sugarcrepe(validation / "two_object" / "sugarcrepe").subsets["swap_att"]) == 4
    assert len(load_zeroshot(validation / "zeroshot" / "labels.json").images) == 80

    def pixels(folder: Path) -> set[bytes]:
        return {p.read_bytes() for p in folder.glob("*.png")}

    for kind in ("two_object", "zeroshot"):
        assert pixels(test / kind / "images").isdisjoint(pixels(validation / kind / "images")), kind


def test_a_larger_zeroshot_set_keeps_every_image_of_the_smaller_one(generated: Path, tmp_path: Path) -> None:
    from dataclasses import replace

    generate_demo_data(tmp_path / "larger", replace(SMALL, zeroshot_images_per_class=2))
    small = json.loads((generated / "eval" / "zeroshot" / "labels.json").read_text())
    large = json.loads((tmp_path / "larger" / "eval" / "zeroshot" / "labels.json").read_text())
    assert len(small["images"]) == 80 and len(large["images"]) == 160
    assert large["images"][:80] == small["images"]
    for item in small["images"]:
        rel = Path("eval") / "zeroshot" / item["path"]
        assert (generated / rel).read_bytes() == (tmp_path / "larger" / rel).read_bytes(), rel
