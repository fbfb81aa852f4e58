"""Hand-tagged catalogs built straight through the ORM, for tests that need exact tags and splits."""

from __future__ import annotations

import hashlib
from pathlib import Path

from PIL import Image as PILImage

from toolkit.catalog.db import Store
from toolkit.catalog.models import Caption, Image, IngestBatch, Sentence

# (file, RGB colour, width, height, split, [(sentence, space-separated UPOS tags)])
CatalogEntry = tuple[str, tuple[int, int, int], int, int, str, list[tuple[str, str]]]


def add_images(store: Store, root: Path, catalog: list[CatalogEntry]) -> None:
    """Write each image as a solid PNG and store it with one caption whose sentences carry the given tags."""
    with store.session() as session:
        batch = IngestBatch(source_uri="test", source_kind="csv", source_sha256="0" * 64,
                            images_root=str(root), tagger="hand", actor="test", status="committed")
        session.add(batch)
        session.flush()
        for name, colour, width, height, split, sentences in catalog:
            PILImage.new("RGB", (width, height), colour).save(root / name)
            sha = hashlib.sha256(name.encode()).hexdigest()
            image = Image(sha256=sha, images_root=str(root), path=name, width=width, height=height,
                          format="PNG", num_bytes=(root / name).stat().st_size, split=split,
                          batch_id=batch.id)
            session.add(image)
            session.flush()
            text = " ".join(s for s, _ in sentences)
            caption = Caption(image_id=image.id, text=text, batch_id=batch.id,
                              text_sha256=hashlib.sha256(text.encode()).hexdigest())
            session.add(caption)
            session.flush()
            for position, (sentence, tags) in enumerate(sentences):
                tokens = [*sentence[:-1].split(), sentence[-1]]
                session.add(Sentence(caption_id=caption.id, position=position, text=sentence, tokens=tokens,
                                     pos=tags.split(), tagger="hand"))
