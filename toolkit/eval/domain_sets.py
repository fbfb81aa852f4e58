"""Domain compositional test sets: hard negatives made from the customer's own held-out captions.

A set is generated ONCE from a snapshot's split (normally `test`) and stored in the catalog
(tables `domain_test_sets`, `domain_test_items`), so every model of a project is scored on the very
same items, however the negative generators change later.

Item format: (image, positive, negative, generator, kind) where
- positive is the caption's primary sentence (position 0, as tagged at ingest),
- negative is what a generator made of it, kept only if it really differs from the positive,
- kind is `swap` (the same words in another order) or `replace` (a word exchanged for another one).

A generator is any callable `(source, partner, rng) -> negative | None` (see `NegativeGenerator`);
`partner` is the primary sentence of another image's caption in the same split, the donor of words for
cross-caption generators. Generators may also be named: `swap_within` and `replace` resolve to
toolkit.negatives.generators' one-sentence generators (`replace` draws from the split's own vocabulary).
`swap_across` has no single-image form: it makes a two-sentence negative for a two-image tile.
This module does no NLP: it works on the tags stored at ingest.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy import insert, select
from sqlalchemy.orm import Session

from toolkit.catalog.db import Store
from toolkit.catalog.eval_models import DomainTestItem, DomainTestSet
from toolkit.catalog.models import Caption, Image, Sentence, SnapshotMember
from toolkit.catalog.review_models import NegativeExclusion
from toolkit.catalog.snapshot import resolve_snapshot
from toolkit.core.config import current_actor
from toolkit.core.parse import TaggedSentence as Parsed
from toolkit.eval.benchmarks import BenchmarkError, CompositionItem, CompositionSet
from toolkit.negatives.generators import NegativeContext, match_key
from toolkit.negatives.registry import SENTENCE_GENERATORS, generate_sentence_negative

KINDS = ("swap", "replace")
NAMED_GENERATORS = ("swap_within", "replace")


@dataclass(frozen=True)
class TaggedSentence:
    text: str
    tokens: tuple[str, ...]
    pos: tuple[str, ...]  # Universal POS tags aligned with tokens
    parse: dict[str, Any] | None = None  # toolkit.core.parse.TaggedSentence.to_json(), when stored


class NegativeLike(Protocol):
    """What a generator returns (toolkit.negatives.generators.Negative fits)."""

    @property
    def text(self) -> str: ...
    @property
    def generator(self) -> str: ...
    @property
    def detail(self) -> Any: ...


NegativeGenerator = Callable[[TaggedSentence, TaggedSentence, random.Random], NegativeLike | None]


@dataclass(frozen=True)
class DomainSource:
    """One held-out caption to make negatives from."""

    image_id: int
    image_sha256: str
    caption_id: int
    sentence: TaggedSentence


@dataclass(frozen=True)
class DomainItem:
    image_id: int
    image_sha256: str
    caption_id: int
    positive: str
    negative: str
    generator: str
    kind: str
    detail: str


def kind_of_generator(generator: str) -> str:
    """`swap_across`, `swap_within` → swap; `replace…` → replace."""
    for kind in KINDS:
        if generator.startswith(kind):
            return kind
    raise ValueError(f"negative generator {generator!r}: cannot tell its kind; names must start with "
                     f"one of {', '.join(KINDS)}")


def _comparable(text: str) -> str:
    return " ".join(text.lower().split()).rstrip(" .!?")


def _detail_text(detail: Any) -> str:
    return detail if isinstance(detail, str) else json.dumps(detail, sort_keys=True, default=str)


def generate_items(sources: Sequence[DomainSource], generators: Sequence[NegativeGenerator],
                   seed: int = 0, max_items: int | None = None) -> list[DomainItem]:
    """Apply every generator to every source in order; deterministic for a given seed and input order.

    The partner of each source is drawn from the other images' captions. Negatives that only differ
    from the positive in case, spacing or final punctuation are dropped: they test nothing.
    """
    if not generators:
        raise ValueError("no negative generators given")
    rng = random.Random(seed)
    items: list[DomainItem] = []
    for source in sources:
        others = [j for j in range(len(sources)) if sources[j].image_id != source.image_id]
        if not others:
            continue  # a single-image split has no partner to draw from
        partner = sources[others[rng.randrange(len(others))]].sentence
        for generate in generators:
            negative = generate(source.sentence, partner, rng)
            if negative is None or _comparable(negative.text) == _comparable(source.sentence.text):
                continue
            items.append(DomainItem(source.image_id, source.image_sha256, source.caption_id,
                                    source.sentence.text, negative.text, negative.generator,
                                    kind_of_generator(negative.generator), _detail_text(negative.detail)))
            if max_items is not None and len(items) >= max_items:
                return items
    return items


def items_hash(items: Sequence[DomainItem]) -> str:
    digest = hashlib.sha256()
    for item in items:
        digest.update(f"{item.image_sha256}\t{item.positive}\t{item.negative}\t{item.generator}\n".encode())
    return digest.hexdigest()


def held_out_sources(session: Session, snapshot_id: int, split: str) -> list[DomainSource]:
    """Primary sentences of the snapshot's captions in `split`, in a database-independent order."""
    rows = session.execute(
        select(Image.id, Image.sha256, Caption.id, Sentence.text, Sentence.tokens, Sentence.pos, Sentence.parse)
        .join(SnapshotMember, SnapshotMember.caption_id == Caption.id)
        .join(Image, Image.id == Caption.image_id)
        .join(Sentence, (Sentence.caption_id == Caption.id) & (Sentence.position == 0))
        .where(SnapshotMember.snapshot_id == snapshot_id, SnapshotMember.split == split)
        .order_by(Image.sha256, Caption.text_sha256)
    ).all()
    return [DomainSource(int(r[0]), str(r[1]), int(r[2]), TaggedSentence(str(r[3]), tuple(r[4]), tuple(r[5]),
                                                                                   r[6]))
            for r in rows]


def check_generator_names(names: Sequence[str]) -> None:
    """Refuse names that are not in NAMED_GENERATORS, saying which ones to use."""

    unknown = [n for n in names if n not in SENTENCE_GENERATORS]
    if unknown:
        raise BenchmarkError(f"negative generator(s) {unknown} cannot make single-image test items; use "
                             f"{' and/or '.join(SENTENCE_GENERATORS)} (swap_across makes two-image negatives)")


def named_generators(names: Sequence[str], sources: Sequence[DomainSource]) -> list[NegativeGenerator]:
    """toolkit.negatives.generators' one-sentence generators, adapted; `replace` draws from the sources' words."""

    check_generator_names(names)

    def theirs(sentence: TaggedSentence) -> Parsed:
        return Parsed.from_json(sentence.parse) if sentence.parse else Parsed.of(sentence.tokens, sentence.pos)

    context = NegativeContext.of_corpus(theirs(s.sentence) for s in sources)

    def named(name: str) -> NegativeGenerator:
        def generate(source: TaggedSentence, _partner: TaggedSentence, rng: random.Random) -> Any:
            return generate_sentence_negative(theirs(source), rng, [name], context)
        return generate

    return [named(n) for n in names]


def create_domain_set(store: Store, snapshot_ref: str, split: str,
                      generators: Sequence[NegativeGenerator | str], *, seed: int = 0, name: str = "",
                      max_items: int | None = None) -> tuple[DomainTestSet, bool]:
    """Generate and store a test set; returns (set, created). Identical items reuse the stored set, which
    takes `name` if it has none (see `_take_name`).

    `generators`: callables, or names from NAMED_GENERATORS (resolved through toolkit.negatives.generators).
    """
    with store.session() as session:
        snapshot = resolve_snapshot(session, snapshot_ref)
        sources = held_out_sources(session, snapshot.id, split)
        if not sources:
            raise BenchmarkError(f"snapshot {snapshot.content_hash[:12]} has no tagged captions in split "
                                 f"{split!r}; a domain set needs held-out captions (normally split test)")
        names = [g for g in generators if isinstance(g, str)]
        resolved = iter(named_generators(names, sources) if names else [])
        callables = [next(resolved) if isinstance(g, str) else g for g in generators]
        items = generate_items(sources, callables, seed=seed, max_items=max_items)
        if not items:
            raise BenchmarkError(f"no generator produced a negative for the {len(sources)} captions of split "
                                 f"{split!r}; check the captions' POS tags")
        content_hash = items_hash(items)
        existing = session.scalar(
            select(DomainTestSet).where(DomainTestSet.snapshot_id == snapshot.id,
                                        DomainTestSet.split == split,
                                        DomainTestSet.content_hash == content_hash))
        named = existing is not None and _take_name(existing, name, f"{snapshot_ref}:{split}")
        test_set = existing or _store_set(session, snapshot.id, split, items, len(sources), seed, name)
    details = {"snapshot": snapshot.content_hash, "split": split, "name": name}
    if existing is None:
        store.audit("domain_set.create", content_hash, {**details, "seed": seed, **test_set.counts})
    elif named:
        store.audit("domain_set.name", content_hash, details)
    return test_set, existing is None


def _take_name(existing: DomainTestSet, name: str, ref: str) -> bool:
    """Give a stored set the `name` asked for if it has none; True if it took it. A set has one name, so a
    different one is refused: dropping it would leave `domain:<ref>:<name>` finding nothing."""
    if not name or name == existing.name:
        return False
    if existing.name:
        raise BenchmarkError(f"identical items are already stored as domain set {existing.name!r} "
                             f"({existing.content_hash[:12]}) and a set has one name; refer to it as "
                             f"domain:{ref}:{existing.name}")
    existing.name = name
    return True


def _store_set(session: Session, snapshot_id: int, split: str, items: Sequence[DomainItem], captions: int,
               seed: int, name: str) -> DomainTestSet:
    counts: dict[str, Any] = {"items": len(items), "captions": captions}
    for item in items:
        counts[item.generator] = counts.get(item.generator, 0) + 1
    test_set = DomainTestSet(content_hash=items_hash(items), name=name, snapshot_id=snapshot_id, split=split,
                             generators=sorted({i.generator for i in items}), seed=seed,
                             actor=current_actor(), counts=counts)
    session.add(test_set)
    session.flush()
    session.execute(insert(DomainTestItem), [
        {"test_set_id": test_set.id, "position": position, "image_id": item.image_id,
         "caption_id": item.caption_id, "positive": item.positive, "negative": item.negative,
         "generator": item.generator, "kind": item.kind, "detail": item.detail}
        for position, item in enumerate(items)
    ])
    return test_set


def parse_domain_ref(ref: str) -> tuple[str, str, str | None]:
    """`<snapshot>:<split>` or `<snapshot>:<split>:<set name>` → (snapshot ref, split, name)."""
    parts = ref.split(":")
    if len(parts) not in (2, 3) or not all(parts):
        raise BenchmarkError(f"domain:{ref}: expected domain:<snapshot>:<split>[:<set name>], "
                             "e.g. domain:latest:test")
    return parts[0], parts[1], parts[2] if len(parts) == 3 else None


def find_domain_set(session: Session, snapshot_ref: str, split: str,
                    name: str | None = None) -> DomainTestSet:
    """The newest set for (snapshot, split), or the one with `name`."""
    snapshot = resolve_snapshot(session, snapshot_ref)
    query = select(DomainTestSet).where(DomainTestSet.snapshot_id == snapshot.id,
                                        DomainTestSet.split == split)
    if name is not None:
        query = query.where(DomainTestSet.name == name)
    found = session.scalar(query.order_by(DomainTestSet.id.desc()).limit(1))
    if found is None:
        named = f" named {name!r}" if name else ""
        raise BenchmarkError(f"no domain test set{named} for snapshot {snapshot.content_hash[:12]} split "
                             f"{split!r}; create one first (toolkit.eval.domain_sets.create_domain_set)")
    return found


def load_domain_set(session: Session, snapshot_ref: str, split: str,
                    name: str | None = None) -> CompositionSet:
    """Subsets: one per generator. Item ids are `<set id>:<position>`, stable across runs.

    Items whose negative a reviewer judged actually true (`negative_exclusions`) are no longer scored.
    """

    test_set = find_domain_set(session, snapshot_ref, split, name)
    excluded = set(session.scalars(select(NegativeExclusion.text_key)))
    rows = session.execute(
        select(DomainTestItem, Image.images_root, Image.path)
        .join(Image, Image.id == DomainTestItem.image_id)
        .where(DomainTestItem.test_set_id == test_set.id)
        .order_by(DomainTestItem.position)
    ).all()
    subsets: dict[str, list[CompositionItem]] = {}
    for item, images_root, rel_path in rows:
        if excluded and match_key(item.negative) in excluded:
            continue
        image = Path(images_root) / rel_path
        if not image.is_file():
            raise BenchmarkError(f"domain set {test_set.content_hash[:12]} item {item.position}: image "
                                 f"{image} does not exist; restore the ingested images folder")
        subsets.setdefault(item.generator, []).append(CompositionItem(
            item_id=f"{test_set.id}:{item.position}", image=image, positive=item.positive,
            negative=item.negative, generator=item.generator))
    return CompositionSet("domain", f"{test_set.content_hash}", subsets)
