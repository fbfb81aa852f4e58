"""Where the trainer gets its batches: the `BatchSource` protocol, the catalog-backed source built on
`toolkit.data.datasets`, and a tiny synthetic source for tests and smoke runs.

An epoch is a sequence of batch *slots* 0..N-1 over a seeded permutation of the samples. The trainer
decides the kind of each slot ("clic" or "plain", from the step's parity) and asks the source for this
rank's share of those slots, starting at any slot (exact resume). Every batch is a pure function of
(seed, epoch, slot, rank), so a resumed run sees exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from toolkit.data.datasets import (
    ClicCollate,
    ClicDataset,
    DistinctImages,
    EpochBatches,
    ImageRows,
    PlainCollate,
    PlainDataset,
    SingleImageLoader,
    load_half_tiles,
)
from toolkit.data.tile_cache import CachedCrops, CachedHalfTiles, split_crop_transform

CLIC = "clic"
PLAIN = "plain"
Tokenize = Callable[[Sequence[str]], torch.Tensor]


class TrainBatch(Protocol):
    """What the trainer reads from a batch (toolkit.data.datasets's ClicBatch and PlainBatch both fit).

    CLIC:  images [B, 3, S, S] (two half-tiles each), tokens int64 [5B, L] laid out [p1|p2|p3|p4|n].
    Plain: images [B, 3, S, S] (single images),       tokens int64 [B, L]  (first sentences).
    From a source with an `image_table()`, images are int64 [B] rows of that table instead.
    """

    images: torch.Tensor
    tokens: torch.Tensor


class BatchSource(Protocol):
    def batches_per_epoch(self) -> int:
        """Global batch slots per epoch (identical on every rank)."""

    def batches(self, epoch: int, start: int, kinds: Sequence[str]) -> Iterator[TrainBatch]:
        """This rank's batches for slots start, start+1, … of `epoch`; slot start+i is of kind kinds[i]."""

    def describe(self) -> dict[str, Any]:
        """What identifies the data (snapshot hash, sample count…): recorded, and checked on resume."""

    def image_table(self) -> DistinctImages | None:
        """The distinct images whose frozen features the trainer computes once, when the batches carry rows
        of this table instead of pixels; None when they carry pixels."""


def _seed_from(*parts: object) -> int:
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big")


@dataclass
class SyntheticBatch:
    images: torch.Tensor
    tokens: torch.Tensor
    texts: list[str]


_WORDS = ("a", "red", "blue", "cube", "ball", "left", "of", "on", "the", "dog", "cat", "big", "small",
          "under", "green", "man", "hat", "water", "garden", "wearing")


class SyntheticBatchSource:
    """Random images and word-salad captions, each a pure function of (seed, epoch, sample index).

    Honours the same contract as the catalog source: seeded epoch permutation, global batches split
    into equal per-rank slices, start slot for resume. For tests and smoke runs only.
    """

    def __init__(self, num_samples: int, global_batch_size: int, image_size: int, tokenize: Tokenize,
                 seed: int = 0, rank: int = 0, world_size: int = 1) -> None:
        if global_batch_size % world_size:
            raise ValueError(f"batch size {global_batch_size} must be a multiple of the world size "
                             f"{world_size}")
        if num_samples < global_batch_size:
            raise ValueError(f"{num_samples} samples are fewer than one batch of {global_batch_size}")
        self.num_samples, self.global_batch_size, self.image_size = num_samples, global_batch_size, image_size
        self.tokenize, self.seed, self.rank, self.world_size = tokenize, seed, rank, world_size
        self.local_batch_size = global_batch_size // world_size

    def batches_per_epoch(self) -> int:
        return self.num_samples // self.global_batch_size

    def describe(self) -> dict[str, Any]:
        return {"source": "synthetic", "num_samples": self.num_samples, "seed": self.seed}

    def image_table(self) -> None:
        return None

    def _sample(self, epoch: int, index: int) -> tuple[torch.Tensor, list[str]]:
        generator = torch.Generator().manual_seed(_seed_from("synthetic-image", self.seed, index))
        image = torch.randn(3, self.image_size, self.image_size, generator=generator)
        rng = random.Random(_seed_from("synthetic-text", self.seed, epoch, index))
        texts = [" ".join(rng.choice(_WORDS) for _ in range(rng.randint(3, 8))) + "." for _ in range(5)]
        return image, texts

    def batches(self, epoch: int, start: int, kinds: Sequence[str]) -> Iterator[SyntheticBatch]:
        order = list(range(self.num_samples))
        random.Random(_seed_from("synthetic-order", self.seed, epoch)).shuffle(order)
        for slot, kind in zip(range(start, self.batches_per_epoch()), kinds, strict=False):
            begin = slot * self.global_batch_size + self.rank * self.local_batch_size
            samples = [self._sample(epoch, i) for i in order[begin:begin + self.local_batch_size]]
            images = torch.stack([image for image, _ in samples])
            if kind == CLIC:
                texts = [texts[block] for block in range(5) for _, texts in samples]
            else:
                texts = [texts[0] for _, texts in samples]
            yield SyntheticBatch(images, self.tokenize(texts).long(), texts)


class CatalogBatchSource:
    """Batches from a catalog snapshot through toolkit.data.datasets (ClicDataset / PlainDataset + DataLoader).

    Both kinds of slot read the same epoch permutation: slot k's records appear either as CLIC pairs
    or as single images, so every record is visited once per epoch.

    `image_features` (single images only: without concatenation every image a batch holds is a record's
    own image) serves rows of `image_table()` in place of pixels, so the trainer encodes each distinct
    image once instead of every time a batch holds it.
    """

    def __init__(self, records: Sequence[Any], adapter: Any, global_batch_size: int, seed: int,
                 rank: int = 0, world_size: int = 1, num_workers: int = 0, snapshot_hash: str = "",
                 sample_config: Any = None, excluded: Sequence[str] = (), tile_cache: Any = None,
                 pin_memory: bool = False, image_features: bool = False) -> None:

        self._epoch_batches = EpochBatches
        self.records = list(records)
        transform = adapter.image_transform()
        tile_loader: Any = load_half_tiles
        crop_loader: Any = None
        # Where pixels come from (not part of describe(): batches are identical either way, so a run
        # may resume with the cache switched on or off).
        self.data_path = {"clic": "decode", "plain": "decode"}
        if tile_cache is not None:  # a toolkit.data.tile_cache.TileCache
            tile_loader = CachedHalfTiles(tile_cache)
            self.data_path["clic"] = f"tiles:{tile_cache}"
            tensor_stage = split_crop_transform(transform, adapter.image_norm.size)
            if tensor_stage is not None:
                crop_loader = CachedCrops(tile_cache, tensor_stage)
                self.data_path["plain"] = f"tiles:{tile_cache}"
        single_image_loader: Callable[[Any], torch.Tensor] = SingleImageLoader(transform, crop_loader)
        self._image_table: DistinctImages | None = None
        if image_features:
            if sample_config is None or sample_config.concatenate:
                raise ValueError("image_features needs single images (a sample config with concatenate false): a "
                                 "concatenated pair is a new image every time")
            self._image_table = DistinctImages(self.records, single_image_loader)
            single_image_loader = crop_loader = ImageRows(self._image_table)
            self.data_path["image_features"] = "computed once per run"
        self.clic = ClicDataset(self.records, adapter.image_norm, seed, sample_config, excluded=excluded,
                                tile_loader=tile_loader, single_image_loader=single_image_loader)
        self.plain = PlainDataset(self.records, transform, image_loader=crop_loader)
        self.clic_collate, self.plain_collate = ClicCollate(adapter.tokenize), PlainCollate(adapter.tokenize)
        self.global_batch_size, self.seed = global_batch_size, seed
        self.rank, self.world_size, self.num_workers = rank, world_size, num_workers
        self.pin_memory = pin_memory  # page-locked batches let the trainer's non_blocking copies overlap
        self.snapshot_hash = snapshot_hash
        self._num_batches = len(EpochBatches(len(self.records), global_batch_size, seed, 0, rank, world_size))

    def batches_per_epoch(self) -> int:
        return self._num_batches

    def describe(self) -> dict[str, Any]:
        return {"source": "catalog", "snapshot": self.snapshot_hash, "num_samples": len(self.records),
                "seed": self.seed}

    def image_table(self) -> DistinctImages | None:
        return self._image_table

    def batches(self, epoch: int, start: int, kinds: Sequence[str]) -> Iterator[TrainBatch]:
        from torch.utils.data import DataLoader

        sampler = self._epoch_batches(len(self.records), self.global_batch_size, self.seed, epoch,
                                      self.rank, self.world_size, start)
        # One loader per kind over the same sampler; a slot's keys go to the loader of its kind. The
        # unused loader never decodes anything because it is driven by the slots routed to it only.
        slots = list(sampler)
        clic_keys = [keys for keys, kind in zip(slots, kinds, strict=False) if kind == CLIC]
        plain_keys = [keys for keys, kind in zip(slots, kinds, strict=False) if kind == PLAIN]
        clic_iter = iter(DataLoader(self.clic, batch_sampler=clic_keys, collate_fn=self.clic_collate,
                                    num_workers=self.num_workers, pin_memory=self.pin_memory))
        plain_iter = iter(DataLoader(self.plain, batch_sampler=plain_keys, collate_fn=self.plain_collate,
                                     num_workers=self.num_workers, pin_memory=self.pin_memory))
        for kind in kinds[: len(slots)]:
            yield next(clic_iter) if kind == CLIC else next(plain_iter)
