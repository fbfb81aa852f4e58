"""Linear probes of a frozen image tower: does the image embedding carry colour–shape binding and spatial
relations, linearly? (issue #19)

CLIC fine-tunes the text tower only, so the text side can at best match what the image embedding already
carries. If a linear read-out of the (L2-normalised) image embedding cannot tell "red circle and blue square"
from "blue circle and red square", no text-side training can make the model tell those captions apart.

Tasks (each a binary label over generated scenes; one probe per attribute combination, K combinations):
- `control_colour`: a c3 object plus either a c1 or a c2 object (shapes random). Which colour is present?
  A positive control: colour identity is what the pretraining captions name, so this should be easy.
- `control_shape`: the same for shapes: an s3 object plus either an s1 or an s2 object (colours random).
  Binding cannot read higher than the shapes it binds can be told apart, so this bounds `binding`.
- `binding`: a c1 and a c2 object on an s1 and an s2; label = c1 is on s1 (else c1 is on s2). Both classes
  have the same colours and the same shapes: only the binding differs.
- `three_object_binding`: the same, with a third object (c3 on s3) in every scene.
- `relation_horizontal` / `relation_vertical`: a c1 and a c2 object (shapes random, distinct), only scenes
  whose `relation()` is on that axis; label = the c1 object is left of (above) the c2 object.

Views, as the model sees an image: `single` (the scene as the evaluation sees it) and the CLIC pair the
training sees: the scene as one half-tile of a concatenated image, the other half a random distractor scene,
composed by the training data path's own functions (`resize_half_tile`, `compose_pair`). The demo's square
images are of the wide aspect class, so training stacks them top/bottom: `pair_first` is the top half,
`pair_second` the bottom. A probe is trained and tested per view.

Every scene is a function of (seed, stream, index) with streams `probe-<task>-<k>-train` / `-test`, so train
and test never share a scene and nothing random happens outside a seeded generator.
"""

from __future__ import annotations

import io
import math
import random
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from PIL import Image

from toolkit.adapters.base import ClipAdapter, ImageNorm
from toolkit.core.images import aspect_class
from toolkit.data.datasets import compose_pair, tile_tensor
from toolkit.data.tiles import half_tile_sizes, resize_half_tile
from toolkit.demo.scenes import (
    COLOURS,
    SHAPES,
    Scene,
    SceneObject,
    jitter_colour,
    relation,
    render,
    sample_scene,
    scene_rng,
)

TASKS: tuple[str, ...] = ("control_colour", "control_shape", "binding", "three_object_binding",
                          "relation_horizontal", "relation_vertical")
VIEWS: tuple[str, ...] = ("single", "pair_first", "pair_second")
SPLITS: tuple[str, ...] = ("train", "test")
# Colours and shapes each task fixes per combination (the rest of the scene is random).
_FIXED: dict[str, tuple[int, int]] = {
    "control_colour": (3, 0),
    "control_shape": (0, 3),
    "binding": (2, 2),
    "three_object_binding": (3, 3),
    "relation_horizontal": (2, 0),
    "relation_vertical": (2, 0),
}
_AXIS_RELATIONS = {"relation_horizontal": ("left", "right"), "relation_vertical": ("above", "below")}
MAX_DRAWS = 200  # rejection sampling for a relation on one axis accepts about half of the draws


@dataclass(frozen=True)
class ProbeConfig:
    seed: int = 0
    combinations: int = 8  # K: attribute combinations per task, one probe each
    train_items: int = 500  # scenes per combination
    test_items: int = 300
    tasks: tuple[str, ...] = TASKS
    render_size: int = 64  # the demo's stored image size (GenerateConfig.image_size)
    l2: float = 1e-3  # on standardised features, added to the mean log-loss as l2/2 * |w|^2
    max_iter: int = 300  # LBFGS iterations (one full-batch step)
    batch_size: int = 256  # images per encode_image call


@dataclass(frozen=True)
class Combination:
    """The attributes a task fixes for one probe: colours c1, c2, (c3) and shapes s1, s2, (s3)."""

    colours: tuple[str, ...]
    shapes: tuple[str, ...]

    @property
    def name(self) -> str:
        return "/".join(self.colours + self.shapes)


@dataclass(frozen=True)
class ProbeItem:
    scene: Scene  # the probed scene
    distractor: Scene  # the other half of the CLIC pair
    label: bool


def check_task(task: str) -> None:
    if task not in TASKS:
        raise ValueError(f"unknown probe task {task!r}; known tasks: {', '.join(TASKS)}")


def combinations(task: str, seed: int, count: int) -> list[Combination]:
    """`count` distinct combinations of distinct colours (and shapes) for `task`, from their own stream."""
    check_task(task)
    n_colours, n_shapes = _FIXED[task]
    rng = scene_rng(seed, f"probe-{task}-combinations", 0)
    picked: list[Combination] = []
    while len(picked) < count:
        combo = Combination(tuple(rng.sample(list(COLOURS), n_colours)), tuple(rng.sample(list(SHAPES), n_shapes)))
        if combo not in picked:  # a repeated combination would count one probe twice in the mean
            picked.append(combo)
    return picked


def stream_name(task: str, combo_index: int, split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    return f"probe-{task}-{combo_index}-{split}"


def _object_with(obj: SceneObject, colour: str, shape: str, rng: random.Random) -> SceneObject:
    # A fresh jitter of the new colour: the drawn RGB must stay nearest to its own name.
    return replace(obj, colour=colour, shape=shape, rgb=jitter_colour(COLOURS[colour], rng))


def _restyled(scene: Scene, styles: Sequence[tuple[str, str]], rng: random.Random) -> Scene:
    """`scene` with its objects' (colour, shape) replaced; positions, sizes and background kept."""
    objects = tuple(_object_with(obj, c, s, rng) for obj, (c, s) in zip(scene.objects, styles, strict=True))
    return Scene(objects, scene.background)


def _object_of_colour(scene: Scene, colour: str) -> SceneObject:
    matches = [obj for obj in scene.objects if obj.colour == colour]
    if len(matches) != 1:
        raise ValueError(f"the scene has {len(matches)} {colour} objects, expected exactly one")
    return matches[0]


def label_of(task: str, combo: Combination, scene: Scene) -> bool:
    """The task's label, read off the scene (generation targets a label; this is what it is)."""
    check_task(task)
    if task == "control_colour":
        return any(obj.colour == combo.colours[0] for obj in scene.objects)
    if task == "control_shape":
        return any(obj.shape == combo.shapes[0] for obj in scene.objects)
    first = _object_of_colour(scene, combo.colours[0])
    if task in ("binding", "three_object_binding"):
        return first.shape == combo.shapes[0]
    return relation(first, _object_of_colour(scene, combo.colours[1])) == _AXIS_RELATIONS[task][0]


def _probed_scene(task: str, combo: Combination, want: bool, rng: random.Random) -> Scene:
    c, s = combo.colours, combo.shapes
    if task == "control_colour":
        base = sample_scene(rng, 2)
        return _restyled(base, [(c[0] if want else c[1], base.objects[0].shape), (c[2], base.objects[1].shape)],
                         rng)
    if task == "control_shape":
        base = sample_scene(rng, 2)
        return _restyled(base, [(base.objects[0].colour, s[0] if want else s[1]), (base.objects[1].colour, s[2])],
                         rng)
    if task in ("binding", "three_object_binding"):
        styles = [(c[0], s[0]), (c[1], s[1])] if want else [(c[0], s[1]), (c[1], s[0])]
        if task == "three_object_binding":
            styles.append((c[2], s[2]))
        return _restyled(sample_scene(rng, len(styles)), styles, rng)
    # Relations: draw until the pair stands on the task's axis the wanted way round.
    wanted = _AXIS_RELATIONS[task][0 if want else 1]
    for _ in range(MAX_DRAWS):
        base = sample_scene(rng, 2)
        a, b = base.objects
        if relation(a, b) == wanted:
            return _restyled(base, [(c[0], a.shape), (c[1], b.shape)], rng)
    raise RuntimeError(f"no {wanted} scene in {MAX_DRAWS} draws")  # odds about 0.75**200: never


def probe_item(task: str, combo: Combination, seed: int, stream: str, index: int) -> ProbeItem:
    """Item `index` of a stream: labels alternate so each split is balanced (chance = 50 %)."""
    rng = scene_rng(seed, stream, index)
    want = index % 2 == 0
    scene = _probed_scene(task, combo, want, rng)
    # The partner, like a CLIC training partner: another domain-like scene of 2–3 objects; it may share
    # colours or shapes with the probed scene, as training partners do.
    distractor = sample_scene(rng, rng.choice((2, 3)))
    label = label_of(task, combo, scene)
    if label != want:
        raise AssertionError(f"{task} item {index} drew label {label}, wanted {want}")
    return ProbeItem(scene, distractor, label)


def probe_items(task: str, combo: Combination, combo_index: int, seed: int, split: str,
                count: int) -> list[ProbeItem]:
    stream = stream_name(task, combo_index, split)
    return [probe_item(task, combo, seed, stream, i) for i in range(count)]


def pair_aspect(render_size: int) -> str:
    """The aspect class training files the rendered images under (square: wide, stacked top/bottom)."""
    return aspect_class(render_size, render_size)


# ---- images as the model sees them ------------------------------------------------------------------

def half_tile(image: Image.Image, height: int, width: int) -> Image.Image:
    """`image` squeezed into a CLIC half-tile as training squeezes its stored PNG: training decodes stored
    PNGs (lossless) and resizes them with resize_half_tile; going through a PNG in memory runs that very
    function on the very bytes."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    buffer.seek(0)
    return resize_half_tile(buffer, height, width)


def single_view(image: Image.Image, norm: ImageNorm) -> torch.Tensor:
    """The image as evaluation feeds it: at the model's input size, normalised. [3, S, S]"""
    if image.size != (norm.size, norm.size):
        image = image.resize((norm.size, norm.size), Image.Resampling.BICUBIC)
    pixels = tile_tensor(image)
    mean = torch.tensor(norm.mean).view(3, 1, 1)
    std = torch.tensor(norm.std).view(3, 1, 1)
    return (pixels - mean) / std


def pair_view(first: Image.Image, second: Image.Image, aspect: str, norm: ImageNorm) -> torch.Tensor:
    """Two images as one CLIC training image: `first` in the top (wide) or left (tall) half. [3, S, S]"""
    tiles = [tile_tensor(half_tile(image, height, width))
             for image, (height, width) in zip((first, second), half_tile_sizes(aspect, norm.size), strict=True)]
    return compose_pair(tiles[0], tiles[1], aspect, norm)


def view_images(items: Sequence[ProbeItem], view: str, norm: ImageNorm, render_size: int,
                aspect: str) -> torch.Tensor:
    if view not in VIEWS:
        raise ValueError(f"view must be one of {', '.join(VIEWS)}, got {view!r}")
    out = []
    for item in items:
        probed = render(item.scene, render_size)
        if view == "single":
            out.append(single_view(probed, norm))
            continue
        other = render(item.distractor, render_size)
        first, second = (probed, other) if view == "pair_first" else (other, probed)
        out.append(pair_view(first, second, aspect, norm))
    return torch.stack(out)


@torch.inference_mode()
def embed(adapter: ClipAdapter, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """L2-normalised image embeddings: what the text tower has to match."""
    chunks = [adapter.encode_image(images[i:i + batch_size], normalize=True)
              for i in range(0, len(images), batch_size)]
    return torch.cat(chunks).float()


# ---- the linear probe -------------------------------------------------------------------------------

@dataclass(frozen=True)
class LinearProbe:
    mean: torch.Tensor
    std: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor

    def predict(self, features: torch.Tensor) -> torch.Tensor:
        x = (features.double() - self.mean) / self.std
        return (x @ self.weight + self.bias) > 0


def fit_logistic(features: torch.Tensor, labels: torch.Tensor, l2: float = 1e-3,
                 max_iter: int = 300) -> LinearProbe:
    """L2-regularised logistic regression by full-batch LBFGS on standardised features (float64: the
    result does not hang on float32 rounding in the line search)."""
    x = features.double()
    mean = x.mean(0)
    std = x.std(0).clamp_min(1e-8)  # constant features (e.g. a label-independent one) stay finite
    x = (x - mean) / std
    y = labels.double()
    weight = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    bias = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=max_iter, history_size=20,
                                  tolerance_grad=1e-9, tolerance_change=1e-12, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(x @ weight + bias, y)
        loss = loss + 0.5 * l2 * weight.pow(2).sum()
        loss.backward()  # type: ignore[no-untyped-call]
        return loss

    optimiser.step(closure)  # type: ignore[no-untyped-call]
    return LinearProbe(mean, std, weight.detach(), bias.detach())


def probe_accuracy(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
                   l2: float = 1e-3, max_iter: int = 300) -> float:
    """Test accuracy (0-1) of a probe fitted on the train split."""
    probe = fit_logistic(train_x, train_y, l2, max_iter)
    return float((probe.predict(test_x) == test_y.bool()).double().mean())


def mean_and_standard_error(values: Sequence[float]) -> tuple[float, float]:
    """Mean over combinations and its standard error (sample std / sqrt(K); 0 for one value)."""
    if len(values) < 2:
        return statistics.fmean(values), 0.0
    return statistics.fmean(values), statistics.stdev(values) / math.sqrt(len(values))


def class_gap(features: torch.Tensor, labels: torch.Tensor) -> float:
    """Distance between the two classes' mean unit embeddings: the most a unit-length text embedding can
    change its cosine similarity with the image, on average, by reading the property. The probes standardise
    each feature, so they find a property that takes a tiny share of the embedding; the text tower dots
    against the raw embedding at one logit scale, so what CLIC can teach it is bounded by this gap.

    Sample means scatter, so the plain distance between them is biased upwards (by about
    sqrt(tr S1 / n1 + tr S0 / n0) when the classes do not differ at all); this is the unbiased estimate of the
    squared distance, ||m1 - m0||^2 - tr(S1)/n1 - tr(S0)/n0, floored at 0, then its square root."""
    positive, negative = features[labels.bool()].double(), features[~labels.bool()].double()
    if len(positive) < 2 or len(negative) < 2:
        raise ValueError(f"class_gap needs at least 2 items per class, got {len(positive)} and {len(negative)}")
    squared = (positive.mean(0) - negative.mean(0)).pow(2).sum()
    squared -= positive.var(0).sum() / len(positive) + negative.var(0).sum() / len(negative)
    return math.sqrt(max(0.0, float(squared)))


# ---- a whole run ------------------------------------------------------------------------------------

def run_probes(adapter: ClipAdapter, config: ProbeConfig = ProbeConfig(),
               say: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Every task × view for one model: per-combination test accuracies (points), their mean and standard
    error, the same for the test split's `class_gap` (`cosine_gap`), and `pair` = the mean of the two halves
    per combination."""
    norm = adapter.image_norm
    aspect = pair_aspect(config.render_size)
    results: dict[str, Any] = {}
    for task in config.tasks:
        combos = combinations(task, config.seed, config.combinations)
        per_view: dict[str, list[float]] = {view: [] for view in VIEWS}
        gaps: dict[str, list[float]] = {view: [] for view in VIEWS}
        for k, combo in enumerate(combos):
            train = probe_items(task, combo, k, config.seed, "train", config.train_items)
            test = probe_items(task, combo, k, config.seed, "test", config.test_items)
            train_y = torch.tensor([item.label for item in train])
            test_y = torch.tensor([item.label for item in test])
            for view in VIEWS:
                train_x = embed(adapter, view_images(train, view, norm, config.render_size, aspect), config.batch_size)
                test_x = embed(adapter, view_images(test, view, norm, config.render_size, aspect), config.batch_size)
                accuracy = probe_accuracy(train_x, train_y, test_x, test_y, config.l2, config.max_iter)
                per_view[view].append(100.0 * accuracy)
                gaps[view].append(class_gap(test_x, test_y))
            if say is not None:
                say(f"{task} {combo.name}: " + ", ".join(f"{v} {per_view[v][-1]:.1f}" for v in VIEWS))
        for figures in (per_view, gaps):
            figures["pair"] = [(a + b) / 2 for a, b in zip(figures["pair_first"], figures["pair_second"],
                                                            strict=True)]
        results[task] = {
            "combinations": [combo.name for combo in combos],
            "views": {view: {**_summary(accs), "cosine_gap": _summary(gaps[view])}
                      for view, accs in per_view.items()},
        }
    return results


def _summary(values: list[float]) -> dict[str, Any]:
    mean, standard_error = mean_and_standard_error(values)
    return {"mean": mean, "standard_error": standard_error, "per_combination": values}
