"""A synthetic, COCO-shaped training corpus for the data-path benchmarks: no catalog, no downloads.

Images are 640×480 (wide) or 480×640 (tall, one in four, as in COCO) JPEGs at quality 90 with smooth
gradients, shapes and grain, so each file is ~60–120 KB like a real photo and decodes at a realistic cost.
Captions are 3–4 tagged sentences (12–20 words for the first), built from templates with UPOS tags, so
negatives, pairing and tokenisation do the work they do on real data.
"""

from __future__ import annotations

import hashlib
import io
import random
from pathlib import Path

import numpy as np
from PIL import Image as PILImage
from PIL import ImageDraw

from toolkit.data.samples import TrainingRecord
from toolkit.data.tiles import TileSource
from toolkit.negatives.generators import TaggedSentence

ADJ = ["red", "blue", "green", "small", "large", "old", "young", "wooden", "shiny", "striped", "tall", "white"]
NOUN = ["man", "woman", "dog", "cat", "table", "car", "tree", "ball", "cube", "hat", "garden", "river",
        "bench", "kite", "horse", "plate", "window", "boat", "bird", "chair"]
VERB = ["holding", "wearing", "watching", "carrying", "pushing", "chasing", "touching", "pulling"]
ADP = ["near", "under", "behind", "beside", "above", "on", "in front of"]
ADV = ["slowly", "nearby", "outside", "quietly", "together"]


def _sentence(rng: random.Random, long: bool) -> TaggedSentence:
    words: list[tuple[str, str]] = [("a", "DET"), (rng.choice(ADJ), "ADJ"), (rng.choice(NOUN), "NOUN"),
                                    (rng.choice(VERB), "VERB"), ("a", "DET"), (rng.choice(ADJ), "ADJ"),
                                    (rng.choice(NOUN), "NOUN")]
    if long:
        place = rng.choice(ADP).split()
        words += [(w, "ADP" if i == len(place) - 1 else "NOUN" if w == "front" else "ADP")
                  for i, w in enumerate(place)]
        words += [("the", "DET"), (rng.choice(ADJ), "ADJ"), (rng.choice(NOUN), "NOUN"),
                  ("with", "ADP"), ("a", "DET"), (rng.choice(NOUN), "NOUN"), (rng.choice(ADV), "ADV")]
    words[0] = ("A", "DET")
    words.append((".", "PUNCT"))
    return TaggedSentence.of([w for w, _ in words], [t for _, t in words])


def caption_sentences(rng: random.Random) -> tuple[TaggedSentence, ...]:
    return (_sentence(rng, True), *tuple(_sentence(rng, rng.random() < 0.5) for _ in range(rng.randint(2, 3))))


def photo_jpeg(width: int, height: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([x / width * 200, y / height * 200, (x + y) / (width + height) * 255], axis=-1)
    grain = rng.normal(0, 10, size=(height, width, 3))
    image = PILImage.fromarray(np.clip(base + grain, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    shapes = random.Random(seed)
    for _ in range(12):
        x0, y0 = shapes.randrange(width), shapes.randrange(height)
        box = (x0, y0, x0 + shapes.randrange(20, 200), y0 + shapes.randrange(20, 200))
        colour = tuple(shapes.randrange(256) for _ in range(3))
        (draw.ellipse if shapes.random() < 0.5 else draw.rectangle)(box, fill=colour)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def make_corpus(folder: Path, num_images: int, num_records: int, seed: int = 0,
                ) -> tuple[list[TrainingRecord], list[TileSource]]:
    """Write `num_images` JPEGs into `folder`; `num_records` captions cycle over them (several per image)."""
    folder.mkdir(parents=True, exist_ok=True)
    sources = []
    for index in range(num_images):
        width, height = (480, 640) if index % 4 == 3 else (640, 480)
        path = folder / f"{index:06d}.jpg"
        data = path.read_bytes() if path.is_file() else photo_jpeg(width, height, seed * 1_000_003 + index)
        path.write_bytes(data)
        sources.append(TileSource(index, hashlib.sha256(data).hexdigest(), path, width, height))
    rng = random.Random(seed)
    records = [TrainingRecord(caption_id=i, image_id=sources[i % num_images].image_id,
                              image_path=sources[i % num_images].path, width=sources[i % num_images].width,
                              height=sources[i % num_images].height, sentences=caption_sentences(rng),
                              sha256=sources[i % num_images].sha256)
               for i in range(num_records)]
    return records, sources
