"""The hard negatives training would see, before training: the first samples of an epoch, planned exactly
as `ClicDataset` plans them (same pairing, exclusions, vocabulary and per-sample seeds), without images."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from toolkit.catalog.db import Store
from toolkit.catalog.review_models import excluded_negative_keys
from toolkit.catalog.snapshot import resolve_snapshot
from toolkit.core.errors import UsageError
from toolkit.data.records import load_training_records
from toolkit.data.samples import PairingIndex, SampleConfig, epoch_order, plan_clic_sample, sample_rng
from toolkit.negatives.audit import WordFacts, audit
from toolkit.negatives.generators import Negative, NegativeContext, TaggedSentence
from toolkit.negatives.registry import GENERATORS, check_generator_names


@dataclass(frozen=True)
class NegativePreview:
    snapshot: str  # content hash
    split: str
    seed: int
    generators: tuple[str, ...]
    excluded_negatives: int  # reviewer-confirmed true negatives that training never makes
    samples: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"snapshot": self.snapshot, "split": self.split, "seed": self.seed,
                "generators": list(self.generators), "excluded_negatives": self.excluded_negatives,
                "samples": self.samples}


def preview_negatives(store: Store, snapshot: str, split: str, generators: tuple[str, ...], n: int,
                      seed: int) -> NegativePreview:
    """The first `n` samples of epoch 0 with `seed`: positive p1, shuffled p2, negative and its generator."""
    unknown = [g for g in generators if g not in GENERATORS]
    if unknown or not generators:
        raise UsageError(f"unknown generator(s) {unknown}; choose from {sorted(GENERATORS)}")
    with store.session() as session:
        frozen = resolve_snapshot(session, snapshot)
        snapshot_hash = frozen.content_hash
        records = load_training_records(session, frozen, split=split)
    excluded = excluded_negative_keys(store)  # reviewers found them true: training never makes them
    pairing = PairingIndex(records)
    config = SampleConfig(generators=generators)
    context = (NegativeContext.of_corpus((s for r in records for s in r.sentences), excluded)  # as ClicDataset
               if "replace" in generators else NegativeContext.with_exclusions(excluded))
    samples = []
    for index in epoch_order(len(records), seed, 0)[:n]:
        plan = plan_clic_sample(records, pairing, index, sample_rng(seed, 0, index), config, context)
        samples.append({"caption_ids": [records[index].caption_id, records[plan.partner].caption_id],
                        "positive": plan.texts.p1, "shuffled_positive": plan.texts.p2,
                        "negative": plan.texts.negative, "generator": plan.texts.generator,
                        "detail": plan.texts.detail})
    return NegativePreview(snapshot_hash, split, seed, generators, len(excluded), samples)


def audit_negatives(store: Store, snapshot: str, split: str, generators: tuple[str, ...], n: int,
                    seed: int) -> dict[str, Any]:
    """`toolkit negatives audit`: every generator on `n` sampled captions of the snapshot, each paired with
    another image's caption as CLIC pairs them, checked by `toolkit.negatives.audit`."""

    check_generator_names(generators)
    with store.session() as session:
        frozen = resolve_snapshot(session, snapshot)
        snapshot_hash = frozen.content_hash
        records = load_training_records(session, frozen, split=split)
    excluded = excluded_negative_keys(store)
    sentences = [s for r in records for s in r.sentences]
    context = NegativeContext.of_corpus(sentences, excluded)
    rng = random.Random(seed)
    order = rng.sample(range(len(records)), min(n, len(records)))
    items = []
    for index in order:
        partners = [k for k in rng.sample(range(len(records)), min(8, len(records)))
                    if records[k].image_id != records[index].image_id]
        if partners:  # CLIC's partner is another image
            items.append((records[index].first, records[partners[0]].first))
    if not items:
        raise UsageError(f"snapshot {snapshot_hash[:12]} has no two images in split {split!r} to pair; "
                         "ingest more data or choose another split")
    def run(name: str) -> Callable[[Sequence[TaggedSentence], random.Random], Negative | None]:
        return lambda item, r: GENERATORS[name](item[0], item[1], r, context)

    reports = audit(items, {name: run(name) for name in generators}, seed=seed, facts=WordFacts.of(sentences))
    return {"snapshot": snapshot_hash, "split": split, "seed": seed, "pairs": len(items),
            "generators": [r.as_dict() for r in reports]}
