"""Generated compositional scenes: coloured shapes with sizes and spatial relations, and their captions.

Pure (PIL + the standard library, no torch). Every scene is a deterministic function of
(seed, stream, index): `random.Random` seeded with a string hashes it with SHA-512, so the same scene
comes back on every machine and Python version, and streams (pretraining, domain data, evaluation) never
share a scene generator.

Two caption styles, on purpose:
- `alt_text_caption` names ONE object, like web alt text. A CLIP pretrained on it reads two-object captions
  as a bag of words and does not bind colours to shapes in them (which is where real CLIP starts).
- `domain_caption` describes the whole composition in several sentences (first sentence = the main
  composition, the rest = extra positives), like the customer data that CLIC fine-tunes on.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from PIL import Image, ImageDraw

# Colour names and their drawn RGB. Chosen to stay apart from one another and from the dark background.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (50, 90, 235),
    "yellow": (240, 225, 40),
    "purple": (145, 55, 200),
    "orange": (250, 140, 20),
    "pink": (250, 140, 200),
    "cyan": (40, 215, 225),
    "white": (245, 245, 245),
    "brown": (135, 85, 35),
}
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond", "star", "cross", "heart", "hexagon")
SIZES: dict[str, tuple[float, float]] = {"small": (0.085, 0.11), "large": (0.14, 0.18)}  # half-extent / side
COLOUR_JITTER = 12  # per channel; keeps every drawn colour nearest to its own name
BACKGROUND_RANGE = (25, 60)  # dark grey level

RELATION_PHRASES: dict[str, str] = {
    "left": "to the left of",
    "right": "to the right of",
    "above": "above",
    "below": "below",
}


@dataclass(frozen=True)
class SceneObject:
    colour: str
    shape: str
    size: str
    x: float  # centre, as a fraction of the image side (0 = left)
    y: float  # centre, as a fraction of the image side (0 = top)
    radius: float  # half-extent, as a fraction of the image side
    rgb: tuple[int, int, int]  # the jittered colour actually drawn

    @property
    def noun_phrase(self) -> str:
        return f"{self.colour} {self.shape}"


@dataclass(frozen=True)
class Scene:
    objects: tuple[SceneObject, ...]
    background: tuple[int, int, int]


def scene_rng(seed: int, stream: str, index: int) -> random.Random:
    return random.Random(f"clic-demo:{seed}:{stream}:{index}")


def relation(a: SceneObject, b: SceneObject) -> str:
    """Where `a` is relative to `b`, along the axis on which they are further apart."""
    dx, dy = a.x - b.x, a.y - b.y
    if abs(dx) >= abs(dy):
        return "left" if dx < 0 else "right"
    return "above" if dy < 0 else "below"


def jitter_colour(rgb: tuple[int, int, int], rng: random.Random) -> tuple[int, int, int]:
    r, g, b = (min(255, max(0, c + rng.randint(-COLOUR_JITTER, COLOUR_JITTER))) for c in rgb)
    return (r, g, b)


def _clear_relation(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """The dominant axis must win by a margin, so "left of" vs "above" is never a coin toss."""
    dx, dy = abs(a[0] - b[0]), abs(a[1] - b[1])
    return max(dx, dy) >= 1.6 * min(dx, dy)


def _place(rng: random.Random, radii: list[float], max_tries: int = 2000) -> list[tuple[float, float]]:
    """Centres for objects of the given radii: inside the frame, apart, clear relations between pairs."""
    for _ in range(max_tries):
        centres: list[tuple[float, float]] = []
        for r in radii:
            margin = r + 0.03
            centres.append((rng.uniform(margin, 1 - margin), rng.uniform(margin, 1 - margin)))
        apart = all(
            math.dist(centres[i], centres[j]) > radii[i] + radii[j] + 0.04
            and _clear_relation(centres[i], centres[j])
            for i in range(len(radii))
            for j in range(i + 1, len(radii))
        )
        if apart:
            return centres
    raise RuntimeError(f"could not place {len(radii)} objects apart in {max_tries} tries; "
                       "use fewer or smaller objects")


def sample_scene(
    rng: random.Random,
    n_objects: int,
    distinct: bool = True,
    sizes: list[str] | None = None,
) -> Scene:
    """A scene of `n_objects`; with `distinct`, no two objects share a colour or a shape (so a caption's
    noun phrases are unambiguous and attribute swaps always change the meaning)."""
    colours = list(COLOURS)
    if distinct:
        picked_colours = rng.sample(colours, n_objects)
        picked_shapes = rng.sample(list(SHAPES), n_objects)
    else:
        picked_colours = [rng.choice(colours) for _ in range(n_objects)]
        picked_shapes = [rng.choice(SHAPES) for _ in range(n_objects)]
    picked_sizes = sizes if sizes is not None else [rng.choice(list(SIZES)) for _ in range(n_objects)]
    radii = [rng.uniform(*SIZES[s]) for s in picked_sizes]
    centres = _place(rng, radii)
    objects = tuple(
        SceneObject(c, s, z, x, y, r, jitter_colour(COLOURS[c], rng))
        for c, s, z, (x, y), r in zip(picked_colours, picked_shapes, picked_sizes, centres, radii,
                                      strict=True)
    )
    level = rng.randint(*BACKGROUND_RANGE)
    return Scene(objects, (level, level, level))


# ---- rendering -------------------------------------------------------------------------------------

def _regular_polygon(cx: float, cy: float, r: float, n: int, phase: float) -> list[tuple[float, float]]:
    return [(cx + r * math.cos(phase + 2 * math.pi * k / n), cy + r * math.sin(phase + 2 * math.pi * k / n))
            for k in range(n)]


def _draw_object(draw: ImageDraw.ImageDraw, obj: SceneObject, side: int) -> None:
    cx, cy, r, fill = obj.x * side, obj.y * side, obj.radius * side, obj.rgb
    if obj.shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif obj.shape == "square":
        h = r * 0.88
        draw.rectangle([cx - h, cy - h, cx + h, cy + h], fill=fill)
    elif obj.shape == "triangle":  # centred on its centroid, pointing up
        draw.polygon(_regular_polygon(cx, cy + r * 0.15, r * 1.1, 3, -math.pi / 2), fill=fill)
    elif obj.shape == "diamond":
        draw.polygon([(cx, cy - r), (cx + r * 0.75, cy), (cx, cy + r), (cx - r * 0.75, cy)], fill=fill)
    elif obj.shape == "star":
        outer = _regular_polygon(cx, cy, r * 1.05, 5, -math.pi / 2)
        inner = _regular_polygon(cx, cy, r * 0.45, 5, -math.pi / 2 + math.pi / 5)
        draw.polygon([p for pair in zip(outer, inner, strict=True) for p in pair], fill=fill)
    elif obj.shape == "cross":
        w = r * 0.35
        draw.rectangle([cx - r, cy - w, cx + r, cy + w], fill=fill)
        draw.rectangle([cx - w, cy - r, cx + w, cy + r], fill=fill)
    elif obj.shape == "heart":
        lobe = r * 0.5
        draw.ellipse([cx - 2 * lobe, cy - r * 0.75, cx, cy - r * 0.75 + 2 * lobe], fill=fill)
        draw.ellipse([cx, cy - r * 0.75, cx + 2 * lobe, cy - r * 0.75 + 2 * lobe], fill=fill)
        point = [(cx - r * 0.97, cy - r * 0.15), (cx + r * 0.97, cy - r * 0.15), (cx, cy + r)]
        draw.polygon(point, fill=fill)
    elif obj.shape == "hexagon":
        draw.polygon(_regular_polygon(cx, cy, r, 6, 0.0), fill=fill)
    else:
        raise ValueError(f"unknown shape {obj.shape!r}; known shapes: {', '.join(SHAPES)}")


def render(scene: Scene, size: int = 64, supersample: int = 4) -> Image.Image:
    """Draw at `supersample`× and downscale: edges are anti-aliased, object centres keep their colour."""
    side = size * supersample
    image = Image.new("RGB", (side, side), scene.background)
    draw = ImageDraw.Draw(image)
    for obj in scene.objects:
        _draw_object(draw, obj, side)
    return image.resize((size, size), Image.Resampling.LANCZOS) if supersample > 1 else image


# ---- captions --------------------------------------------------------------------------------------

_ALT_TEXT_TEMPLATES = (
    "{a_colour} {shape}.",
    "a photo of {a_colour} {shape}.",
    "{colour} {shape} on a dark background.",
    "a {size} {colour} {shape}.",
    "picture of {a_colour} {shape}.",
    "{a_colour} {shape} icon.",
    "the {colour} {shape}.",
    "{colour} {shape} clip art.",
)


# Alt text often names only what is striking about the object: its shape or its colour. These captions make
# the image tower learn shape and colour each on its own (not only the 80 pairs), still naming one object.
_SHAPE_ONLY_TEMPLATES = ("a {shape}.", "a photo of a {shape}.", "{shape} icon.", "the {shape}.")
_COLOUR_ONLY_TEMPLATES = ("something {colour}.", "a {colour} shape.", "a photo of something {colour}.",
                          "{colour} clip art.")
SHAPE_ONLY_SHARE = 0.25
COLOUR_ONLY_SHARE = 0.15


def alt_text_caption(scene: Scene, rng: random.Random) -> str:
    """Web-alt-text-like caption: names only the scene's first object: its shape only, its colour only, or
    (most often) both."""
    named = scene.objects[0]
    style = rng.random()
    if style < SHAPE_ONLY_SHARE:
        return rng.choice(_SHAPE_ONLY_TEMPLATES).format(shape=named.shape)
    if style < SHAPE_ONLY_SHARE + COLOUR_ONLY_SHARE:
        return rng.choice(_COLOUR_ONLY_TEMPLATES).format(colour=named.colour)
    template = rng.choice(_ALT_TEXT_TEMPLATES)
    return template.format(colour=named.colour, a_colour=with_article(named.colour), shape=named.shape,
                           size=named.size)


def with_article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def _phrase(obj: SceneObject, with_size: bool) -> str:
    return with_article(f"{obj.size} {obj.noun_phrase}" if with_size else obj.noun_phrase)


def composition_sentence(a: SceneObject, b: SceneObject, rng: random.Random) -> str:
    """The main composition of two objects: their attributes and how they stand to each other."""
    rel = RELATION_PHRASES[relation(a, b)]
    pa, pb = _phrase(a, rng.random() < 0.3), _phrase(b, rng.random() < 0.3)
    template = rng.choice(("{a} {rel} {b}.", "there is {a} {rel} {b}.", "{a} and {b}."))
    return template.format(a=pa, b=pb, rel=rel)


def domain_sentences(scene: Scene, rng: random.Random) -> list[str]:
    """Several sentences: [main composition, then extra positives in random order]."""
    objects = scene.objects
    if len(objects) < 2:
        raise ValueError("domain captions describe a composition: a scene needs at least two objects")
    first = composition_sentence(objects[0], objects[1], rng)
    extra: list[str] = []
    for obj in objects:
        extra.append(f"the {obj.shape} is {obj.colour}.")
        extra.append(f"the {obj.noun_phrase} is {obj.size}.")
    for i in range(len(objects)):
        for j in range(i + 1, len(objects)):
            a, b = (objects[i], objects[j]) if rng.random() < 0.5 else (objects[j], objects[i])
            extra.append(f"the {a.noun_phrase} is {RELATION_PHRASES[relation(a, b)]} the {b.noun_phrase}.")
    count = ("two", "three", "four", "five")[len(objects) - 2]
    extra.append(f"there are {count} shapes on a dark background.")
    rng.shuffle(extra)
    return [first, *extra[: rng.randint(2, 4)]]


def domain_caption(scene: Scene, rng: random.Random) -> str:
    return " ".join(domain_sentences(scene, rng))


def two_object_phrase(a: SceneObject, b: SceneObject) -> str:
    """The evaluation caption form, "a red circle and a blue square." (no relation, no size)."""
    return f"{with_article(a.noun_phrase)} and {with_article(b.noun_phrase)}."


def swap_attribute_phrase(a: SceneObject, b: SceneObject) -> str:
    """The hard negative for `two_object_phrase`: the same words with the two colours swapped."""
    return f"{with_article(f'{b.colour} {a.shape}')} and {with_article(f'{a.colour} {b.shape}')}."


def nearest_colour_name(rgb: tuple[int, int, int]) -> str:
    """The palette name closest to an RGB value (tests use it to check what was actually drawn)."""
    return min(COLOURS, key=lambda name: sum((p - q) ** 2 for p, q in zip(COLOURS[name], rgb, strict=True)))
