"""Held-out sets per composition kind: right negatives, unseen wordings, sizes from the standard-error rule."""

from __future__ import annotations

import json
import re

import pytest

from toolkit.demo import generate, scenes
from toolkit.demo.kinds import (
    KINDS,
    MAX_STANDARD_ERROR,
    TEST_ITEMS_PER_KIND,
    TEST_RELATION_FRAMES,
    TRAIN_FRAMES,
    frames_in,
    items_for_standard_error,
    kind_benchmarks,
    kind_scene,
    make_item,
    stream,
    write_kind_sets,
)


def test_test_sets_are_sized_for_the_standard_error_target():
    assert items_for_standard_error(MAX_STANDARD_ERROR) == 2223
    assert items_for_standard_error(MAX_STANDARD_ERROR) <= TEST_ITEMS_PER_KIND
    # the bound: a change's variance per item is at most 0.5, so at 2,250 items its SE is at most 1.49 points
    assert 100 * (0.5 / TEST_ITEMS_PER_KIND) ** 0.5 <= MAX_STANDARD_ERROR


def test_no_test_wording_occurs_in_any_training_caption():
    captions = [generate.domain_scene(0, index)[1] for index in range(3000)]
    found = {caption: frames_in(caption) for caption in captions if frames_in(caption)}
    assert found == {}
    # and the check can see a frame when there is one: every test frame is found in its own items
    for kind in KINDS:
        for index in range(40):
            scene, rng = kind_scene(0, kind, "test", index)
            item = make_item(kind, scene, rng)
            assert frames_in(item.caption) and frames_in(item.caption2) and frames_in(item.negative_caption)


def test_training_frames_describe_the_training_captions():
    # TRAIN_FRAMES is the list the README and the test above rely on: every training sentence fits one
    captions = [generate.domain_scene(0, index)[1] for index in range(300)]
    sentences = [s.strip() + "." for caption in captions for s in caption.split(".") if s.strip()]
    unmatched = [s for s in sentences if not frames_in(s, TRAIN_FRAMES)]
    assert unmatched == []


def _objects_said(text: str) -> list[tuple[str, str]]:
    words = text.rstrip(".").replace(",", "").split()
    return [(words[i], words[i + 1]) for i in range(len(words) - 1)
            if words[i] in scenes.COLOURS and words[i + 1] in scenes.SHAPES]


def _relation_said(text: str) -> tuple[str, str, str]:
    """(subject colour, relation, object colour) read back from a test relation sentence."""
    names = {phrase: name for name, phrase in scenes.RELATION_PHRASES.items()}
    for frame in TEST_RELATION_FRAMES:
        pattern = re.escape(frame).replace(r"\{a\}", "(?P<a>an? [a-z]+ [a-z]+)").replace(
            r"\{b\}", "(?P<b>an? [a-z]+ [a-z]+)").replace(r"\{rel\}", f"(?P<rel>{'|'.join(names)})")
        if match := re.fullmatch(pattern, text):
            return match["a"].split()[1], names[match["rel"]], match["b"].split()[1]
    raise AssertionError(f"no test relation frame reads {text!r}")


def _true_of(scene, text: str) -> bool:
    subject, rel, obj = _relation_said(text)
    by_colour = {o.colour: o for o in scene.objects}
    return scenes.relation(by_colour[subject], by_colour[obj]) == rel


@pytest.mark.parametrize("kind", KINDS)
def test_positives_are_true_and_the_negative_false_of_the_image(kind):
    for index in range(60):
        scene, rng = kind_scene(0, kind, "test", index)
        item = make_item(kind, scene, rng)
        drawn = {(obj.colour, obj.shape) for obj in scene.objects}
        assert item.caption != item.caption2  # two wordings
        assert set(_objects_said(item.caption)) == drawn == set(_objects_said(item.caption2))
        said = set(_objects_said(item.negative_caption))
        if kind in ("swap_obj", "replace_rel"):
            assert said == drawn  # the same objects: only where they stand is wrong
            assert _true_of(scene, item.caption) and _true_of(scene, item.caption2)
            assert not _true_of(scene, item.negative_caption)
            kept = _relation_said(item.caption)[1] == _relation_said(item.negative_caption)[1]
            assert kept == (kind == "swap_obj")  # swap_obj keeps the relation word, replace_rel changes it
        else:
            assert said != drawn
            assert sorted(s for _, s in said) == sorted(s for _, s in drawn)  # shapes kept
            if kind == "replace_att":  # one colour the scene does not hold
                assert len({c for c, _ in said} - {c for c, _ in drawn}) == 1
            else:  # a swap: the same colours, bound otherwise
                assert sorted(c for c, _ in said) == sorted(c for c, _ in drawn)


def test_kinds_and_groups_draw_from_their_own_streams():
    names = {stream(kind, group) for kind in KINDS for group in ("test", "validation")}
    assert len(names) == 2 * len(KINDS)
    assert not names & {"eval-two-object", "val-two-object", "domain", "pretrain", "eval-zeroshot"}


def test_written_sets_load_as_sugarcrepe_pp_benchmarks(tmp_path):
    from toolkit.eval.benchmarks import load_benchmarks

    counts = write_kind_sets(tmp_path, seed=0, group="validation", items_per_kind=5, image_size=32)
    assert counts == dict.fromkeys(KINDS, 5)
    loaded = load_benchmarks(kind_benchmarks(tmp_path))
    assert [sorted(benchmark.subsets) for benchmark in loaded] == [
        ["replace_att", "replace_rel", "swap_att", "swap_obj"], ["swap_att"]]
    first = json.loads((tmp_path / "two_object" / "swap_obj.json").read_text())[0]
    assert set(first) == {"id", "filename", "caption", "caption2", "negative_caption"}
    assert (tmp_path / "two_object" / "images" / first["filename"]).is_file()
