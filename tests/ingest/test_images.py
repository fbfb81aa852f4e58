"""Images reach training as they look: a 16-bit greyscale PNG keeps its greys (scaled, not clipped to white),
and a photo with an EXIF orientation is stored with its upright width and height and read upright."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image as PILImage
from sqlalchemy import select

from toolkit.catalog import open_store
from toolkit.catalog.models import Image
from toolkit.catalog.snapshot import create_snapshot
from toolkit.core.config import IngestConfig
from toolkit.core.images import aspect_class
from toolkit.data.datasets import load_half_tiles
from toolkit.data.samples import TrainingRecord
from toolkit.data.tile_cache import CachedHalfTiles, TileCache
from toolkit.data.tiles import TileSource, prepare_sources, snapshot_tile_sources, tiles_root
from toolkit.ingest import ingest_source, load_tagger

TILE_SIZE = 32

# What the stored pixels must be turned by so that applying the EXIF orientation gives the upright image.
STORED_FROM_UPRIGHT = {3: PILImage.Transpose.ROTATE_180, 6: PILImage.Transpose.ROTATE_90,
                       8: PILImage.Transpose.ROTATE_270}


@pytest.fixture(scope="module")
def tagger():
    return load_tagger()


def _ingest_one(tmp_path: Path, name: str, data: bytes, tagger) -> tuple[object, Image]:
    root = tmp_path / "images"
    root.mkdir(exist_ok=True)
    (root / name).write_bytes(data)
    manifest = tmp_path / f"{name}.jsonl"
    manifest.write_text(json.dumps({"image": name, "caption": "A red cube left of a blue ball."}) + "\n")
    store = open_store(f"sqlite:///{tmp_path / 'catalog.db'}")
    ingest_source(store, manifest, IngestConfig(images_root=root), blob_dir=tmp_path / "blobs", tagger=tagger)
    with store.session() as session:
        row = session.scalars(select(Image).where(Image.path == name)).one()
    return store, row


def _record(row: Image) -> TrainingRecord:
    return TrainingRecord(1, row.id, Path(row.images_root) / row.path, row.width, row.height, (), row.sha256)


def _half_tile(row: Image, tmp_path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """The image's half-tile through both training paths: plain decode, and the tile cache."""
    record = _record(row)
    plain = load_half_tiles(record, record, record.aspect, TILE_SIZE)[0]
    root = tiles_root(tmp_path / "ws", TILE_SIZE)
    assert not prepare_sources([_source(row)], root, TILE_SIZE, "snap").errors
    cached = CachedHalfTiles(TileCache(root))(record, record, record.aspect, TILE_SIZE)[0]
    return plain, cached


def _source(row: Image) -> TileSource:
    return TileSource(row.id, row.sha256, Path(row.images_root) / row.path, row.width, row.height)


def _grey16_gradient_png(width: int = 64, height: int = 48) -> tuple[bytes, float]:
    """A 16-bit greyscale PNG, a left-to-right ramp over the full 0-65535 range; and its mean in [0, 1]."""
    ramp = np.linspace(0, 65535, width).round().astype(np.uint16)
    pixels = np.tile(ramp, (height, 1))
    image = PILImage.fromarray(pixels)
    assert image.mode == "I;16"
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue(), float(pixels.mean() / 65535)


def test_a_16_bit_greyscale_png_reaches_training_grey_not_white(tmp_path, tagger):
    data, expected_mean = _grey16_gradient_png()
    store, row = _ingest_one(tmp_path, "ramp16.png", data, tagger)
    for tile in _half_tile(row, tmp_path):
        mean = tile.mean().item()
        assert abs(mean - expected_mean) < 0.02, f"mean {mean:.3f}, want {expected_mean:.3f}"
        assert tile[:, :, 0].mean() < 0.1 and tile[:, :, -1].mean() > 0.9  # still a ramp: dark left, light right
        assert (tile >= 0.999).float().mean() < 0.1  # main's convert("RGB") left ~99.6 % of it white
    store.close()


def _upright_scene() -> PILImage.Image:
    """64x32 (wide): red left half, blue right half, a green band along the top: every turn shows."""
    image = PILImage.new("RGB", (64, 32), (220, 20, 20))
    image.paste((20, 20, 220), (32, 0, 64, 32))
    image.paste((20, 200, 40), (0, 0, 64, 8))
    return image


def _jpeg(image: PILImage.Image, orientation: int | None = None) -> bytes:
    buffer = io.BytesIO()
    exif = PILImage.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    image.save(buffer, format="JPEG", quality=100, subsampling=0, exif=exif)
    return buffer.getvalue()


@pytest.mark.parametrize("orientation", [6, 8, 3])
def test_an_exif_rotated_jpeg_is_stored_and_read_upright(tmp_path, tagger, orientation):
    upright = _upright_scene()
    data = _jpeg(upright.transpose(STORED_FROM_UPRIGHT[orientation]), orientation)
    stored_size = PILImage.open(io.BytesIO(data)).size
    assert stored_size == ((32, 64) if orientation in (6, 8) else (64, 32))
    store, row = _ingest_one(tmp_path, f"turned{orientation}.jpg", data, tagger)

    assert (row.width, row.height) == upright.size  # the upright size: 6 and 8 swap the stored one
    assert aspect_class(row.width, row.height) == "wide"
    assert row.sha256 == hashlib.sha256(data).hexdigest()  # still the file's bytes: training checks them

    # The same photo saved upright, without EXIF, through the same paths: the pixels must agree.
    _, upright_row = _ingest_one(tmp_path, "upright.jpg", _jpeg(upright), tagger)
    for tile, want in zip(_half_tile(row, tmp_path), _half_tile(upright_row, tmp_path), strict=True):
        assert tile.shape == want.shape
        assert (tile - want).abs().mean().item() < 0.01  # JPEG re-encoding noise only
    assert row.orientation == orientation  # recorded: the catalog says which turn every reader applies
    store.close()


def test_snapshot_tile_sources_carry_the_upright_size(tmp_path, tagger):
    data = _jpeg(_upright_scene().transpose(STORED_FROM_UPRIGHT[6]), 6)
    store, _ = _ingest_one(tmp_path, "turned.jpg", data, tagger)
    with store.session() as session:
        session.execute(Image.__table__.update().values(split="train"))
    create_snapshot(store, name="s")
    with store.session() as session:
        _, sources = snapshot_tile_sources(session, "latest")
    assert [(s.width, s.height, s.aspect) for s in sources] == [(64, 32, "wide")]
    store.close()
