"""Training reads the tile cache (see toolkit.tiles): a drop-in `TileLoader` for ClicDataset and an image
loader for PlainDataset's steps, plus the `data.tiles` policy (auto | off | require).

The plain steps use cached crops only when the model's eval transform is, before ToTensor, exactly
Resize(S, bicubic) + CenterCrop(S) (open_clip's and HF CLIP's): then the crop *is* that stage's output and
the rest of the transform (ToTensor, Normalize) runs on it unchanged. Anything else keeps full decodes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image as PILImage

from toolkit.data import ImageLoadError
from toolkit.samples import TrainingRecord
from toolkit.tiles import TileError, crop_path, find_tile_index, half_tile_path, half_tile_sizes, tiles_root

TILE_POLICIES = ("auto", "off", "require")


@dataclass(frozen=True)
class TileCache:
    """A finished tile cache: its folder and file format (png | npy)."""

    root: Path
    format: str = "png"

    def __str__(self) -> str:
        return f"{self.root} ({self.format})"


def _read_rgb(path: Path, fmt: str, record: TrainingRecord) -> np.ndarray:
    """uint8 [h, w, 3] of a tile file."""
    try:
        if fmt == "npy":
            array: np.ndarray = np.load(path, allow_pickle=False)
            if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] != 3:
                raise ValueError(f"holds {array.dtype} {array.shape}, not uint8 [h, w, 3]")
            return array
        with PILImage.open(path) as image:
            return np.array(image.convert("RGB"))  # a writable copy: torch.from_numpy needs one
    except (OSError, ValueError) as err:
        raise ImageLoadError(f"tile {path} of image {record.image_id} ({record.image_path}) is missing or "
                             f"unreadable: {err}; re-run `toolkit data prepare`") from err


def _as_tile_tensor(array: np.ndarray) -> torch.Tensor:
    # The same arithmetic as toolkit.data.tile_tensor (uint8 -> float32, / 255), hence the same bits.
    return torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1).float().div_(255.0)


class CachedHalfTiles:
    """TileLoader reading `<sha>.half.<fmt>` files: same tensors as `toolkit.data.load_half_tiles`."""

    def __init__(self, cache: TileCache) -> None:
        self.cache = cache

    def __call__(self, first: TrainingRecord, second: TrainingRecord, aspect: str,
                 size: int) -> tuple[torch.Tensor, torch.Tensor]:
        tiles = []
        for record, shape in zip((first, second), half_tile_sizes(aspect, size), strict=True):
            path = half_tile_path(self.cache.root, record.sha256, self.cache.format)
            tile = _as_tile_tensor(_read_rgb(path, self.cache.format, record))
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
        return self.tensor_stage(PILImage.fromarray(_read_rgb(path, self.cache.format, record), "RGB"))


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


def resolve_tile_cache(policy: str, workspace: Path, snapshot_hash: str, size: int) -> TileCache | None:
    """The tile cache to train from under `policy`, or None for the plain path."""
    if policy not in TILE_POLICIES:
        raise TileError(f"data tiles policy must be one of {', '.join(TILE_POLICIES)}, got {policy!r}")
    if policy == "off":
        return None
    index = find_tile_index(workspace, snapshot_hash, size)
    if index is None:
        if policy == "require":
            raise TileError(f"no finished tile cache for snapshot {snapshot_hash[:12]} at size {size} under "
                            f"{tiles_root(workspace, size)}; run `toolkit data prepare --snapshot "
                            f"{snapshot_hash[:12]} --size {size}` or set tiles = \"auto\"")
        return None
    return TileCache(tiles_root(workspace, size), str(index["format"]))
