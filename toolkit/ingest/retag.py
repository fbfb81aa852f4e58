"""`toolkit data retag`: give sentences tagged before the stored parse (or by another tagger) the parse a
fresh ingest would store. Committed batch by batch: a kill loses at most the batch in flight, and a re-run
continues with the rows still to do (rows already done by this tagger are skipped, so it is idempotent).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import func, or_, select, update

from toolkit.catalog.db import Store
from toolkit.catalog.models import Sentence
from toolkit.ingest.tagging import DEFAULT_TAGGER, SpacyTagger, load_tagger


@dataclass
class RetagReport:
    tagger: str
    to_do: int = 0
    retagged: int = 0
    batches: int = 0

    def as_dict(self) -> dict[str, object]:
        return {"tagger": self.tagger, "to_do": self.to_do, "retagged": self.retagged, "batches": self.batches}


def _stale(spec: str):  # type: ignore[no-untyped-def]
    return or_(Sentence.parse.is_(None), Sentence.tagger != spec)


def retag(store: Store, tagger: SpacyTagger | str = DEFAULT_TAGGER, batch_size: int = 512,
          progress: Callable[[RetagReport], None] | None = None) -> RetagReport:
    """Re-tag every sentence without this tagger's parse, in id order, committing each batch."""
    tagger = load_tagger(tagger) if isinstance(tagger, str) else tagger
    report = RetagReport(tagger.spec)
    with store.session() as session:
        report.to_do = session.scalar(select(func.count()).select_from(Sentence).where(_stale(tagger.spec))) or 0
    last_id = 0
    while True:
        with store.session() as session:  # one transaction per batch: committed, or not at all
            rows = session.execute(select(Sentence.id, Sentence.text).where(_stale(tagger.spec), Sentence.id > last_id)
                                   .order_by(Sentence.id).limit(batch_size)).all()
            if not rows:
                break
            tagged = tagger.tag([text for _, text in rows])
            session.execute(update(Sentence), [
                {"id": sid, "tokens": list(t.tokens), "pos": list(t.pos), "tagger": tagger.spec,
                 "parse": t.to_json()} for (sid, _), t in zip(rows, tagged, strict=True)])
            last_id = rows[-1][0]
        report.retagged += len(rows)
        report.batches += 1
        if progress is not None:
            progress(report)
    return report
