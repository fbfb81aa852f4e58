"""Small benchmark folders in the public formats (our own made-up items and 32 px PNGs)."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from toolkit.eval.benchmarks import SUGARCREPE_PP_SUBSETS, SUGARCREPE_SUBSETS

COLOURS = {"red.png": (220, 20, 20), "blue.png": (20, 20, 220), "green.png": (20, 200, 40)}


def write_images(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, colour in COLOURS.items():
        image = Image.new("RGB", (40, 32), colour)
        # a white square, so images differ in layout as well as colour
        image.paste((255, 255, 255), (4, 4, 14, 14) if name != "blue.png" else (24, 16, 34, 26))
        image.save(folder / name)


SCPP_ITEMS = [
    {"id": 0, "filename": "red.png", "caption": "a red cube left of a blue ball",
     "caption2": "a blue ball is to the right of a red cube",
     "negative_caption": "a blue cube left of a red ball"},
    {"id": 1, "filename": "blue.png", "caption": "a dog chasing a cat",
     "caption2": "a cat being chased by a dog", "negative_caption": "a cat chasing a dog"},
    {"id": 2, "filename": "green.png", "caption": "a man riding a horse on a beach",
     "caption2": "on a beach a man rides a horse", "negative_caption": "a horse riding a man on a beach"},
    {"id": 3, "filename": "green.png", "caption": "two birds on a wire",
     "caption2": "a wire with two birds on it", "negative_caption": "a blue cube left of a red ball"},
    {"id": 4, "filename": "blue.png", "caption": "a cat being chased by a dog",
     "caption2": "A cat being chased by a dog.",
     "negative_caption": "a blue ball is to the right of a red cube"},
]


def scpp_subset_items(subset: str) -> list[dict[str, object]]:
    """Each subset leaves out a different item, so a mix-up between subsets changes the numbers."""
    left_out = SUGARCREPE_PP_SUBSETS.index(subset)
    return [item for k, item in enumerate(SCPP_ITEMS) if k != left_out]


SC_ITEMS = {
    "0": {"filename": "red.png", "caption": "a small red boat on a lake",
          "negative_caption": "a small red boat on a frozen lake"},
    "1": {"filename": "green.png", "caption": "a woman holding an umbrella",
          "negative_caption": "an umbrella holding a woman"},
    "2": {"filename": "blue.png", "caption": "a dog on a sofa", "negative_caption": "a dog on a wooden sofa"},
    "3": {"filename": "red.png", "caption": "a kite above a field", "negative_caption": "a field above a kite"},
    "4": {"filename": "green.png", "caption": "a green leaf", "negative_caption": "a green and yellow leaf"},
    "5": {"filename": "blue.png", "caption": "a boy throwing a ball", "negative_caption": "a ball throwing a boy"},
}
# Each subset holds different items (and counts), so subset and group accuracies differ: averaging the wrong
# subsets into add/replace/swap, or weighting by items, changes the numbers.
SC_SUBSET_KEYS = {
    "add_att": ["0", "1"], "add_obj": ["1", "3", "4"],
    "replace_att": ["0", "2", "3"], "replace_obj": ["0", "1", "2", "3"], "replace_rel": ["1", "2", "3", "4", "5"],
    "swap_att": ["0", "2"], "swap_obj": ["0", "1", "2", "3", "4", "5"],
}


def sc_subset_items(subset: str) -> dict[str, dict[str, str]]:
    return {key: SC_ITEMS[key] for key in SC_SUBSET_KEYS[subset]}


def write_sugarcrepe_pp(folder: Path) -> Path:
    write_images(folder / "images")
    for subset in SUGARCREPE_PP_SUBSETS:
        (folder / f"{subset}.json").write_text(json.dumps(scpp_subset_items(subset)), encoding="utf-8")
    return folder


def write_sugarcrepe(folder: Path) -> Path:
    write_images(folder / "images")
    for subset in SUGARCREPE_SUBSETS:
        (folder / f"{subset}.json").write_text(json.dumps(sc_subset_items(subset)), encoding="utf-8")
    return folder


def write_winoground(folder: Path) -> Path:
    write_images(folder / "images")
    examples = [
        {"id": 0, "caption_0": "a red square above blue", "caption_1": "a blue square above red",
         "image_0": "red", "image_1": "blue"},
        {"id": 1, "caption_0": "green grass under a white sky", "caption_1": "white grass under a green sky",
         "image_0": "green", "image_1": "red"},
        {"id": 2, "caption_0": "a wire with two birds on it", "caption_1": "a red cube left of a blue ball",
         "image_0": "green", "image_1": "red"},
        {"id": 3, "caption_0": "a cat being chased by a dog", "caption_1": "a red cube left of a blue ball",
         "image_0": "blue", "image_1": "red"},
    ]
    lines = [json.dumps(e) for e in examples]
    (folder / "examples.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def write_zeroshot(folder: Path) -> Path:
    write_images(folder)
    labels = {
        "classnames": ["red thing", "blue thing", "green thing"],
        "templates": ["a photo of a {}.", "a picture of the {}."],
        "images": [{"path": "red.png", "label": "red thing"}, {"path": "blue.png", "label": 1},
                   {"path": "green.png", "label": "green thing"}],
    }
    path = folder / "labels.json"
    path.write_text(json.dumps(labels), encoding="utf-8")
    return path
