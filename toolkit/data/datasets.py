"""Training batches: CLIC concatenated-image batches and plain CLIP batches, as torch Datasets.

Batch contract (the trainer and the CLIC loss rely on it):

    ClicBatch   images  float32 [B, 3, S, S]  two half-tiles of same-aspect images in one S×S image,
                                              normalised with the model's own mean/std
                tokens  int64   [5B, L]       rows laid out [p1 | p2 | p3 | p4 | n], each block B rows
                                              in the image order: tokens[k*B + i] belongs to images[i]
                texts   list[str] (5B)        the same layout, for logging
                negative_generators list[str] (B)  which generator made row 4B + i
    PlainBatch  images  float32 [B, 3, S, S]  single images through the model's eval transform
                tokens  int64   [B, L]        each image's first sentence
                texts   list[str] (B)

    Without concatenation a sample's image is its record's own image, so a source may serve `images` as
    int64 [B] rows of its table of distinct images instead (`ImageRows`); the trainer then looks the
    frozen image tower's features up (computed once) instead of encoding pixels every step.

    p1 = "c1. c2."   p2 = "c2. c1."   p3, p4 = extra sentences of both captions   n = hard negative

Samples are pure functions of (seed, epoch, index) (see toolkit.data.samples): use `EpochBatches` as the
DataLoader's `batch_sampler` and any `num_workers`. Pixels come through `TileLoader`, one small
function: `load_half_tiles` decodes the image files, `toolkit.data.tile_cache.CachedHalfTiles` reads the tile
cache that `toolkit data prepare` writes, with the same resize (`toolkit.data.tiles`), so the same bits.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import torch
from PIL import Image as PILImage
from torch.utils.data import Dataset

from toolkit.adapters.base import ImageNorm
from toolkit.core.images import load_rgb
from toolkit.data.records import load_training_records
from toolkit.data.samples import (
    ClicPlan,
    ClicTexts,
    EpochBatches,
    PairingIndex,
    SampleConfig,
    SampleKey,
    TrainingDataError,
    TrainingRecord,
    plain_text,
    plan_clic_sample,
    sample_rng,
)
from toolkit.data.tiles import FileChangedError, half_tile_sizes, read_catalogued, resize_half_tile
from toolkit.negatives.generators import NegativeContext

__all__ = [
    "ClicBatch", "ClicCollate", "ClicDataset", "ClicSample", "DistinctImages", "EpochBatches", "ImageLoadError",
    "ImageRows", "PlainBatch",
    "PlainCollate", "PlainDataset", "PlainSample", "SampleConfig", "SampleKey", "TileLoader",
    "TrainingRecord", "compose_pair", "half_tile_sizes", "load_half_tiles", "load_training_records",
    "missing_image_files", "tile_tensor", "verified_image",
]

Tokenize = Callable[[Sequence[str]], torch.Tensor]
# (first record, second record, aspect, S) -> the two tiles in that order, float [3, h, w] in [0, 1].
TileLoader = Callable[[TrainingRecord, TrainingRecord, str, int], tuple[torch.Tensor, torch.Tensor]]


class ImageLoadError(TrainingDataError):
    """An image file of the snapshot cannot be read."""


# (path, catalog sha256) of the image files this process has read and found to be the catalogued bytes.
# Hashing once per image per process (not per epoch) keeps the check off the steady-state cost.
_verified_images: set[tuple[Path, str]] = set()


def verified_image(record: TrainingRecord) -> Path | BinaryIO:
    """What to decode for `record`: on the first read in this process, the file's bytes, checked against
    the catalog's sha256 (a file replaced after ingest would silently train on other pixels); later, the
    path. Records built outside a catalog carry no sha256 and have nothing to be checked against.

    Raises ImageLoadError naming the file when it is unreadable or not the catalogued bytes."""
    key = (record.image_path, record.sha256)
    if not record.sha256 or key in _verified_images:
        return record.image_path
    where = f"image {record.image_path} (image {record.image_id}, caption {record.caption_id})"
    try:
        data = read_catalogued(record.image_path, record.sha256, where)
    except OSError as err:
        raise ImageLoadError(f"cannot read {where}: {err}; restore the file or re-ingest") from err
    except FileChangedError as err:
        raise ImageLoadError(str(err)) from err
    _verified_images.add(key)
    return io.BytesIO(data)  # decoded from the bytes just checked, not from a second read


def _open_rgb(record: TrainingRecord, draft_size: tuple[int, int] | None = None) -> PILImage.Image:
    source = verified_image(record)
    try:
        return load_rgb(source, draft_size)
    except (OSError, ValueError) as err:
        raise ImageLoadError(f"cannot read image {record.image_path} (image {record.image_id}, caption "
                             f"{record.caption_id}): {err}; restore the file or re-ingest") from err


def tile_tensor(image: PILImage.Image) -> torch.Tensor:
    """RGB PIL image -> float [3, h, w] in [0, 1] (the one conversion both data paths use)."""
    width, height = image.size
    array = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8)
    return array.view(height, width, 3).permute(2, 0, 1).float().div_(255.0)


def load_half_tiles(first: TrainingRecord, second: TrainingRecord, aspect: str,
                    size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode both images and resize each to its half-tile (bicubic, aspect squeezed like the reference)."""
    tiles = []
    for record, (height, width) in zip((first, second), half_tile_sizes(aspect, size), strict=True):
        source = verified_image(record)
        try:
            image = resize_half_tile(source, height, width)
        except (OSError, ValueError) as err:
            raise ImageLoadError(f"cannot read image {record.image_path} (image {record.image_id}, caption "
                                 f"{record.caption_id}): {err}; restore the file or re-ingest") from err
        tiles.append(tile_tensor(image))
    return tiles[0], tiles[1]


def compose_pair(first: torch.Tensor, second: torch.Tensor, aspect: str, norm: ImageNorm) -> torch.Tensor:
    """Concatenate two half-tiles (wide: top/bottom, tall: left/right) and normalise with `norm`."""
    image = torch.cat([first, second], dim=1 if aspect == "wide" else 2)
    if image.shape != (3, norm.size, norm.size):
        raise ValueError(f"tiles of shapes {tuple(first.shape)} and {tuple(second.shape)} do not make a "
                         f"3×{norm.size}×{norm.size} {aspect} image")
    mean = torch.tensor(norm.mean, dtype=image.dtype).view(3, 1, 1)
    std = torch.tensor(norm.std, dtype=image.dtype).view(3, 1, 1)
    return image.sub_(mean).div_(std)  # in place on the fresh concatenation: no two more S×S temporaries


def _key(key: SampleKey | int) -> SampleKey:
    # A bare index means epoch 0, so the dataset also works with an ordinary sampler.
    return key if isinstance(key, SampleKey) else SampleKey(0, int(key))


@dataclass
class ClicSample:
    key: SampleKey
    image: torch.Tensor  # [3, S, S]
    texts: ClicTexts
    partner: int


class ClicDataset(Dataset[ClicSample]):
    """CLIC samples over training records: item `SampleKey(epoch, i)` pairs record i with a partner.

    `excluded` holds negative texts that must never be emitted (reviewer verdicts); the vocabulary for
    the `replace` generator is built from the records' own sentences when that generator is configured.
    """

    def __init__(self, records: Sequence[TrainingRecord], image_norm: ImageNorm, seed: int,
                 config: SampleConfig | None = None, excluded: Collection[str] = (),
                 tile_loader: TileLoader = load_half_tiles,
                 single_image_loader: Callable[[TrainingRecord], torch.Tensor] | None = None) -> None:
        self.records = list(records)
        self.norm = image_norm
        self.seed = seed
        self.config = config or SampleConfig()
        # Without concatenation a sample is its own image, as the plain steps see it (no partner needed).
        if not self.config.concatenate and single_image_loader is None:
            raise ValueError("samples without concatenation need a single_image_loader")
        self.pairing = PairingIndex(self.records) if self.config.concatenate else None
        self.single_image_loader = single_image_loader
        self.context = (NegativeContext.of_corpus((s for r in self.records for s in r.sentences), excluded)
                        if "replace" in self.config.generators else NegativeContext.with_exclusions(excluded))
        self.tile_loader = tile_loader

    def __len__(self) -> int:
        return len(self.records)

    def plan(self, key: SampleKey | int) -> ClicPlan:
        key = _key(key)
        rng = sample_rng(self.seed, key.epoch, key.index)
        return plan_clic_sample(self.records, self.pairing, key.index, rng, self.config, self.context)

    def __getitem__(self, key: SampleKey | int) -> ClicSample:
        key = _key(key)
        plan = self.plan(key)
        anchor, partner = self.records[plan.index], self.records[plan.partner]
        if self.single_image_loader is not None and not self.config.concatenate:
            return ClicSample(key, self.single_image_loader(anchor), plan.texts, plan.partner)
        first, second = (anchor, partner) if plan.anchor_first else (partner, anchor)
        tile_a, tile_b = self.tile_loader(first, second, anchor.aspect, self.norm.size)
        image = compose_pair(tile_a, tile_b, anchor.aspect, self.norm)
        return ClicSample(key, image, plan.texts, plan.partner)


def _pin(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.pin_memory()


@dataclass
class ClicBatch:
    images: torch.Tensor  # float [B, 3, S, S], or int64 [B] rows of an image table (ImageRows)
    tokens: torch.Tensor  # int64 [5B, L], [p1 | p2 | p3 | p4 | n]
    negative_generators: list[str]  # [B]
    texts: list[str]  # [5B], same layout as tokens
    keys: list[SampleKey] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def block(self, name: str) -> list[str]:
        """The B texts of one block: p1, p2, p3, p4 or n."""
        offset = ("p1", "p2", "p3", "p4", "n").index(name) * len(self)
        return self.texts[offset:offset + len(self)]

    def pin_memory(self) -> ClicBatch:  # DataLoader(pin_memory=True) calls this on custom batches
        return ClicBatch(_pin(self.images), _pin(self.tokens), self.negative_generators, self.texts,
                         self.keys)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> ClicBatch:
        return ClicBatch(self.images.to(device, non_blocking=non_blocking),
                         self.tokens.to(device, non_blocking=non_blocking),
                         self.negative_generators, self.texts, self.keys)


class ClicCollate:
    """collate_fn for ClicDataset: stacks images, lays texts out block by block and tokenises them."""

    def __init__(self, tokenize: Tokenize) -> None:
        self.tokenize = tokenize

    def __call__(self, samples: Sequence[ClicSample]) -> ClicBatch:
        per_sample = [s.texts.as_list() for s in samples]
        texts = [texts[block] for block in range(5) for texts in per_sample]
        return ClicBatch(
            images=torch.stack([s.image for s in samples]),
            tokens=self.tokenize(texts).long(),
            negative_generators=[s.texts.generator for s in samples],
            texts=texts,
            keys=[s.key for s in samples],
        )


@dataclass
class PlainSample:
    key: SampleKey
    image: torch.Tensor
    text: str


class SingleImageLoader:
    """One record's image as the model's eval preprocessing gives it (or from a tile cache of crops)."""

    def __init__(self, transform: Callable[[Any], torch.Tensor],
                 image_loader: Callable[[TrainingRecord], torch.Tensor] | None = None) -> None:
        self.transform = transform
        self.image_loader = image_loader

    def __call__(self, record: TrainingRecord) -> torch.Tensor:
        if self.image_loader is not None:
            return self.image_loader(record)
        return self.transform(_open_rgb(record))


def image_key(record: TrainingRecord) -> str:
    """What identifies a record's image: its catalog sha256, or its path for records built outside a catalog."""
    return record.sha256 or str(record.image_path)


class DistinctImages(Dataset[torch.Tensor]):
    """Each distinct image of `records` once, in first-seen order, as `load_image` gives it (pixels through
    the model's eval preprocessing): the table whose frozen image features a trainer computes once."""

    def __init__(self, records: Sequence[TrainingRecord], load_image: Callable[[TrainingRecord], torch.Tensor]) -> None:
        firsts: dict[str, TrainingRecord] = {}
        for record in records:
            firsts.setdefault(image_key(record), record)
        self.records = list(firsts.values())
        self.rows = {key: row for row, key in enumerate(firsts)}
        self.load_image = load_image

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, row: int) -> torch.Tensor:
        return self.load_image(self.records[row])


class ImageRows:
    """Single-image loader of the precomputed-features path: a record's row in its `DistinctImages` table
    (int64 scalar) in place of pixels; collated, a batch's `images` is int64 [B]."""

    def __init__(self, table: DistinctImages) -> None:
        self.rows = table.rows

    def __call__(self, record: TrainingRecord) -> torch.Tensor:
        return torch.tensor(self.rows[image_key(record)], dtype=torch.int64)


class PlainDataset(Dataset[PlainSample]):
    """Single images with their first sentence, for the plain CLIP steps.

    `transform` is the model's eval preprocessing (`adapter.image_transform()`); `image_loader`, when
    given, replaces "decode the file, then transform" (a tile cache of pre-cropped images).
    """

    def __init__(self, records: Sequence[TrainingRecord], transform: Callable[[Any], torch.Tensor],
                 lowercase: bool = True,
                 image_loader: Callable[[TrainingRecord], torch.Tensor] | None = None) -> None:
        self.records = list(records)
        self.lowercase = lowercase
        self.load_image = SingleImageLoader(transform, image_loader)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, key: SampleKey | int) -> PlainSample:
        key = _key(key)
        record = self.records[key.index]
        return PlainSample(key, self.load_image(record), plain_text(record, self.lowercase))


@dataclass
class PlainBatch:
    images: torch.Tensor  # float [B, 3, S, S], or int64 [B] rows of an image table (ImageRows)
    tokens: torch.Tensor  # int64 [B, L]
    texts: list[str]
    keys: list[SampleKey] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def pin_memory(self) -> PlainBatch:
        return PlainBatch(_pin(self.images), _pin(self.tokens), self.texts, self.keys)

    def to(self, device: torch.device | str, non_blocking: bool = False) -> PlainBatch:
        return PlainBatch(self.images.to(device, non_blocking=non_blocking),
                          self.tokens.to(device, non_blocking=non_blocking), self.texts, self.keys)


class PlainCollate:
    def __init__(self, tokenize: Tokenize) -> None:
        self.tokenize = tokenize

    def __call__(self, samples: Sequence[PlainSample]) -> PlainBatch:
        texts = [s.text for s in samples]
        return PlainBatch(torch.stack([s.image for s in samples]), self.tokenize(texts).long(), texts,
                          [s.key for s in samples])


def missing_image_files(records: Sequence[TrainingRecord], limit: int = 10) -> list[Path]:
    """Up to `limit` image files that are missing, to check a snapshot before a long run starts."""
    missing: list[Path] = []
    seen: set[Path] = set()
    for record in records:
        if record.image_path in seen:  # an image's other captions
            continue
        seen.add(record.image_path)
        if not record.image_path.is_file():
            missing.append(record.image_path)
            if len(missing) >= limit:
                break
    return missing
