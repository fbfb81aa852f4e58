"""The governance tests' fixtures: a catalog (one ingested image with a two-sentence caption, tagged by the
real tagger) and a loadable model folder."""

from __future__ import annotations

import json

import pytest

from tests.helpers import write_png
from toolkit.adapters.loading import load_model
from toolkit.adapters.outputs import write_model_folder
from toolkit.catalog import open_store
from toolkit.core.config import IngestConfig
from toolkit.ingest import ingest_source, load_tagger


@pytest.fixture
def catalog(tmp_path):
    write_png(tmp_path / "a.png", (40, 30), (200, 10, 10))
    (tmp_path / "m.jsonl").write_text(json.dumps({"image": "a.png", "caption": "A blue cube. It is small."}))
    store = open_store(f"sqlite:///{tmp_path / 'c.db'}")
    ingest_source(store, tmp_path / "m.jsonl", IngestConfig(images_root=tmp_path), blob_dir=tmp_path / "b",
                  tagger=load_tagger())
    yield store
    store.close()


@pytest.fixture
def model_dir(tmp_path, tiny_open_clip_spec):
    """A loadable toolkit model folder (what `toolkit train` writes), from the tiny random CLIP."""
    folder = tmp_path / "model"
    write_model_folder(load_model(tiny_open_clip_spec), folder, {})
    return folder
