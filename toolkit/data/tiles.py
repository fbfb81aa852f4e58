"""The tile cache: every training image pre-sized once, so training decodes small tiles, not full photos.

For input size S, each image gets two lossless files, content-addressed by the sha256 of its source
bytes (so snapshots share them and a changed image can never be served stale):

    <workspace>/tiles/<S>/<sha[:2]>/<sha>.half.<fmt>   its CLIC half-tile: wide S/2 × S, tall S × S/2
    <workspace>/tiles/<S>/<sha[:2]>/<sha>.crop.<fmt>   its plain-step image: shortest side to S, centre S × S
    <workspace>/tiles/<S>/snapshots/<snapshot hash>.json   written last: "every image of it is here"

Why lossless: the tiles are produced by exactly the resize the plain data path runs (`resize_half_tile`,
`resize_center_crop`), and a lossless store makes the fast path's batches bit-identical to the plain
path's (tested), so switching the cache on cannot change a training run. JPEG (q95) would be ~4× smaller
than PNG but adds a second lossy step. Two lossless formats, measured on one core (bench_data_cpu.py):
  png  ~36 KB per 112×224 tile, zlib level 1; decode ~0.5–2 ms per tile (the default: half the disk)
  npy  raw uint8 with a 128-byte header, 75 KB per tile; "decode" is a file read (~0.03 ms)

`prepare_tiles` verifies each source file's sha256 against the catalog before tiling, writes every file
through temp + rename (a crash leaves no half-written tile) and records every tile's sha256 in the index.
A re-run checks the tiles already present against those hashes and rewrites any that differ; a tile with
no recorded hash (the index missing, broken or older than tile hashes) is recomputed and compared, so a
re-run repairs the cache and writes nothing when it is whole. Training checks each tile against the index
on its first read. No torch here: training reads the tiles through `toolkit.data.tile_cache`.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import BinaryIO

from PIL import Image as PILImage

from toolkit.catalog.db import Store
from toolkit.catalog.models import Image, SnapshotMember
from toolkit.catalog.snapshot import resolve_snapshot
from toolkit.core.errors import InputError
from toolkit.core.images import WIDE, aspect_class, load_rgb

# Names the resize recipe; stored in each snapshot index and checked by training before it trusts tiles.
# v2: sources decode upright (EXIF orientation) and high-bit-depth modes scale to 8 bits (toolkit.core.images).
TILE_RECIPE = "pil-draft-bicubic/half+shortest-side-crop/png-v2"
INDEX_FOLDER = "snapshots"


class FileChangedError(InputError):
    """An image file's bytes are no longer those the catalog recorded at ingest."""


def read_catalogued(path: Path, sha256: str, where: str) -> bytes:
    """The file's bytes, checked against the catalog's sha256: a file replaced after ingest must never pass
    for the catalogued image. Raises OSError when unreadable, FileChangedError (naming `where`) when changed."""
    data = path.read_bytes()
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha256:
        raise FileChangedError(f"{where}: the file changed since ingest (sha256 {actual[:12]}…, catalog "
                               f"{sha256[:12]}…); restore the original or ingest the new file")
    return data


class TileError(InputError):
    """An image cannot be tiled, or a tile cache cannot serve a run; the message names the image."""


def half_tile_sizes(aspect: str, size: int) -> tuple[tuple[int, int], tuple[int, int]]:
    """(height, width) of the first and second tile: wide tiles stack vertically, tall ones side by side.
    An odd S gives the second tile the extra row/column."""
    half = size // 2
    if aspect == WIDE:
        return (half, size), (size - half, size)
    return (size, half), (size, size - half)


def resize_half_tile(source: Path | BinaryIO, height: int, width: int) -> PILImage.Image:
    """THE half-tile resize (plain path and cache alike): bicubic, aspect squeezed like the reference."""
    return load_rgb(source, (width, height)).resize((width, height), PILImage.Resampling.BICUBIC)


def resize_center_crop(image: PILImage.Image, size: int) -> PILImage.Image:
    """Shortest side to `size` (bicubic), then the centre size × size: the CLIP eval transform's PIL stage,
    computed as torchvision's Resize(size) + CenterCrop(size) compute it."""
    width, height = image.size
    if width <= height:
        new_w, new_h = size, int(size * height / width)
    else:
        new_w, new_h = int(size * width / height), size
    if (new_w, new_h) != (width, height):
        image = image.resize((new_w, new_h), PILImage.Resampling.BICUBIC)
    top, left = round((new_h - size) / 2.0), round((new_w - size) / 2.0)  # as torchvision CenterCrop
    return image.crop((left, top, left + size, top + size))


def tiles_root(workspace: Path, size: int) -> Path:
    return workspace / "tiles" / str(size)


FORMATS = ("png", "npy")


def half_tile_path(root: Path, sha256: str, fmt: str = "png") -> Path:
    return root / sha256[:2] / f"{sha256}.half.{fmt}"


def crop_path(root: Path, sha256: str, fmt: str = "png") -> Path:
    return root / sha256[:2] / f"{sha256}.crop.{fmt}"


def index_path(root: Path, snapshot_hash: str) -> Path:
    return root / INDEX_FOLDER / f"{snapshot_hash}.json"


@dataclass(frozen=True)
class TileSource:
    """One catalog image to tile: where its bytes are and what they must hash to."""

    image_id: int
    sha256: str
    path: Path
    width: int
    height: int

    @property
    def aspect(self) -> str:
        return aspect_class(self.width, self.height)


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)  # atomic on POSIX: readers see the old state or the whole new file


def encode_tile(image: PILImage.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    if fmt == "png":
        image.save(buffer, format="PNG", compress_level=1)  # level 6 saves ~15% and decodes no faster
    else:
        import numpy as np

        np.save(buffer, np.asarray(image, dtype=np.uint8), allow_pickle=False)  # [h, w, 3]
    return buffer.getvalue()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read_if_file(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:  # missing or unreadable: it is (re)written
        return None


TileHashes = tuple[str, str]  # sha256 of an image's (half-tile, crop) files


@dataclass(frozen=True)
class TileOutcome:
    written: int  # files written
    nbytes: int
    repaired: int  # of those, files that existed with other bytes
    hashes: TileHashes


def tile_one(source: TileSource, root: Path, size: int, fmt: str = "png",
             known: TileHashes | None = None) -> TileOutcome:
    """Make `source`'s half-tile and crop under `root` hold the right bytes; returns what it wrote.

    Tiles whose bytes hash to `known` (the index's record) are kept without reading the source. Otherwise
    both are computed from the source and any file that differs (missing, damaged, edited) is rewritten.
    Raises TileError naming the image when its file is missing, unreadable or not the catalogued bytes.
    """
    targets = (half_tile_path(root, source.sha256, fmt), crop_path(root, source.sha256, fmt))
    present = [_read_if_file(t) for t in targets]
    if known is not None and all(data is not None and _sha256(data) == expected
                                 for data, expected in zip(present, known, strict=True)):
        return TileOutcome(0, 0, 0, known)
    where = f"image {source.image_id} ({source.path})"
    try:
        data = read_catalogued(source.path, source.sha256, where)
    except OSError as err:
        raise TileError(f"{where}: cannot read the file ({err.strerror}); restore it or re-ingest") from err
    except FileChangedError as err:
        raise TileError(str(err)) from err
    height, width = half_tile_sizes(source.aspect, size)[0]
    try:
        half = resize_half_tile(io.BytesIO(data), height, width)
        crop = resize_center_crop(load_rgb(io.BytesIO(data)), size)
    except (OSError, ValueError) as err:
        raise TileError(f"{where}: cannot decode ({err}); restore the file or re-ingest") from err
    written, nbytes, repaired, hashes = 0, 0, 0, []
    for target, image, old in zip(targets, (half, crop), present, strict=True):
        payload = encode_tile(image, fmt)
        if payload != old:
            _atomic_write(target, payload)
            written, nbytes, repaired = written + 1, nbytes + len(payload), repaired + (old is not None)
        hashes.append(_sha256(payload))
    return TileOutcome(written, nbytes, repaired, (hashes[0], hashes[1]))


def _tile_chunk(chunk: Sequence[tuple[TileSource, TileHashes | None]], root: Path, size: int,
                fmt: str) -> list[tuple[TileOutcome | None, str]]:
    """Worker body: (outcome, "") or (None, error message) per source, never raising."""
    results: list[tuple[TileOutcome | None, str]] = []
    for source, known in chunk:
        try:
            results.append((tile_one(source, root, size, fmt, known), ""))
        except TileError as err:
            results.append((None, str(err)))
    return results


def check_tile_size(size: int) -> None:
    if size < 2 or size % 2:  # a half-tile is S/2 wide or high
        raise TileError(f"the tile cache needs an even input size of at least 2, got {size}")


def check_tile_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise TileError(f"tile format must be one of {', '.join(FORMATS)}, got {fmt!r}")


def check_workers(workers: int) -> None:
    if workers < 1:
        raise TileError(f"the number of tiling processes must be at least 1, got {workers}")


@dataclass
class PrepareReport:
    snapshot: str
    size: int
    root: str
    format: str
    images: int = 0
    files_written: int = 0
    images_skipped: int = 0  # both tiles were already there and right
    files_repaired: int = 0  # tiles that were there with other bytes (damaged or edited) and were rewritten
    bytes_written: int = 0
    bytes_total: int = 0  # size of all this snapshot's tiles on disk
    seconds: float = 0.0
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def prepare_sources(sources: Sequence[TileSource], root: Path, size: int, snapshot_hash: str,
                    workers: int = 1, on_progress: Callable[[int, int], None] | None = None,
                    chunk_size: int = 64, fmt: str = "png") -> PrepareReport:
    """Tile every source (in `workers` processes), then write the snapshot index if nothing failed."""
    check_tile_size(size)
    check_tile_format(fmt)
    check_workers(workers)
    started = time.perf_counter()
    report = PrepareReport(snapshot_hash, size, str(root), fmt, images=len(sources))
    known = _recorded_hashes(root, snapshot_hash, size, fmt)
    pairs = [(source, known.get(source.sha256)) for source in sources]
    chunks = [pairs[i:i + chunk_size] for i in range(0, len(pairs), chunk_size)]
    hashes: dict[str, list[str]] = {}
    done = 0

    def absorb(results: Iterable[tuple[TileOutcome | None, str]]) -> None:
        nonlocal done
        for outcome, error in results:
            source = sources[done]  # results come back in the order of the sources
            done += 1
            if outcome is None:
                report.errors.append(error)
                continue
            report.files_written += outcome.written
            report.files_repaired += outcome.repaired
            report.bytes_written += outcome.nbytes
            report.images_skipped += outcome.written == 0
            hashes[source.sha256] = list(outcome.hashes)
        if on_progress is not None:
            on_progress(done, len(sources))

    if workers <= 1:
        for chunk in chunks:
            absorb(_tile_chunk(chunk, root, size, fmt))
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for results in pool.map(_tile_chunk, chunks, [root] * len(chunks), [size] * len(chunks),
                                    [fmt] * len(chunks)):
                absorb(results)
    report.bytes_total = sum(path.stat().st_size for s in sources
                             for path in (half_tile_path(root, s.sha256, fmt), crop_path(root, s.sha256, fmt))
                             if path.is_file())
    report.seconds = round(time.perf_counter() - started, 3)
    if not report.errors:
        index = {"snapshot": snapshot_hash, "size": size, "recipe": TILE_RECIPE, "format": fmt,
                 "images": len(sources), "bytes": report.bytes_total, "tiles": hashes}
        _atomic_write(index_path(root, snapshot_hash), (json.dumps(index, indent=2) + "\n").encode())
    return report


def _recorded_hashes(root: Path, snapshot_hash: str, size: int, fmt: str) -> dict[str, TileHashes]:
    """The tile hashes this snapshot's index holds for `fmt`; none when it has no usable index (its
    tiles are then recomputed and compared, and the index rewritten)."""
    try:
        index = read_tile_index(index_path(root, snapshot_hash), size)
    except TileError:
        return {}
    if index is None or index["format"] != fmt:
        return {}
    tiles: dict[str, list[str]] = index["tiles"]  # type: ignore[assignment]
    return {sha: (pair[0], pair[1]) for sha, pair in tiles.items()}


_SHA256 = re.compile(r"[0-9a-f]{64}")


def _is_sha256(value: object) -> bool:
    return isinstance(value, str) and _SHA256.fullmatch(value) is not None


def read_tile_index(path: Path, size: int) -> dict[str, object] | None:
    """The tile index at `path` (None when there is none), checked: TileError, naming the file and what is
    wrong, when it cannot be read, is not an index, is for another recipe, size or format, or records no
    tile hashes (written before tiles were hashed: its tiles cannot be checked)."""
    if not path.exists():
        return None
    redo = "re-run `toolkit data prepare` to rebuild it"
    try:
        index: object = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:  # unreadable, not UTF-8, not JSON (a truncated write)
        raise TileError(f"tile index {path} is unreadable ({err}); {redo}") from err
    if not isinstance(index, dict):
        raise TileError(f"tile index {path} holds a JSON {type(index).__name__}, not an index; {redo}")
    if index.get("recipe") != TILE_RECIPE or index.get("size") != size or index.get("format") not in FORMATS:
        raise TileError(f"tile index {path} is for recipe {index.get('recipe')!r}, size {index.get('size')!r}, "
                        f"format {index.get('format')!r}, not today's {TILE_RECIPE!r} at size {size}; {redo}")
    tiles = index.get("tiles")
    if tiles is None:
        raise TileError(f"tile index {path} records no tile hashes (written by an older toolkit), so its "
                        f"tiles cannot be checked; {redo}")
    if (not isinstance(tiles, dict) or len(tiles) != index.get("images")
            or not all(_is_sha256(k) and isinstance(v, list) and len(v) == 2 and all(map(_is_sha256, v))
                       for k, v in tiles.items())):
        raise TileError(f"tile index {path} has a damaged tile list; {redo}")
    return index


def find_tile_index(workspace: Path, snapshot_hash: str, size: int) -> dict[str, object] | None:
    """The snapshot's finished tile index at `size`, None when it has none; TileError when it has one
    that cannot be trusted (see read_tile_index)."""
    return read_tile_index(index_path(tiles_root(workspace, size), snapshot_hash), size)


def snapshot_tile_sources(session: object, snapshot_ref: str,
                          splits: Sequence[str] = ("train",)) -> tuple[str, list[TileSource]]:
    """(snapshot hash, its distinct images in `splits`, by image id) from the catalog."""
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    assert isinstance(session, Session)
    snapshot = resolve_snapshot(session, snapshot_ref)
    rows = session.execute(
        select(Image.id, Image.sha256, Image.images_root, Image.path, Image.width, Image.height)
        .join(SnapshotMember, SnapshotMember.image_id == Image.id)
        .where(SnapshotMember.snapshot_id == snapshot.id, SnapshotMember.split.in_(list(splits)))
        .distinct().order_by(Image.id))
    sources = [TileSource(int(i), str(sha), Path(root) / path, int(w), int(h))
               for i, sha, root, path, w, h in rows]
    return snapshot.content_hash, sources


def prepare_tiles(store: object, snapshot_ref: str, size: int, workspace: Path, workers: int = 1,
                  splits: Sequence[str] = ("train",),
                  on_progress: Callable[[int, int], None] | None = None, fmt: str = "png") -> PrepareReport:
    """`toolkit data prepare`: tile every image of the snapshot's `splits` at input size `size`."""

    assert isinstance(store, Store)
    with store.session() as session:
        snapshot_hash, sources = snapshot_tile_sources(session, snapshot_ref, splits)
    if not sources:
        raise TileError(f"snapshot {snapshot_hash[:12]} has no images in split(s) {', '.join(splits)}")
    return prepare_sources(sources, tiles_root(workspace, size), size, snapshot_hash, workers, on_progress,
                           fmt=fmt)
