"""Benchmark loaders: the public formats load; bad files fail with messages that name the fault."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import SCPP_ITEMS, write_sugarcrepe, write_sugarcrepe_pp, write_winoground, write_zeroshot
from toolkit.eval.benchmarks import (
    SUGARCREPE_PP_SUBSETS,
    SUGARCREPE_SUBSETS,
    BenchmarkError,
    load_sugarcrepe,
    load_sugarcrepe_pp,
    load_winoground,
    load_zeroshot,
    parse_benchmark_spec,
)


def test_sugarcrepe_pp_loads_five_subsets(tmp_path: Path) -> None:
    bench = load_sugarcrepe_pp(write_sugarcrepe_pp(tmp_path))
    assert list(bench.subsets) == list(SUGARCREPE_PP_SUBSETS)
    first = bench.subsets["swap_att"][0]
    assert (first.item_id, first.image.name, first.positive2) == ("0", "red.png", SCPP_ITEMS[0]["caption2"])
    assert first.negative == "a blue cube left of a red ball"


def test_sugarcrepe_loads_seven_subsets(tmp_path: Path) -> None:
    bench = load_sugarcrepe(write_sugarcrepe(tmp_path))
    assert list(bench.subsets) == list(SUGARCREPE_SUBSETS)
    assert [i.item_id for i in bench.subsets["add_att"]] == ["0", "1"]
    assert bench.subsets["add_att"][1].positive2 is None


def test_images_folder_can_be_given_separately(tmp_path: Path) -> None:
    folder = write_sugarcrepe_pp(tmp_path / "scpp")
    (folder / "images").rename(tmp_path / "coco")
    expected = r"replace_att\.json item 0: image .*blue\.png does not exist; pass --images"
    with pytest.raises(BenchmarkError, match=expected):
        load_sugarcrepe_pp(folder)
    assert load_sugarcrepe_pp(folder, tmp_path / "coco").subsets["replace_obj"][2].image.name == "green.png"


def test_sugarcrepe_pp_scores_the_subsets_present_and_names_the_expected_files(tmp_path: Path) -> None:
    folder = write_sugarcrepe_pp(tmp_path)
    (folder / "replace_rel.json").unlink()
    assert "replace_rel" not in load_sugarcrepe_pp(folder).subsets
    for path in folder.glob("*.json"):
        path.unlink()
    expected = r"no SugarCrepe\+\+ subset file found; expected some of replace_att\.json"
    with pytest.raises(BenchmarkError, match=expected):
        load_sugarcrepe_pp(folder)


def test_not_json_is_reported_with_the_file(tmp_path: Path) -> None:
    folder = write_sugarcrepe(tmp_path)
    (folder / "add_obj.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(BenchmarkError, match=r"add_obj\.json is not valid JSON"):
        load_sugarcrepe(folder)


def test_wrong_key_names_file_item_and_key(tmp_path: Path) -> None:
    folder = write_sugarcrepe_pp(tmp_path)
    broken = [dict(SCPP_ITEMS[0]), {k: v for k, v in SCPP_ITEMS[1].items() if k != "caption2"}]
    (folder / "swap_obj.json").write_text(json.dumps(broken), encoding="utf-8")
    expected = r"swap_obj\.json item 1: missing or empty text field 'caption2'"
    with pytest.raises(BenchmarkError, match=expected):
        load_sugarcrepe_pp(folder)


def test_sugarcrepe_format_mixup_is_explained(tmp_path: Path) -> None:
    # A SugarCrepe++ list where a SugarCrepe dict is expected, and the other way round.
    folder = write_sugarcrepe(tmp_path / "sc")
    (folder / "swap_att.json").write_text(json.dumps(SCPP_ITEMS), encoding="utf-8")
    with pytest.raises(BenchmarkError, match=r'swap_att\.json: expected a non-empty JSON object keyed "0"'):
        load_sugarcrepe(folder)
    pp = write_sugarcrepe_pp(tmp_path / "pp")
    (pp / "swap_att.json").write_text(json.dumps({"0": SCPP_ITEMS[0]}), encoding="utf-8")
    with pytest.raises(BenchmarkError, match=r"swap_att\.json: expected a non-empty JSON list"):
        load_sugarcrepe_pp(pp)


def test_missing_image_is_named(tmp_path: Path) -> None:
    folder = write_sugarcrepe(tmp_path)
    (folder / "images" / "green.png").unlink()
    with pytest.raises(BenchmarkError, match=r"add_att\.json key '1': image .*green\.png does not exist"):
        load_sugarcrepe(folder)


def test_winoground_public_layout(tmp_path: Path) -> None:
    bench = load_winoground(write_winoground(tmp_path))
    assert [(i.item_id, i.image_0.name, i.image_1.name) for i in bench.items] == [
        ("0", "red.png", "blue.png"), ("1", "green.png", "red.png"), ("2", "green.png", "red.png"),
        ("3", "blue.png", "red.png")]
    with (tmp_path / "examples.jsonl").open("a", encoding="utf-8") as handle:
        handle.write('{"id": 4, "caption_0": "x", "caption_1": "y", "image_0": "nope", "image_1": "red"}\n')
    with pytest.raises(BenchmarkError, match=r"examples\.jsonl line 5: image .*nope\.png does not exist"):
        load_winoground(tmp_path)


def test_zeroshot_labels_file(tmp_path: Path) -> None:
    bench = load_zeroshot(write_zeroshot(tmp_path))
    assert bench.labels == [0, 1, 2]
    assert bench.templates == ["a photo of a {}.", "a picture of the {}."]
    data = json.loads((tmp_path / "labels.json").read_text())
    data["images"][0]["label"] = "purple thing"
    (tmp_path / "labels.json").write_text(json.dumps(data))
    with pytest.raises(BenchmarkError, match=r"images\[0\]: label 'purple thing' is neither a class name"):
        load_zeroshot(tmp_path / "labels.json")
    data["templates"] = ["a photo"]
    (tmp_path / "labels.json").write_text(json.dumps(data))
    with pytest.raises(BenchmarkError, match="template 'a photo' has no"):
        load_zeroshot(tmp_path / "labels.json")


@pytest.mark.parametrize("text", ["sugarcrepe_pp", "imagenet:/data", "retrieval:latest", "domain:"])
def test_bad_benchmark_specs(text: str) -> None:
    with pytest.raises(BenchmarkError, match="--benchmark"):
        parse_benchmark_spec(text)


def test_benchmark_spec_keeps_the_snapshot_reference() -> None:
    spec = parse_benchmark_spec("retrieval:latest:test")
    assert (spec.kind, spec.path) == ("retrieval", "latest:test")


def test_sugarcrepe_folder_with_some_subsets_scores_those(tmp_path: Path) -> None:
    folder = write_sugarcrepe(tmp_path)
    for subset in ("add_att", "add_obj", "replace_obj", "replace_rel", "swap_obj"):
        (folder / f"{subset}.json").unlink()
    assert sorted(load_sugarcrepe(folder).subsets) == ["replace_att", "swap_att"]
    for subset in ("replace_att", "swap_att"):
        (folder / f"{subset}.json").unlink()
    with pytest.raises(BenchmarkError, match="no SugarCrepe subset file found"):
        load_sugarcrepe(folder)


def test_retrieval_from_a_manifest(tmp_path: Path) -> None:
    import json

    from PIL import Image

    from toolkit.eval.benchmarks import load_benchmark, parse_benchmark_spec

    for name in ("a.png", "b.png"):
        Image.new("RGB", (8, 8)).save(tmp_path / name)
    lines = [{"image": "a.png", "caption": "a red square."}, {"image": "b.png", "caption": "a blue circle."},
             {"image": "a.png", "caption": "a square, red."}]
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(line) for line in lines))
    bench = load_benchmark(parse_benchmark_spec(f"retrieval:{tmp_path / 'm.jsonl'}"))
    assert bench.texts == ["a red square.", "a blue circle.", "a square, red."]
    assert bench.text_image == [0, 1, 0] and [p.name for p in bench.images] == ["a.png", "b.png"]
    (tmp_path / "bad.jsonl").write_text(json.dumps({"image": "missing.png", "caption": "x"}))
    with pytest.raises(BenchmarkError, match="line 1"):
        load_benchmark(parse_benchmark_spec(f"retrieval:{tmp_path / 'bad.jsonl'}"))
