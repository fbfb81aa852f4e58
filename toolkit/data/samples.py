"""CLIC training samples without pixels: partners, texts, negatives, epoch order. No torch, no SQL.

Records come from the catalog through `toolkit.data.records`; everything here is a pure function of them.

A sample is a pure function of (seed, epoch, index): every random choice it makes (partner, which image
comes first, extra sentences, orders, negative) is drawn from `sample_rng(seed, epoch, index)`, so a run
resumed at any batch sees exactly the samples it would have seen.

Texts are rebuilt from the stored tokens (`detokenize`) for positives and negatives alike, so the two
differ only by the generator's edit, never by spacing.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import groupby
from pathlib import Path
from typing import Any

from toolkit.core.errors import InputError
from toolkit.core.images import aspect_class
from toolkit.negatives.generators import Negative, NegativeContext, TaggedSentence, join_sentences
from toolkit.negatives.registry import (
    SENTENCE_GENERATORS,
    check_generator_names,
    check_generator_weights,
    generate_negative,
    generate_sentence_negative,
)

EXTRA_POSITIVES = 2  # p3 and p4


class TrainingDataError(InputError):
    """The snapshot cannot feed training as asked; the message says what to change."""


class EmptySnapshotError(TrainingDataError):
    """No usable caption in the snapshot's split."""


class TooFewImagesError(TrainingDataError):
    """An aspect class has fewer than two distinct images, so its images cannot be paired."""


class NegativeUnavailableError(TrainingDataError):
    """No configured generator could make a negative for a sample, even with other partners."""


@dataclass(frozen=True)
class TrainingRecord:
    """One caption of the snapshot with its image's stored geometry. Sentence 0 is the primary caption."""

    caption_id: int
    image_id: int
    image_path: Path
    width: int
    height: int
    sentences: tuple[TaggedSentence, ...]
    sha256: str = ""  # of the image file's bytes: the tile cache's key

    @property
    def aspect(self) -> str:
        return aspect_class(self.width, self.height)

    @property
    def first(self) -> TaggedSentence:
        return self.sentences[0]

    @property
    def extras(self) -> tuple[TaggedSentence, ...]:
        return self.sentences[1:]


class PairingIndex:
    """Draws a partner for a record: another image of the same aspect class (wide: width >= height).

    Rule: every aspect class that occurs needs at least two distinct images, else TooFewImagesError.
    Partners are uniform over the class's captions whose image differs from the anchor's.
    """

    def __init__(self, records: Sequence[TrainingRecord]) -> None:
        by_class: dict[str, list[int]] = {}
        for index, record in enumerate(records):
            by_class.setdefault(record.aspect, []).append(index)
        self._members: dict[str, list[int]] = {}
        self._span: list[tuple[int, int]] = [(0, 0)] * len(records)  # (start, stop) of own image's run
        for aspect, indices in sorted(by_class.items()):
            indices.sort(key=lambda i: (records[i].image_id, i))  # captions of one image contiguous
            images = {records[i].image_id for i in indices}
            if len(images) < 2:
                lone = records[indices[0]]
                raise TooFewImagesError(
                    f"the {aspect} aspect class has only one image ({lone.image_path}, captions "
                    f"{sorted(records[i].caption_id for i in indices)}); CLIC pairs each image with another "
                    f"of the same class (wide: width >= height, tall otherwise). Add another {aspect} image "
                    "to the snapshot or remove this one")
            self._members[aspect] = indices
            start = 0
            for _, run in groupby(indices, key=lambda i: records[i].image_id):
                run_indices = list(run)
                for i in run_indices:
                    self._span[i] = (start, start + len(run_indices))
                start += len(run_indices)
        self._aspects = [r.aspect for r in records]

    def partner(self, index: int, rng: random.Random) -> int:
        members = self._members[self._aspects[index]]
        start, stop = self._span[index]
        draw = rng.randrange(len(members) - (stop - start))
        return members[draw + (stop - start) if draw >= start else draw]


@dataclass(frozen=True)
class SampleConfig:
    """How CLIC texts are assembled. `generators` are tried in order (fallbacks); `mix` shuffles them."""

    generators: tuple[str, ...] = ("swap_across",)
    mix_generators: bool = False
    generator_weights: tuple[float, ...] = ()  # with mix_generators: how often each leads (empty: equally)
    lowercase: bool = True  # as the reference does
    partner_redraws: int = 8  # other partners tried when no generator can make a negative
    # False: the paper's no-concatenation ablation. Each sample is one image with texts
    # [c1, c1, e1, e2, n(c1)]: no partner, no shuffled positive (so L_uni is 0), a within-caption negative.
    concatenate: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "generators", check_generator_names(tuple(self.generators)))
        object.__setattr__(self, "generator_weights",
                           check_generator_weights(self.generators, self.generator_weights, self.mix_generators))
        pair_only = [g for g in self.generators if g not in SENTENCE_GENERATORS]
        if not self.concatenate and pair_only:
            raise ValueError(f"generator(s) {pair_only} swap words across two captions and need "
                             f"concatenation; without it choose from {sorted(SENTENCE_GENERATORS)}")
        if self.partner_redraws < 0:
            raise ValueError(f"partner_redraws must be >= 0, got {self.partner_redraws}")


@dataclass(frozen=True)
class ClicTexts:
    """The five texts of one concatenated image, in batch order [p1, p2, p3, p4, n]."""

    p1: str
    p2: str
    p3: str
    p4: str
    negative: str
    generator: str
    detail: dict[str, Any] = field(default_factory=dict)

    def as_list(self) -> list[str]:
        return [self.p1, self.p2, self.p3, self.p4, self.negative]


def choose_extras(record: TrainingRecord, rng: random.Random, count: int = EXTRA_POSITIVES) -> list[str]:
    """`count` extra sentences: without replacement when there are enough, padded with replacement when
    not; a caption with no extra sentence falls back to its first sentence (then p3/p4 repeat p1's
    content in some order, which is still a true description of the image)."""
    extras = [s.text for s in record.extras] or [record.first.text]
    if len(extras) >= count:
        return rng.sample(extras, count)
    return extras + [rng.choice(extras) for _ in range(count - len(extras))]


def _random_order(first: str, second: str, rng: random.Random) -> str:
    return join_sentences([first, second] if rng.random() < 0.5 else [second, first])


def assemble_clic_texts(anchor: TrainingRecord, partner: TrainingRecord, rng: random.Random,
                        config: SampleConfig, context: NegativeContext) -> ClicTexts | None:
    """p1 = "c1. c2.", p2 = "c2. c1.", p3/p4 = k-th extras joined in random order, n = hard negative.

    None when no configured generator can make a negative for this pair.
    """
    c1, c2 = anchor.first.text, partner.first.text
    extras_a, extras_b = choose_extras(anchor, rng), choose_extras(partner, rng)
    p3, p4 = (_random_order(a, b, rng) for a, b in zip(extras_a, extras_b, strict=True))
    negative: Negative | None = generate_negative(anchor.first, partner.first, rng, config.generators,
                                                  context, mix=config.mix_generators,
                                                  weights=config.generator_weights)
    if negative is None:
        return None
    texts = [join_sentences([c1, c2]), join_sentences([c2, c1]), p3, p4, negative.text]
    if config.lowercase:
        texts = [t.lower() for t in texts]
    p1, p2, p3, p4, n = texts
    return ClicTexts(p1, p2, p3, p4, n, generator=negative.generator, detail=negative.detail)


def assemble_single_texts(record: TrainingRecord, rng: random.Random, config: SampleConfig,
                          context: NegativeContext) -> ClicTexts | None:
    """Without concatenation: p1 = p2 = c1, p3/p4 = two extra sentences, n = a negative of c1 alone.

    None when no configured generator can edit c1.
    """
    negative = generate_sentence_negative(record.first, rng, config.generators, context,
                                          mix=config.mix_generators, weights=config.generator_weights)
    if negative is None:
        return None
    c1 = join_sentences([record.first.text])
    texts = [c1, c1, *(join_sentences([e]) for e in choose_extras(record, rng)), negative.text]
    if config.lowercase:
        texts = [t.lower() for t in texts]
    p1, p2, p3, p4, n = texts
    return ClicTexts(p1, p2, p3, p4, n, generator=negative.generator, detail=negative.detail)


def sample_rng(seed: int, epoch: int, index: int) -> random.Random:
    """The one source of randomness for sample `index` of `epoch` (stable across processes and Pythons)."""
    digest = hashlib.sha256(f"clic-sample:{seed}:{epoch}:{index}".encode()).digest()
    return random.Random(int.from_bytes(digest[:16], "big"))


@dataclass(frozen=True)
class ClicPlan:
    """Everything about a CLIC sample except its pixels."""

    index: int
    partner: int
    anchor_first: bool  # True: the anchor's image is the top (wide) / left (tall) tile
    texts: ClicTexts


def _unavailable_hint(generators: Sequence[str], fallback: str) -> str:
    if fallback not in generators:
        return f"add '{fallback}' as a fallback generator or check the exclusion list"
    # the fallback is configured and still found nothing: the sentence's stored tags are the suspect
    return ("none of them applies to the sentence as it was tagged at ingest; see what each makes with "
            "`toolkit negatives preview` and check the exclusion list")


def plan_clic_sample(records: Sequence[TrainingRecord], pairing: PairingIndex | None, index: int,
                     rng: random.Random, config: SampleConfig, context: NegativeContext) -> ClicPlan:
    """The sample's partner, tile order and texts; without concatenation its own image alone
    (`partner == index`) and `pairing` may be None."""
    anchor = records[index]
    if not config.concatenate:
        single = assemble_single_texts(anchor, rng, config, context)
        if single is None:
            raise NegativeUnavailableError(
                f"caption {anchor.caption_id}: generators {list(config.generators)} made no negative of its "
                f"first sentence {anchor.first.text!r}; {_unavailable_hint(config.generators, 'replace')}")
        return ClicPlan(index, index, True, single)
    if pairing is None:
        raise ValueError("concatenated samples need a PairingIndex")
    anchor_first = rng.random() < 0.5
    for _ in range(config.partner_redraws + 1):
        partner = pairing.partner(index, rng)
        texts = assemble_clic_texts(anchor, records[partner], rng, config, context)
        if texts is not None:
            return ClicPlan(index, partner, anchor_first, texts)
    raise NegativeUnavailableError(
        f"caption {anchor.caption_id}: generators {list(config.generators)} made no negative with "
        f"{config.partner_redraws + 1} partners (first sentence {anchor.first.text!r}); "
        f"{_unavailable_hint(config.generators, 'swap_across')}")


def plain_text(record: TrainingRecord, lowercase: bool = True) -> str:
    """The plain CLIP step's text: the primary sentence alone."""
    text = join_sentences([record.first.text])
    return text.lower() if lowercase else text


# --- epoch order, resume and DDP sharding ----------------------------------------------------------

@dataclass(frozen=True)
class SampleKey:
    """What a DataLoader asks the dataset for: sample `index` as drawn in `epoch`."""

    epoch: int
    index: int


def epoch_order(num_samples: int, seed: int, epoch: int) -> list[int]:
    """The epoch's visiting order: a permutation of range(num_samples) fixed by (seed, epoch)."""
    digest = hashlib.sha256(f"clic-order:{seed}:{epoch}".encode()).digest()
    order = list(range(num_samples))
    random.Random(int.from_bytes(digest[:16], "big")).shuffle(order)
    return order


class EpochBatches:
    """Batch sampler (DataLoader `batch_sampler=`): this rank's share of each global batch of an epoch.

    Global batch g holds order[g*G : (g+1)*G] (G = global_batch_size); rank r takes the r-th of its
    `world_size` equal slices. The last incomplete global batch is dropped, so every rank sees the same
    number of batches. `start_batch` skips the first global batches, for exact resume mid-epoch.
    """

    def __init__(self, num_samples: int, global_batch_size: int, seed: int, epoch: int = 0,
                 rank: int = 0, world_size: int = 1, start_batch: int = 0) -> None:
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world size {world_size}")
        if global_batch_size < world_size or global_batch_size % world_size:
            raise ValueError(f"global batch size {global_batch_size} must be a positive multiple of the "
                             f"world size {world_size}")
        self.num_batches = num_samples // global_batch_size
        if self.num_batches == 0:
            raise TrainingDataError(f"{num_samples} training samples are fewer than one global batch of "
                                    f"{global_batch_size}; lower the batch size or add data")
        if not 0 <= start_batch <= self.num_batches:
            raise ValueError(f"start batch {start_batch} is outside the epoch's {self.num_batches} batches")
        self.num_samples, self.global_batch_size, self.seed, self.epoch = (
            num_samples, global_batch_size, seed, epoch)
        self.rank, self.world_size, self.start_batch = rank, world_size, start_batch
        self.local_batch_size = global_batch_size // world_size

    def __len__(self) -> int:
        return self.num_batches - self.start_batch

    def __iter__(self) -> Iterator[list[SampleKey]]:
        order = epoch_order(self.num_samples, self.seed, self.epoch)
        for batch in range(self.start_batch, self.num_batches):
            begin = batch * self.global_batch_size + self.rank * self.local_batch_size
            yield [SampleKey(self.epoch, i) for i in order[begin:begin + self.local_batch_size]]
