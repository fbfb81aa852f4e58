"""Training reads the tile cache (see toolkit.data.tiles): a drop-in `TileLoader` for ClicDataset and an image
loader for PlainDataset's steps, plus the `data.tiles` policy (auto | off | require).

The plain steps use cached crops only when the model's eval transform is, before ToTensor, exactly
Resize(S, bicubic) + CenterCrop(S) (open_clip's and HF CLIP's): then the crop *is* that stage's output and
the rest of the transform (ToTensor, Normalize) runs on it unchanged. Anything else keeps full decodes.
"""

from __future__ import annotations

import hashlib
import io
import logging
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from PIL import Image as PILImage

from toolkit.core.images import load_rgb
from toolkit.data.datasets import ImageLoadError
from toolkit.data.samples import TrainingRecord
from toolkit.data.tiles import TileError, crop_path, find_tile_index, half_tile_path, half_tile_sizes, tiles_root

TILE_POLICIES = ("auto", "off", "require")
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TileCache:
    """A finished tile cache: its folder, file format (png | npy) and the index's tile hashes.

    `hashes` maps an image's sha256 to those of its (half-tile, crop) files; every tile is checked against
    them on its first read. `resolve_tile_cache` always fills it; None (tests, benchmarks) trusts the files.
    """

    root: Path
    format: str = "png"
    hashes: Mapping[str, tuple[str, str]] | None = field(default=None, compare=False, repr=False)

    def __str__(self) -> str:
        return f"{self.root} ({self.format})"


# (tile path, expected sha256) already read and found right in this process: hashed once, not per epoch.
_verified_tiles: set[tuple[Path, str]] = set()


def _checked_tile(path: Path, cache: TileCache, record: TrainingRecord, which: int) -> Path | BinaryIO:
    """What to decode for a tile: its bytes, checked against the index on the first read in this process;
    later (or for a cache without hashes) its path."""
    if cache.hashes is None:
        return path
    expected = cache.hashes.get(record.sha256)
    if expected is None:
        raise ImageLoadError(f"the tile index under {cache.root} has no tiles for image {record.image_id} "
                             f"({record.image_path}); re-run `toolkit data prepare`")
    key = (path, expected[which])
    if key in _verified_tiles:
        return path
    data = path.read_bytes()  # OSError: reported as missing or unreadable by the caller
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected[which]:
        raise ImageLoadError(f"tile {path} of image {record.image_id} ({record.image_path}) is not the tile "
                             f"the index recorded (sha256 {actual[:12]}…, index {expected[which][:12]}…); "
                             "re-run `toolkit data prepare`, which rewrites damaged tiles")
    _verified_tiles.add(key)
    return io.BytesIO(data)


def _read_rgb(path: Path, cache: TileCache, record: TrainingRecord, which: int) -> np.ndarray:
    """uint8 [h, w, 3] of a tile file (`which`: 0 half-tile, 1 crop)."""
    try:
        source = _checked_tile(path, cache, record, which)
        if cache.format == "npy":
            array: np.ndarray = np.load(source, allow_pickle=False)
            if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
                raise ValueError(f"holds {array.dtype} {array.shape}, not uint8 [h, w, 3]")
            return array
        return np.array(load_rgb(source))  # a writable copy: torch.from_numpy needs one
    except ImageLoadError:
        raise
    except (OSError, ValueError) as err:
        raise ImageLoadError(f"tile {path} of image {record.image_id} ({record.image_path}) is missing or "
                             f"unreadable: {err}; re-run `toolkit data prepare`") from err


def _as_tile_tensor(array: np.ndarray) -> torch.Tensor:
    # The same arithmetic as toolkit.data.datasets.tile_tensor (uint8 -> float32, / 255), hence the same bits.
    return torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1).float().div_(255.0)


class CachedHalfTiles:
    """TileLoader reading `<sha>.half.<fmt>` files: same tensors as `toolkit.data.datasets.load_half_tiles`."""

    def __init__(self, cache: TileCache) -> None:
        self.cache = cache

    def __call__(self, first: TrainingRecord, second: TrainingRecord, aspect: str,
                 size: int) -> tuple[torch.Tensor, torch.Tensor]:
        tiles = []
        for record, shape in zip((first, second), half_tile_sizes(aspect, size), strict=True):
            path = half_tile_path(self.cache.root, record.sha256, self.cache.format)
            tile = _as_tile_tensor(_read_rgb(path, self.cache, record, 0))
            if tuple(tile.shape[1:]) != shape:
                raise ImageLoadError(f"tile for image {record.image_id} ({record.image_path}) is "
                                     f"{tuple(tile.shape[1:])}, expected {shape}; re-run `toolkit data prepare`")
            tiles.append(tile)
        return tiles[0], tiles[1]


class CachedCrops:
    """PlainDataset image loader: `<sha>.crop.<fmt>` through the transform's tensor stage."""

    def __init__(self, cache: TileCache, tensor_stage: Callable[[Any], torch.Tensor]) -> None:
        self.cache, self.tensor_stage = cache, tensor_stage

    def __call__(self, record: TrainingRecord) -> torch.Tensor:
        path = crop_path(self.cache.root, record.sha256, self.cache.format)
        return self.tensor_stage(PILImage.fromarray(_read_rgb(path, self.cache, record, 1), "RGB"))


def split_crop_transform(transform: Any, size: int) -> Callable[[Any], torch.Tensor] | None:
    """The part of `transform` after its Resize(size, bicubic) + CenterCrop(size) PIL stage, or None when
    the transform is not of that shape (then cached crops would not be what it computes)."""
    from torchvision import transforms as T

    steps = list(getattr(transform, "transforms", []))
    names = [type(s).__name__ for s in steps]
    if len(steps) < 3 or names[:2] != ["Resize", "CenterCrop"]:
        return None
    resize, crop = steps[0], steps[1]
    resize_size = resize.size if isinstance(resize.size, int) else list(resize.size)
    crop_size = list(crop.size)
    if (resize_size not in (size, [size]) or crop_size != [size, size] or resize.max_size is not None
            or resize.interpolation != T.InterpolationMode.BICUBIC):
        return None
    tensor_stage: Callable[[Any], torch.Tensor] = T.Compose(steps[2:])
    return tensor_stage


def resolve_tile_cache(policy: str, workspace: Path, snapshot_hash: str, size: int,
                       images: Collection[str] | None = None) -> TileCache | None:
    """The tile cache to train from under `policy`, or None for the plain path.

    `images` (the sha256 of every image training will read) are checked up front to be in the index with
    both tiles on disk, so a deleted tile is found now, not mid-run. A cache that is absent, unusable
    (broken index, one without tile hashes, tiles missing) is an error under "require"; under "auto" an
    unusable one is logged and the image files are decoded instead (the batches are the same)."""
    if policy not in TILE_POLICIES:
        raise TileError(f"data tiles policy must be one of {', '.join(TILE_POLICIES)}, got {policy!r}")
    if policy == "off":
        return None
    root = tiles_root(workspace, size)
    prepare = f"run `toolkit data prepare --snapshot {snapshot_hash[:12]} --size {size}`"
    try:
        index = find_tile_index(workspace, snapshot_hash, size)
        if index is None:
            if policy == "auto":
                return None
            raise TileError(f"no finished tile cache for snapshot {snapshot_hash[:12]} at size {size} under "
                            f"{root}; {prepare} or set tiles = \"auto\"")
        tiles: dict[str, list[str]] = index["tiles"]  # type: ignore[assignment]
        cache = TileCache(root, str(index["format"]), {sha: (pair[0], pair[1]) for sha, pair in tiles.items()})
        _check_tiles_present(cache, images if images is not None else list(tiles), snapshot_hash)
        return cache
    except TileError as err:
        if policy == "require":
            raise
        log.warning("not using the tile cache: %s; decoding the image files instead (same batches)", err)
        return None


def _check_tiles_present(cache: TileCache, images: Collection[str], snapshot_hash: str) -> None:
    assert cache.hashes is not None
    absent = [sha for sha in images if sha not in cache.hashes]
    if absent:
        raise TileError(f"the tile index of snapshot {snapshot_hash[:12]} under {cache.root} lacks "
                        f"{len(absent)} of the {len(images)} images training reads (prepared for other "
                        f"splits?); re-run `toolkit data prepare`")
    missing = [path for sha in images for path in (half_tile_path(cache.root, sha, cache.format),
                                                    crop_path(cache.root, sha, cache.format))
               if not path.is_file()]
    if missing:
        raise TileError(f"{len(missing)} tile file(s) of snapshot {snapshot_hash[:12]} are missing, e.g. "
                        f"{missing[0]}; re-run `toolkit data prepare`, which rewrites them")
