"""The training-wording items of bench/demo_clic_diagnosis.py: each negative differs from its positive in
exactly the way its kind names, and the positive is true of the scene."""

from __future__ import annotations

import sys
from collections import Counter

from tests.helpers import REPO

sys.path.insert(0, str(REPO / "bench"))

from demo_clic_diagnosis import training_wording_items

from toolkit.demo import scenes
from toolkit.demo.kinds import TRAIN_FRAMES, frames_in


def test_each_negative_changes_what_its_kind_names() -> None:
    items = training_wording_items(200)
    assert len({item.positive for item in items}) > 150  # fresh scenes, not one caption repeated
    for item in items:
        a, b = item.scene.objects
        relation = scenes.relation(a, b)
        assert scenes.RELATION_PHRASES[relation] in item.positive
        assert item.positive.startswith(scenes.with_article(a.noun_phrase))
        assert not frames_in(item.positive)  # the training frame "{a} {rel} {b}.", no test-only wording
        words = Counter(item.positive.rstrip(".").split())
        swap_obj, replace_rel, swap_att = (item.negatives[k] for k in ("swap_obj", "replace_rel", "swap_att"))
        # object swap: the same words, the objects exchanged
        assert Counter(swap_obj.rstrip(".").split()) == words and swap_obj != item.positive
        assert swap_obj.startswith(scenes.with_article(b.noun_phrase))
        # relation replaced: one relation phrase for the other, the objects in place
        assert replace_rel != item.positive and replace_rel.startswith(scenes.with_article(a.noun_phrase))
        # colours swapped: the same colours and shapes, bound the other way
        assert Counter(swap_att.rstrip(".").split()) == words
        assert (swap_att != item.positive) == (a.colour != b.colour)
    assert "{a} {rel} {b}." in TRAIN_FRAMES


def test_a_three_object_scene_is_worded_by_its_first_two_objects() -> None:
    from demo_clic_diagnosis import wording_item

    from toolkit.demo.generate import domain_scene

    three = next(scene for scene in (domain_scene(0, i)[0] for i in range(50)) if len(scene.objects) == 3)
    a, b, c = three.objects
    item = wording_item(three)
    phrase = scenes.RELATION_PHRASES[scenes.relation(a, b)]
    assert item.positive == f"{scenes.with_article(a.noun_phrase)} {phrase} {scenes.with_article(b.noun_phrase)}."
    assert c.shape not in item.positive and all(c.shape not in text for text in item.negatives.values())
