"""Linear probes of the image tower: labels match what is drawn, train and test never share a scene, the
pair puts the probed scene in the stated half, and the probe reads a linear label but not a shuffled one."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from toolkit.adapters.base import ImageNorm
from toolkit.data.datasets import tile_tensor
from toolkit.demo import probe, scenes
from toolkit.demo.probe import Combination, ProbeItem

NORM = ImageNorm(mean=(0.5, 0.4, 0.3), std=(0.25, 0.2, 0.3), size=64)


def _items(task: str, split: str, count: int = 12, seed: int = 0) -> tuple[Combination, list[ProbeItem]]:
    combo = probe.combinations(task, seed, 1)[0]
    return combo, probe.probe_items(task, combo, 0, seed, split, count)


def _centre_colour(image: Image.Image, obj: scenes.SceneObject) -> str:
    side = image.size[0]
    pixel = image.getpixel((int(obj.x * side), int(obj.y * side)))
    assert isinstance(pixel, tuple)
    return scenes.nearest_colour_name((pixel[0], pixel[1], pixel[2]))


@pytest.mark.parametrize("task", probe.TASKS)
def test_labels_are_balanced_and_what_the_scene_shows(task: str) -> None:
    combo, items = _items(task, "train")
    assert [item.label for item in items] == [i % 2 == 0 for i in range(len(items))]
    for item in items:
        assert probe.label_of(task, combo, item.scene) == item.label
        # What is drawn: each object's centre pixel has its colour (the colours are the combination's).
        image = scenes.render(item.scene)
        assert [_centre_colour(image, obj) for obj in item.scene.objects] == [o.colour for o in item.scene.objects]


def test_binding_labels_follow_which_shape_carries_c1() -> None:
    for task in ("binding", "three_object_binding"):
        combo, items = _items(task, "test", 10)
        c1, c2, s1, s2 = combo.colours[0], combo.colours[1], combo.shapes[0], combo.shapes[1]
        for item in items:
            styles = {(obj.colour, obj.shape) for obj in item.scene.objects}
            # Both classes hold the same colours and the same shapes: only the binding differs.
            assert {c for c, _ in styles} == set(combo.colours) and {s for _, s in styles} == set(combo.shapes)
            assert styles >= ({(c1, s1), (c2, s2)} if item.label else {(c1, s2), (c2, s1)})


def test_shape_control_labels_follow_which_of_two_shapes_is_drawn() -> None:
    combo, items = _items("control_shape", "test", 10)
    s1, s2, s3 = combo.shapes
    assert combo.colours == ()
    for item in items:
        shapes = [obj.shape for obj in item.scene.objects]
        assert shapes == [s1 if item.label else s2, s3]
    # Colours are left random, so they tell nothing about the label.
    assert len({item.scene.objects[0].colour for item in items}) > 2


@pytest.mark.parametrize(("task", "positive", "negative", "axis"), [("relation_horizontal", "left", "right", 0),
                                                                     ("relation_vertical", "above", "below", 1)])
def test_relation_labels_match_relation_and_the_drawn_positions(task: str, positive: str, negative: str,
                                                                axis: int) -> None:
    combo, items = _items(task, "train", 16)
    for item in items:
        first, second = (next(o for o in item.scene.objects if o.colour == c) for c in combo.colours[:2])
        assert scenes.relation(first, second) in (positive, negative)
        assert (scenes.relation(first, second) == positive) == item.label
        # x grows to the right, y downwards: left of / above = a smaller coordinate on the axis.
        assert ((first.x, first.y)[axis] < (second.x, second.y)[axis]) == item.label
        assert first.shape != second.shape


def test_train_and_test_streams_never_share_a_scene() -> None:
    for task in probe.TASKS:
        assert probe.stream_name(task, 0, "train") != probe.stream_name(task, 0, "test")
        _, train = _items(task, "train", 20)
        _, test = _items(task, "test", 20)
        assert not {item.scene for item in train} & {item.scene for item in test}
        assert len({item.scene for item in train}) == 20
    with pytest.raises(ValueError, match="split must be one of"):
        probe.stream_name("binding", 0, "validation")


def test_items_are_deterministic_and_combinations_distinct() -> None:
    assert _items("binding", "train", 4) == _items("binding", "train", 4)
    assert _items("binding", "train", 4, seed=1) != _items("binding", "train", 4)
    combos = probe.combinations("three_object_binding", 0, 8)
    assert len(set(combos)) == 8
    assert all(len(set(c.colours)) == 3 and len(set(c.shapes)) == 3 for c in combos)
    with pytest.raises(ValueError, match="unknown probe task"):
        probe.combinations("colour_of_sky", 0, 1)


def _unnormalised(image: torch.Tensor) -> torch.Tensor:
    return image * torch.tensor(NORM.std).view(3, 1, 1) + torch.tensor(NORM.mean).view(3, 1, 1)


def test_pair_puts_the_probed_scene_in_the_stated_half() -> None:
    assert probe.pair_aspect(64) == "wide"  # square images: stacked top/bottom, as training does
    _, items = _items("binding", "test", 1)
    item = items[0]
    red, blue = Image.new("RGB", (64, 64), (255, 0, 0)), Image.new("RGB", (64, 64), (0, 0, 255))
    top = _unnormalised(probe.pair_view(red, blue, "wide", NORM))
    assert top.shape == (3, 64, 64)
    torch.testing.assert_close(top[:, :32], torch.tensor([1.0, 0, 0]).view(3, 1, 1).expand(3, 32, 64))
    torch.testing.assert_close(top[:, 32:], torch.tensor([0, 0, 1.0]).view(3, 1, 1).expand(3, 32, 64))
    left = _unnormalised(probe.pair_view(red, blue, "tall", NORM))
    torch.testing.assert_close(left[:, :, :32], torch.tensor([1.0, 0, 0]).view(3, 1, 1).expand(3, 64, 32))

    first = probe.view_images([item], "pair_first", NORM, 64, "wide")[0]
    second = probe.view_images([item], "pair_second", NORM, 64, "wide")[0]
    scene_half = probe.pair_view(scenes.render(item.scene), scenes.render(item.scene), "wide", NORM)[:, :32]
    distractor_half = probe.pair_view(scenes.render(item.distractor), scenes.render(item.distractor), "wide",
                                      NORM)[:, :32]
    torch.testing.assert_close(first[:, :32], scene_half)
    torch.testing.assert_close(first[:, 32:], distractor_half)
    torch.testing.assert_close(second[:, :32], distractor_half)
    torch.testing.assert_close(second[:, 32:], scene_half)
    single = probe.view_images([item], "single", NORM, 64, "wide")[0]
    torch.testing.assert_close(_unnormalised(single), tile_tensor(scenes.render(item.scene)))


def _features(n: int, dim: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    labels = torch.arange(n) % 2 == 0
    x = torch.randn(n, dim, generator=generator)
    x[:, 3] += 4.0 * (labels.float() * 2 - 1)  # the label, linearly, in one direction among noise
    return x, labels


def test_probe_reads_a_linear_label_and_not_a_shuffled_one() -> None:
    generator = torch.Generator().manual_seed(0)
    train_x, train_y = _features(300, 32, generator)
    test_x, test_y = _features(400, 32, generator)
    assert probe.probe_accuracy(train_x, train_y, test_x, test_y) > 0.98
    shuffled = train_y[torch.randperm(len(train_y), generator=generator)]
    accuracy = probe.probe_accuracy(train_x, shuffled, test_x, test_y)
    assert 0.40 < accuracy < 0.60


def test_mean_and_standard_error() -> None:
    assert probe.mean_and_standard_error([50.0]) == (50.0, 0.0)
    mean, se = probe.mean_and_standard_error([40.0, 50.0, 60.0])
    assert mean == 50.0 and se == pytest.approx(10.0 / 3 ** 0.5)


def test_class_gap_is_the_distance_between_class_means_in_raw_units() -> None:
    # no spread within a class: the distance between the two points
    features = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    assert probe.class_gap(features, torch.tensor([True, True, False, False])) == pytest.approx(2 ** 0.5)
    # Classes 0.2 apart along one axis, in noise of about the spread of a unit embedding: the estimate finds
    # the 0.2, where the plain distance between sample means reads more; with labels that mean nothing it
    # finds about 0 where the plain distance reads the noise.
    generator = torch.Generator().manual_seed(3)
    n, dim = 400, 64
    y = torch.arange(n) % 2 == 0
    x = torch.randn(n, dim, generator=generator) / dim ** 0.5
    x[:, 0] += torch.where(y, 0.1, -0.1)
    plain = float((x[y].mean(0) - x[~y].mean(0)).norm())
    assert abs(probe.class_gap(x, y) - 0.2) < 0.02 and plain > 0.21
    meaningless = torch.randperm(n, generator=generator) % 2 == 0
    plain_noise = float((x[meaningless].mean(0) - x[~meaningless].mean(0)).norm())
    assert probe.class_gap(x[:, 1:], meaningless) < 0.03 < 0.08 < plain_noise
    # a standardised probe reads a 0.01 shift perfectly; in raw units it is lost in the embedding's spread
    tiny = torch.nn.functional.normalize(torch.randn(200, 16, generator=generator), dim=-1).repeat_interleave(2, 0)
    tiny[:, 0] = torch.where(y, 0.005, -0.005)
    assert probe.class_gap(tiny, y) < 0.02
    assert probe.probe_accuracy(tiny[:200], y[:200], tiny[200:], y[200:]) == 1.0
    with pytest.raises(ValueError, match="at least 2 items per class"):
        probe.class_gap(features[:3], torch.tensor([True, False, False]))


def test_run_probes_on_a_tiny_random_model() -> None:
    from toolkit.demo.pretrain import PretrainConfig, build_demo_model

    torch.set_num_threads(1)
    adapter = build_demo_model(PretrainConfig())
    config = probe.ProbeConfig(combinations=2, train_items=8, test_items=6, tasks=("relation_vertical",),
                               max_iter=20)
    results = probe.run_probes(adapter, config)
    views = results["relation_vertical"]["views"]
    assert set(views) == {*probe.VIEWS, "pair"}
    assert all(len(v["per_combination"]) == 2 and 0 <= v["mean"] <= 100 for v in views.values())
    assert views["pair"]["per_combination"] == [(a + b) / 2 for a, b in zip(
        views["pair_first"]["per_combination"], views["pair_second"]["per_combination"], strict=True)]
    gaps = {view: figures["cosine_gap"]["per_combination"] for view, figures in views.items()}
    assert all(len(g) == 2 and all(0 <= v <= 2 for v in g) for g in gaps.values())
    assert gaps["pair"] == [(a + b) / 2 for a, b in zip(gaps["pair_first"], gaps["pair_second"], strict=True)]
