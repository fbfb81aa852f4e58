"""The tile cache: `toolkit data prepare` and the fast data path, which must give the plain path's batches."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image as PILImage

from tests.helpers import run_toolkit
from toolkit.adapters.loading import load_model
from toolkit.catalog.db import Store, open_store
from toolkit.catalog.models import Caption, Image, IngestBatch, Sentence
from toolkit.catalog.snapshot import create_snapshot
from toolkit.data.batches import CLIC, PLAIN, CatalogBatchSource
from toolkit.data.records import load_training_records
from toolkit.data.tile_cache import TileCache, resolve_tile_cache
from toolkit.data.tiles import (
    TileError,
    find_tile_index,
    half_tile_path,
    prepare_tiles,
    tiles_root,
)

SIZE = 32  # the tiny open_clip model's input size
# (file, width, height, first sentence): textured photos (noise) so that resize filters differ; two JPEGs
# large enough for JPEG draft decoding at this size, odd sizes, two aspect classes with two images each.
CATALOG = [
    ("w1.jpg", 160, 90, "A man wearing a black hat."),
    ("w2.png", 45, 31, "A water feature in a garden."),
    ("t1.jpg", 70, 150, "A red cube left of a blue ball."),
    ("t2.png", 33, 47, "A tall tower near a river."),
]
TAGS = {"A man wearing a black hat.": "DET NOUN VERB DET ADJ NOUN PUNCT",
        "A water feature in a garden.": "DET NOUN NOUN ADP DET NOUN PUNCT",
        "A red cube left of a blue ball.": "DET ADJ NOUN ADV ADP DET ADJ NOUN PUNCT",
        "A tall tower near a river.": "DET ADJ NOUN ADP DET NOUN PUNCT"}


def _photo(width: int, height: int, seed: int) -> PILImage.Image:
    rng = np.random.default_rng(seed)
    smooth = np.linspace(0, 200, width * height * 3).reshape(height, width, 3)
    noise = rng.integers(0, 56, size=(height, width, 3))
    return PILImage.fromarray((smooth + noise).astype(np.uint8))


def _add_catalog(store: Store, root: Path) -> None:
    with store.session() as session:
        batch = IngestBatch(source_uri="test", source_kind="csv", source_sha256="0" * 64, images_root=str(root),
                            tagger="hand", actor="test", status="committed")
        session.add(batch)
        session.flush()
        for index, (name, width, height, sentence) in enumerate(CATALOG):
            buffer = io.BytesIO()
            _photo(width, height, index).save(buffer, format="JPEG" if name.endswith("jpg") else "PNG",
                                              quality=90)
            (root / name).write_bytes(buffer.getvalue())
            image = Image(sha256=hashlib.sha256(buffer.getvalue()).hexdigest(), images_root=str(root),
                          path=name, width=width, height=height, format=name[-3:].upper(),
                          num_bytes=len(buffer.getvalue()), split="train", batch_id=batch.id)
            session.add(image)
            session.flush()
            text = f"{sentence} It is day."
            caption = Caption(image_id=image.id, text=text, batch_id=batch.id,
                              text_sha256=hashlib.sha256(text.encode()).hexdigest())
            session.add(caption)
            session.flush()
            for position, (words, tags) in enumerate([(sentence, TAGS[sentence]),
                                                      ("It is day.", "PRON AUX NOUN PUNCT")]):
                session.add(Sentence(caption_id=caption.id, position=position, text=words,
                                     tokens=[*words[:-1].split(), "."], pos=tags.split(), tagger="hand"))
    create_snapshot(store, name="tiny")


@pytest.fixture
def store(catalog_url: str, tmp_path: Path) -> Store:
    (tmp_path / "images").mkdir()
    store = open_store(catalog_url)
    _add_catalog(store, tmp_path / "images")
    return store


def _snapshot_hash(store: Store) -> str:
    from toolkit.catalog.snapshot import resolve_snapshot

    with store.session() as session:
        return resolve_snapshot(session, "latest").content_hash


def _batches(store: Store, spec: str, cache: TileCache | None) -> list:  # type: ignore[type-arg]
    with store.session() as session:
        records = load_training_records(session, "latest")
    source = CatalogBatchSource(records, load_model(spec, allow_random_init=True), 2, seed=7,
                                tile_cache=cache)
    return list(source.batches(0, 0, [CLIC, PLAIN])) + list(source.batches(1, 0, [PLAIN, CLIC]))


@pytest.mark.parametrize("fmt", ["png", "npy"])
def test_fast_and_plain_paths_give_bit_identical_batches(store: Store, tiny_open_clip_spec: str,
                                                        tmp_path: Path, fmt: str) -> None:
    report = prepare_tiles(store, "latest", SIZE, tmp_path / "ws", fmt=fmt)
    assert (report.images, report.files_written, report.errors) == (4, 8, [])
    cache = resolve_tile_cache("require", tmp_path / "ws", _snapshot_hash(store), SIZE)
    assert cache == TileCache(tiles_root(tmp_path / "ws", SIZE), fmt)
    plain, fast = _batches(store, tiny_open_clip_spec, None), _batches(store, tiny_open_clip_spec, cache)
    assert len(plain) == len(fast) == 4
    for slow_batch, fast_batch in zip(plain, fast, strict=True):
        assert torch.equal(slow_batch.images, fast_batch.images)
        assert torch.equal(slow_batch.tokens, fast_batch.tokens)
        assert slow_batch.texts == fast_batch.texts
    # Both kinds of step really read the cache (a loader that fell back to decoding would prove nothing).
    with store.session() as session:
        records = load_training_records(session, "latest")
    source = CatalogBatchSource(records, load_model(tiny_open_clip_spec, allow_random_init=True), 2, 7,
                                tile_cache=cache)
    assert source.data_path == {"clic": f"tiles:{cache}", "plain": f"tiles:{cache}"}


def test_the_equality_check_catches_another_resize_filter_or_aspect(store: Store, tiny_open_clip_spec: str,
                                                                   tmp_path: Path) -> None:
    prepare_tiles(store, "latest", SIZE, tmp_path / "ws")
    root = tiles_root(tmp_path / "ws", SIZE)
    plain = _batches(store, tiny_open_clip_spec, None)
    with store.session() as session:
        wide = next(r for r in load_training_records(session, "latest") if r.image_path.name == "w1.jpg")
    # Same tile size, bilinear instead of bicubic: the batches must differ.
    half = half_tile_path(root, wide.sha256)
    PILImage.open(wide.image_path).convert("RGB").resize((SIZE, SIZE // 2), PILImage.Resampling.BILINEAR
                                                        ).save(half)
    fast = _batches(store, tiny_open_clip_spec, TileCache(root))
    assert not all(torch.equal(a.images, b.images) for a, b in zip(plain, fast, strict=True))
    # A tile of the wrong aspect (tall shape for a wide image) is refused, naming the image.
    PILImage.open(wide.image_path).convert("RGB").resize((SIZE // 2, SIZE)).save(half)
    with pytest.raises(Exception, match=r"w1\.jpg.*expected \(16, 32\)"):
        _batches(store, tiny_open_clip_spec, TileCache(root))


def test_prepare_is_idempotent_and_marks_the_snapshot_finished(store: Store, tmp_path: Path) -> None:
    first = prepare_tiles(store, "latest", SIZE, tmp_path / "ws", workers=2)
    root = tiles_root(tmp_path / "ws", SIZE)
    files = sorted(p for p in root.rglob("*.png"))
    assert len(files) == 8 and not list(root.rglob("*.tmp"))
    assert first.bytes_written == first.bytes_total == sum(p.stat().st_size for p in files)
    mtimes = [p.stat().st_mtime_ns for p in files]
    again = prepare_tiles(store, "latest", SIZE, tmp_path / "ws")
    assert (again.files_written, again.images_skipped, again.bytes_written) == (0, 4, 0)
    assert [p.stat().st_mtime_ns for p in files] == mtimes
    index = find_tile_index(tmp_path / "ws", _snapshot_hash(store), SIZE)
    assert index is not None and index["images"] == 4 and index["bytes"] == first.bytes_total
    with PILImage.open(files[0]) as tile:  # half-tiles: wide 16x32 (h x w), tall 32x16; crops 32x32
        assert tile.size in ((32, 16), (16, 32), (32, 32))


def test_changed_or_missing_images_are_named_and_leave_the_cache_unfinished(store: Store,
                                                                           tmp_path: Path) -> None:
    images = tmp_path / "images"
    originals = {name: (images / name).read_bytes() for name in ("w2.png", "t1.jpg")}
    (images / "w2.png").write_bytes(originals["w2.png"] + b"tampered")
    (images / "t1.jpg").unlink()
    report = prepare_tiles(store, "latest", SIZE, tmp_path / "ws")
    assert len(report.errors) == 2
    assert any("w2.png" in e and "changed since ingest" in e for e in report.errors)
    assert any("t1.jpg" in e and "cannot read" in e for e in report.errors)
    assert report.files_written == 4  # the two good images are tiled and kept for the re-run
    assert find_tile_index(tmp_path / "ws", _snapshot_hash(store), SIZE) is None
    with pytest.raises(TileError, match="toolkit data prepare"):
        resolve_tile_cache("require", tmp_path / "ws", _snapshot_hash(store), SIZE)
    # Once the files are back, a re-run tiles only what is missing and marks the cache finished.
    for name, data in originals.items():
        (images / name).write_bytes(data)
    rerun = prepare_tiles(store, "latest", SIZE, tmp_path / "ws")
    assert (rerun.errors, rerun.files_written, rerun.images_skipped) == ([], 4, 2)
    assert find_tile_index(tmp_path / "ws", _snapshot_hash(store), SIZE) is not None


def test_tile_policy(store: Store, tmp_path: Path) -> None:
    snapshot_hash, workspace = _snapshot_hash(store), tmp_path / "ws"
    assert resolve_tile_cache("auto", workspace, snapshot_hash, SIZE) is None
    with pytest.raises(TileError, match=f"prepare --snapshot {snapshot_hash[:12]} --size {SIZE}"):
        resolve_tile_cache("require", workspace, snapshot_hash, SIZE)
    prepare_tiles(store, "latest", SIZE, workspace)
    assert resolve_tile_cache("auto", workspace, snapshot_hash, SIZE) == TileCache(tiles_root(workspace, SIZE))
    assert resolve_tile_cache("off", workspace, snapshot_hash, SIZE) is None
    assert resolve_tile_cache("auto", workspace, snapshot_hash, 64) is None  # another model size
    with pytest.raises(TileError, match="even input size"):
        prepare_tiles(store, "latest", 33, workspace)


def test_prepare_cli_reports_counts_and_names_the_image_at_fault(store: Store, catalog_url: str,
                                                                 tmp_path: Path) -> None:
    import typer

    from toolkit.cli.data import register as register_data
    from toolkit.cli.tiles import register as register_tiles
    from toolkit.core.config import workspace_dir

    app = typer.Typer()
    register_data(app)
    register_tiles(app)
    done = run_toolkit(["data", "prepare", "--snapshot", "tiny", "--size", str(SIZE), "--db", catalog_url,
                               "--json"])
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["files_written"] == 8
    assert find_tile_index(workspace_dir(), _snapshot_hash(store), SIZE) is not None
    (tmp_path / "images" / "t2.png").write_bytes(b"not the image")
    failed = run_toolkit(["data", "prepare", "--size", "16", "--db", catalog_url])
    assert failed.exit_code == 3
    assert "t2.png" in failed.output and "changed since ingest" in failed.output


def test_training_requires_and_uses_the_cache(store: Store, catalog_url: str, tiny_open_clip_spec: str,
                                              tmp_path: Path) -> None:
    from toolkit.train.job import train_on_snapshot
    from toolkit.train.recipe import TrainConfig

    config = TrainConfig(max_steps=2, batch_size=2, progress=False, tiles="require")
    with pytest.raises(TileError):
        train_on_snapshot(tiny_open_clip_spec, "tiny", tmp_path / "run0", config, catalog_url, track=False,
                          workspace=tmp_path / "ws")
    prepare_tiles(store, "latest", SIZE, tmp_path / "ws")
    result = train_on_snapshot(tiny_open_clip_spec, "tiny", tmp_path / "run1", config, catalog_url,
                               track=False, workspace=tmp_path / "ws")
    card = json.loads((result.out_dir / "model.json").read_text())
    assert result.global_step == 2 and card["data_path"]["clic"].startswith("tiles:")


def test_tiles_and_compile_are_settings_that_do_not_change_the_run_fingerprint() -> None:
    from toolkit.train.config import ConfigError, TrainConfig

    base = TrainConfig()
    assert base.tiles == "auto" and base.compile_text is False
    assert TrainConfig(tiles="off", compile_text=True).fingerprint() == base.fingerprint()
    with pytest.raises(ConfigError, match="tiles must be auto, off or require"):
        TrainConfig(tiles="sometimes")


@pytest.mark.parametrize("width,height", [(45, 31), (31, 45), (32, 32), (200, 33), (33, 17)])
def test_cached_crop_is_torchvision_resize_and_center_crop(width: int, height: int) -> None:
    from torchvision import transforms as T

    from toolkit.data.tiles import resize_center_crop

    image = _photo(width, height, seed=width)
    stage = T.Compose([T.Resize(SIZE, interpolation=T.InterpolationMode.BICUBIC), T.CenterCrop(SIZE)])
    assert np.array_equal(np.asarray(resize_center_crop(image, SIZE)), np.asarray(stage(image)))


def test_crops_are_used_only_for_a_resize_and_center_crop_transform() -> None:
    from torchvision import transforms as T

    from toolkit.data.tile_cache import split_crop_transform

    tail = [T.ToTensor(), T.Normalize((0.5,) * 3, (0.5,) * 3)]
    bicubic = T.Resize(SIZE, interpolation=T.InterpolationMode.BICUBIC)
    assert split_crop_transform(T.Compose([bicubic, T.CenterCrop(SIZE), *tail]), SIZE) is not None
    assert split_crop_transform(T.Compose([T.Resize(SIZE), T.CenterCrop(SIZE), *tail]), SIZE) is None  # bilinear
    assert split_crop_transform(T.Compose([bicubic, T.CenterCrop(SIZE), *tail]), 64) is None  # another size
    assert split_crop_transform(T.Compose([T.CenterCrop(SIZE), bicubic, *tail]), SIZE) is None  # other order


def test_a_damaged_tile_is_refused_on_its_first_read_and_prepare_repairs_it(store: Store, tiny_open_clip_spec: str,
                                                                           tmp_path: Path) -> None:
    from toolkit.data.datasets import ImageLoadError

    prepare_tiles(store, "latest", SIZE, tmp_path / "ws")
    cache = resolve_tile_cache("require", tmp_path / "ws", _snapshot_hash(store), SIZE)
    assert cache is not None and cache.hashes is not None and len(cache.hashes) == 4
    with store.session() as session:
        wide = next(r for r in load_training_records(session, "latest") if r.image_path.name == "w2.png")
    half = half_tile_path(cache.root, wide.sha256)
    original = half.read_bytes()
    PILImage.new("RGB", (SIZE, SIZE // 2), (9, 9, 9)).save(half)  # a valid tile of the right shape
    with pytest.raises(ImageLoadError, match=f"tile {half} .*not the tile the index recorded"):
        _batches(store, tiny_open_clip_spec, cache)
    repaired = prepare_tiles(store, "latest", SIZE, tmp_path / "ws")
    assert (repaired.files_written, repaired.files_repaired, repaired.images_skipped) == (1, 1, 3)
    assert half.read_bytes() == original
    plain, fast = _batches(store, tiny_open_clip_spec, None), _batches(store, tiny_open_clip_spec, cache)
    assert all(torch.equal(a.images, b.images) for a, b in zip(plain, fast, strict=True))


@pytest.mark.parametrize("damage", ["truncated", "empty_list", "not_utf8", "without_tile_hashes"])
def test_an_unusable_index_falls_back_under_auto_and_fails_under_require(
        store: Store, tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture) -> None:
    from toolkit.data.tiles import index_path

    workspace, snapshot_hash = tmp_path / "ws", _snapshot_hash(store)
    prepare_tiles(store, "latest", SIZE, workspace)
    path = index_path(tiles_root(workspace, SIZE), snapshot_hash)
    text = path.read_text()
    if damage == "truncated":
        path.write_text(text[:len(text) // 2])
    elif damage == "empty_list":
        path.write_text("[]")
    elif damage == "not_utf8":
        path.write_bytes(b"\xff\xfe" + text.encode())
    else:  # an index written before tiles were hashed
        path.write_text(json.dumps({k: v for k, v in json.loads(text).items() if k != "tiles"}))
    with caplog.at_level("WARNING", logger="toolkit.data.tile_cache"):
        assert resolve_tile_cache("auto", workspace, snapshot_hash, SIZE) is None
    assert "not using the tile cache" in caplog.text and str(path) in caplog.text
    with pytest.raises(TileError, match=f"tile index {path}"):
        resolve_tile_cache("require", workspace, snapshot_hash, SIZE)
    # prepare rebuilds the index (its tiles checked by recomputing them: all right, none rewritten)
    again = prepare_tiles(store, "latest", SIZE, workspace)
    assert (again.files_written, again.images_skipped, again.errors) == (0, 4, [])
    assert resolve_tile_cache("require", workspace, snapshot_hash, SIZE) is not None


def test_a_deleted_tile_is_found_before_training_and_auto_decodes(store: Store, catalog_url: str,
                                                                  tiny_open_clip_spec: str, tmp_path: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    from toolkit.data.tiles import crop_path
    from toolkit.train.job import train_on_snapshot
    from toolkit.train.recipe import TrainConfig

    workspace, snapshot_hash = tmp_path / "ws", _snapshot_hash(store)
    prepare_tiles(store, "latest", SIZE, workspace)
    with store.session() as session:
        tall = next(r for r in load_training_records(session, "latest") if r.image_path.name == "t2.png")
    crop = crop_path(tiles_root(workspace, SIZE), tall.sha256)
    crop.unlink()
    with pytest.raises(TileError, match=f"tile file.* missing, e.g. {crop}"):
        resolve_tile_cache("require", workspace, snapshot_hash, SIZE)
    config = TrainConfig(max_steps=2, batch_size=2, progress=False)
    with caplog.at_level("WARNING", logger="toolkit.data.tile_cache"):
        result = train_on_snapshot(tiny_open_clip_spec, "tiny", tmp_path / "run", config, catalog_url, track=False,
                                   workspace=workspace)
    assert str(crop) in caplog.text
    card = json.loads((result.out_dir / "model.json").read_text())
    assert card["data_path"] == {"clic": "decode", "plain": "decode"}


@pytest.mark.parametrize("option,value", [("--size", "33"), ("--format", "jpg"), ("--workers", "-2"),
                                          ("--workers", "0")])
def test_prepare_refuses_bad_option_values_by_name(store: Store, catalog_url: str, option: str,
                                                   value: str) -> None:
    import typer

    from toolkit.cli.data import register as register_data
    from toolkit.cli.tiles import register as register_tiles

    app = typer.Typer()
    register_data(app)
    register_tiles(app)
    result = run_toolkit(["data", "prepare", "--db", catalog_url, "--size", str(SIZE), option, value])
    assert result.exit_code == 2, result.output
    assert option in result.output


def test_an_index_without_some_training_images_is_not_used(store: Store, tmp_path: Path) -> None:
    from toolkit.data.tiles import index_path

    workspace, snapshot_hash = tmp_path / "ws", _snapshot_hash(store)
    prepare_tiles(store, "latest", SIZE, workspace)
    with store.session() as session:
        needed = {r.sha256 for r in load_training_records(session, "latest")}
    path = index_path(tiles_root(workspace, SIZE), snapshot_hash)
    index = json.loads(path.read_text())
    index["tiles"].pop(sorted(needed)[0])
    index["images"] -= 1
    path.write_text(json.dumps(index))
    with pytest.raises(TileError, match="lacks 1 of the 4 images training reads"):
        resolve_tile_cache("require", workspace, snapshot_hash, SIZE, needed)
    assert resolve_tile_cache("auto", workspace, snapshot_hash, SIZE, needed) is None
