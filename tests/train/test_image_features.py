"""precompute_image_features: single-image training that encodes each distinct image once trains the same
model as encoding the pixels at every step."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from tests.helpers import TRAIN_CATALOG, snapshot_train_catalog
from toolkit.adapters.loading import load_model
from toolkit.train.config import ConfigError, TrainConfig
from toolkit.train.job import train_on_snapshot

SINGLE = dict(batch_size=3, epochs=4, concatenate=False, generators=("swap_within", "replace"), progress=False,
              lr=1e-3, seed=3)


def test_features_computed_once_train_the_same_model(tiny_open_clip_spec: str, tmp_path: Path) -> None:
    """Four steps (CLIC and plain alternating) over four epochs of a 4-image snapshot: the same
    losses and the same text weights either way, and the image tower untouched."""
    (tmp_path / "images").mkdir()
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    snapshot_train_catalog(url, tmp_path / "images", TRAIN_CATALOG)
    results = {}
    for precompute in (False, True):
        config = TrainConfig(max_steps=4, precompute_image_features=precompute, **SINGLE)  # type: ignore[arg-type]
        results[precompute] = train_on_snapshot(tiny_open_clip_spec, "latest", tmp_path / f"run-{precompute}",
                                                config, url, track=False)
    each, once = results[False], results[True]
    assert each.global_step == once.global_step == 4
    assert once.last_metrics.keys() == each.last_metrics.keys()
    for name in ("loss/plain", "lr"):
        assert once.last_metrics[name] == pytest.approx(each.last_metrics[name], rel=1e-5)
    # Compared by what the text tower computes: the key projection's bias gets a gradient that is zero up to
    # rounding (softmax ignores a shift shared by all keys), and Adam scales that noise to lr-sized steps.
    trained = [load_model(str(result.out_dir)) for result in (each, once)]
    base = load_model(tiny_open_clip_spec)
    captions = [caption for *_, sentences in TRAIN_CATALOG for caption, _ in sentences]
    with torch.no_grad():
        embeddings = [adapter.encode_text(adapter.tokenize(captions)) for adapter in (base, *trained)]
    assert (embeddings[1] - embeddings[0]).abs().max() > 1e-3, "training changed nothing: nothing to compare"
    torch.testing.assert_close(embeddings[2], embeddings[1], rtol=0, atol=1e-5)
    images = [adapter.model.visual.state_dict() for adapter in (base, *trained)]
    assert all(torch.equal(images[0][name], tower[name]) for tower in images[1:] for name in images[0])


def test_batches_carry_rows_of_the_distinct_images(tiny_open_clip_spec: str, tmp_path: Path) -> None:
    from toolkit.data.batches import CLIC, PLAIN, CatalogBatchSource
    from toolkit.data.samples import SampleConfig
    from toolkit.train.job import _catalog_inputs

    (tmp_path / "images").mkdir()
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    snapshot_train_catalog(url, tmp_path / "images", TRAIN_CATALOG)
    records, snapshot, _, _ = _catalog_inputs(url, "latest")
    # A second caption of the first image: one row of the table serves both.
    records.append(dataclasses.replace(records[0], caption_id=99))
    adapter = load_model(tiny_open_clip_spec)
    samples = SampleConfig(generators=("swap_within", "replace"), concatenate=False)
    source = CatalogBatchSource(records, adapter, 5, 0, snapshot_hash=snapshot, sample_config=samples,
                                image_features=True)
    table = source.image_table()
    assert table is not None and len(records) == 5 and len(table) == 4
    rows = [source.clic.single_image_loader(record) for record in records]  # type: ignore[misc]
    assert [int(row) for row in rows] == [0, 1, 2, 3, 0]
    size = adapter.image_norm.size
    assert {tuple(table[row].shape) for row in range(len(table))} == {(3, size, size)}
    for epoch, kind in enumerate((CLIC, PLAIN)):  # one batch of all five records per epoch
        (batch,) = source.batches(epoch, 0, [kind])
        assert batch.images.dtype == torch.int64 and sorted(batch.images.tolist()) == [0, 0, 1, 2, 3]
    with pytest.raises(ValueError, match="single images"):
        CatalogBatchSource(records, adapter, 3, 0, sample_config=SampleConfig(), image_features=True)


def test_precomputing_concatenated_pairs_is_refused() -> None:
    with pytest.raises(ConfigError, match="precompute_image_features needs concatenate = false"):
        TrainConfig(precompute_image_features=True)
    with pytest.raises(ConfigError, match="precompute_image_features must be true or false"):
        TrainConfig(concatenate=False, generators=("swap_within",), precompute_image_features="yes")  # type: ignore[arg-type]
    single = TrainConfig(concatenate=False, generators=("swap_within",))
    assert TrainConfig(concatenate=False, generators=("swap_within",),
                       precompute_image_features=True).fingerprint() == single.fingerprint()
