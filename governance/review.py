"""Human review of misclassifications, with MLflow as the reviewer's screen.

Each evaluation failure becomes a `ReviewItem` in the catalog and an MLflow trace in the evaluation run
(inputs: image, positive, confuser, generator; outputs: both scores). The reviewer opens the run's
Traces tab, picks a trace, and adds a feedback assessment named `verdict` with one of
    model_error | caption_wrong | negative_true | ambiguous
(and, for caption_wrong, a second feedback `corrected_caption` holding the right text).
`toolkit review sync` reads the assessments back; `toolkit review record` does the same from a terminal.

Verdicts act, and nothing is ever deleted:
- caption_wrong: the caption is superseded by the corrected one (the old row stays, marked superseded);
- negative_true: the negative text is excluded from generation and from scoring from now on;
- model_error: the item joins the regression set that gates later candidates (while it stays the item's
  latest verdict: a later verdict takes it out again).
"""

from __future__ import annotations

import base64
import io
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from toolkit.catalog.db import Store
from toolkit.catalog.models import AuditEvent, Caption, Sentence
from toolkit.catalog.review_models import VERDICTS, NegativeExclusion, RegressionItem, ReviewItem, ReviewVerdict
from toolkit.core.config import CaptionLimits, current_actor
from toolkit.core.errors import InputError
from toolkit.core.images import load_rgb
from toolkit.core.text import normalise_caption, split_sentences, text_sha256
from toolkit.eval.evaluate import Failure
from toolkit.ingest.tagging import load_tagger
from toolkit.ingest.validate import RowRejected, clean_caption
from toolkit.negatives.generators import match_key
from toolkit.tracking import tracking_client

VERDICT_FEEDBACK = "verdict"
CORRECTION_FEEDBACK = "corrected_caption"


class ReviewError(InputError):
    pass


def review_kind(benchmark: str) -> str:
    """What a reviewer looks at: a composition item (text vs confuser) or a retrieval miss."""
    return "retrieval" if benchmark.startswith("retrieval") else "composition"


def review_item_key(failure: Failure) -> str:
    return f"{failure.subset}/{failure.metric}/{failure.item_id}"[:256]


def record_failures(store: Store, eval_run_id: str, model: str, failures: Sequence[Failure],
                    caption_ids: Mapping[str, int] | None = None) -> list[int]:
    """Open a review item per evaluator failure (idempotent per eval run, model, benchmark and item).

    `caption_ids` maps a domain item's id to the catalogued caption it was made from, so that a
    `caption_wrong` verdict can supersede that caption.
    """
    ids: list[int] = []
    with store.session() as session:
        for failure in failures:
            key = review_item_key(failure)
            existing = session.scalar(select(ReviewItem).where(
                ReviewItem.eval_run_id == eval_run_id, ReviewItem.model == model,
                ReviewItem.benchmark == failure.benchmark, ReviewItem.item_key == key))
            if existing is None:
                kind = review_kind(failure.benchmark)
                caption_id = (caption_ids or {}).get(failure.item_id) if kind == "composition" else None
                existing = ReviewItem(
                    eval_run_id=eval_run_id, model=model, status="open", benchmark=failure.benchmark,
                    item_key=key, kind=kind, image_path=str(failure.image), caption_id=caption_id,
                    positive=failure.positive, confuser=failure.confuser,
                    positive_score=float(failure.positive_score), confuser_score=float(failure.confuser_score),
                    generator=failure.generator)
                session.add(existing)
                session.flush()
            ids.append(existing.id)
    return ids


def log_review_traces(store: Store, item_ids: list[int], image_artifacts: dict[int, str] | None = None) -> int:
    """One MLflow trace per review item, inside the active (evaluation) run. Returns traces written."""

    # Synchronous export: the async queue drops traces when an evaluation has thousands of failures.
    os.environ.setdefault("MLFLOW_ENABLE_ASYNC_TRACE_LOGGING", "false")
    import mlflow

    written = 0
    with store.session() as session:
        for item in session.scalars(select(ReviewItem).where(ReviewItem.id.in_(item_ids),
                                                             ReviewItem.trace_id.is_(None))):
            with mlflow.start_span(name=f"review {item.benchmark} #{item.id}") as span:
                span.set_inputs(_review_inputs(item, (image_artifacts or {}).get(item.id)))
                span.set_outputs({"positive_score": round(item.positive_score, 5),
                                  "confuser_score": round(item.confuser_score, 5),
                                  "how_to_review": f"add feedback '{VERDICT_FEEDBACK}' = one of {', '.join(VERDICTS)}"})
                span.set_attributes({"toolkit.review_item": item.id})
                item.trace_id = span.trace_id
            written += 1
    mlflow.flush_trace_async_logging()
    return written


def _review_inputs(item: ReviewItem, image_artifact: str | None) -> dict[str, Any]:
    """Inputs shaped as a chat message, because MLflow's trace view renders chat images inline: the
    reviewer sees the picture beside the two texts without leaving the trace."""
    content: list[dict[str, Any]] = [{"type": "text", "text": (
        f"POSITIVE: {item.positive}\nCONFUSER ({item.generator or item.kind}): {item.confuser}\n"
        f"Which text does the image show? Add feedback '{VERDICT_FEEDBACK}'.")}]
    thumbnail = _thumbnail_data_url(Path(item.image_path))
    if thumbnail:
        content.append({"type": "image_url", "image_url": {"url": thumbnail}})
    return {"messages": [{"role": "user", "content": content}], "positive": item.positive,
            "confuser": item.confuser, "generator": item.generator, "benchmark": item.benchmark, "model": item.model,
            "image": image_artifact or item.image_path}


def _thumbnail_data_url(path: Path, side: int = 256) -> str | None:

    from PIL import UnidentifiedImageError

    try:
        image = load_rgb(path)
        image.thumbnail((side, side))
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=85)
    except (OSError, UnidentifiedImageError):
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


def record_verdict(store: Store, item_id: int, verdict: str, *, reviewer: str | None = None, note: str = "",
                   corrected_caption: str | None = None, source: str = "cli", assessment_id: str | None = None,
                   at: datetime | None = None, tagger: Any = None) -> int:
    """Store a verdict and apply its effect. Returns the verdict id."""
    if verdict not in VERDICTS:
        raise ReviewError(f"unknown verdict {verdict!r}; use one of {', '.join(VERDICTS)}")
    if verdict == "caption_wrong" and not (corrected_caption and corrected_caption.strip()):
        raise ReviewError("a caption_wrong verdict needs the corrected caption (--corrected-caption)")
    if verdict == "caption_wrong":
        corrected_caption = checked_correction(str(corrected_caption))
    reviewer = reviewer or current_actor()
    with store.session() as session:
        # Ids are signed 64-bit in every catalog: a larger number names no item (the driver would overflow).
        item = session.get(ReviewItem, item_id) if 0 < item_id < 2**63 else None
        if item is None:
            raise ReviewError(f"review item {item_id} does not exist; list them with `toolkit review list`")
        row = ReviewVerdict(item_id=item.id, verdict=verdict, reviewer=reviewer, note=note, source=source,
                            corrected_caption=corrected_caption, assessment_id=assessment_id,
                            at=at or datetime.now(timezone.utc))
        session.add(row)
        session.flush()
        if verdict == "negative_true":
            key = match_key(item.confuser)
            if session.scalar(select(NegativeExclusion).where(NegativeExclusion.text_key == key)) is None:
                session.add(NegativeExclusion(text_key=key, negative_text=item.confuser, verdict_id=row.id))
        elif verdict == "model_error":
            session.add(RegressionItem(verdict_id=row.id, image_path=item.image_path, positive=item.positive,
                                       confuser=item.confuser, benchmark=item.benchmark))
        elif verdict == "caption_wrong" and item.caption_id is not None:
            assert corrected_caption is not None
            _supersede_caption(session, item.caption_id, corrected_caption.strip(), tagger)
        item.status = "reviewed"
        verdict_id = row.id
    store.audit("review.verdict", f"review_item:{item_id}",
                {"verdict": verdict, "reviewer": reviewer, "source": source, "note": note}, actor=reviewer)
    return verdict_id


def checked_correction(text: str) -> str:
    """A corrected caption through ingest's caption rules (one policy for every path that writes captions):
    normalised, with words, without control characters, within the length limit."""

    try:
        return clean_caption(text, CaptionLimits())
    except RowRejected as err:
        raise ReviewError(f"the corrected caption is refused by the caption rules ({err.reason}): "
                          f"{err.detail}") from err


def _supersede_caption(session: Any, caption_id: int, corrected: str, tagger: Any) -> None:

    old = session.get(Caption, caption_id)
    text = normalise_caption(corrected)
    sha = text_sha256(text)
    replacement = session.scalar(select(Caption).where(Caption.image_id == old.image_id, Caption.text_sha256 == sha))
    if replacement is None:
        replacement = Caption(image_id=old.image_id, text=text, text_sha256=sha, status="active",
                              supersedes_id=old.id, batch_id=None, source_row=f"correction of caption {old.id}")
        session.add(replacement)
        session.flush()
        sentences = split_sentences(text) or [text]
        tagger = tagger or load_tagger()
        for position, (sentence, tags) in enumerate(zip(sentences, tagger.tag(sentences), strict=True)):
            session.add(Sentence(caption_id=replacement.id, position=position, text=sentence,
                                 tokens=list(tags.tokens), pos=list(tags.pos), tagger=tagger.spec,
                                 parse=tags.to_json()))
    replacement.status = "active"
    old.status = "superseded"


INVALID_FEEDBACK = "review.invalid_feedback"


@dataclass(frozen=True)
class SyncResult:
    """What one `sync_verdicts_from_mlflow` found."""

    recorded: int  # new verdicts
    invalid: tuple[str, ...]  # verdict feedback refused, each reported (and audited) the first time only
    missing_traces: int  # items whose trace the tracking store does not hold (another store? deleted?)


def sync_verdicts_from_mlflow(store: Store, eval_run_id: str | None = None) -> SyncResult:
    """Read `verdict` feedback from each item's trace in the workspace's tracking store; new assessments
    become verdicts, and invalid ones are audited once (the audit log is append-only, so it remembers)."""
    import mlflow

    tracking_client()  # checks the server answers before items are read as "missing"
    recorded, missing = 0, 0
    invalid: list[str] = []
    with store.session() as session:
        query = select(ReviewItem.id, ReviewItem.trace_id).where(ReviewItem.trace_id.is_not(None))
        if eval_run_id:
            query = query.where(ReviewItem.eval_run_id == eval_run_id)
        items = list(session.execute(query).all())
        known = set(session.scalars(
            select(ReviewVerdict.assessment_id).where(ReviewVerdict.assessment_id.is_not(None))))
        known |= {details.get("assessment_id") for details in session.scalars(
            select(AuditEvent.details).where(AuditEvent.action == INVALID_FEEDBACK))}
    for item_id, trace_id in items:
        trace = mlflow.get_trace(trace_id)
        if trace is None:
            missing += 1
            continue
        assessments = sorted(trace.info.assessments or [], key=lambda a: a.create_time_ms or 0)
        corrections = [a for a in assessments if a.name == CORRECTION_FEEDBACK and a.valid is not False]
        for assessment in assessments:
            if assessment.name != VERDICT_FEEDBACK or assessment.assessment_id in known or assessment.valid is False:
                continue
            value = str(getattr(assessment, "value", "") or "").strip().lower()
            correction = str(corrections[-1].value) if corrections else None
            try:
                record_verdict(store, item_id, value, reviewer=assessment.source.source_id,
                               note=assessment.rationale or "", corrected_caption=correction, source="mlflow",
                               assessment_id=assessment.assessment_id,
                               at=datetime.fromtimestamp((assessment.create_time_ms or 0) / 1000, timezone.utc))
            except ReviewError as err:
                store.audit(INVALID_FEEDBACK, f"trace:{trace_id}",
                            {"error": str(err), "assessment_id": assessment.assessment_id, "item_id": item_id})
                invalid.append(f"item {item_id} (trace {trace_id}): {err}")
                continue
            recorded += 1
    return SyncResult(recorded, tuple(invalid), missing)


def review_progress(store: Store, eval_run_id: str | None = None) -> dict[str, Any]:
    with store.session() as session:
        query = select(ReviewItem.status, func.count()).group_by(ReviewItem.status)
        if eval_run_id:
            query = query.where(ReviewItem.eval_run_id == eval_run_id)
        by_status = dict(session.execute(query).all())
        verdicts = Counter(session.scalars(_latest_verdicts(eval_run_id)))
    total = sum(by_status.values())
    return {"items": total, "reviewed": by_status.get("reviewed", 0), "open": by_status.get("open", 0),
            "unreviewed_share": round(by_status.get("open", 0) / total, 4) if total else 0.0,
            "verdicts": dict(verdicts)}


def _latest_verdicts(eval_run_id: str | None) -> Any:
    latest = select(ReviewVerdict.item_id, func.max(ReviewVerdict.id).label("last")).group_by(ReviewVerdict.item_id)
    if eval_run_id:
        latest = latest.join(ReviewItem, ReviewItem.id == ReviewVerdict.item_id).where(
            ReviewItem.eval_run_id == eval_run_id)
    sub = latest.subquery()
    return select(ReviewVerdict.verdict).join(sub, ReviewVerdict.id == sub.c.last)


def open_items(store: Store, eval_run_id: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
    with store.session() as session:
        # No catalog holds more than 2^63 rows; a larger limit would overflow the driver's integer.
        query = (select(ReviewItem).where(ReviewItem.status == "open").order_by(ReviewItem.id)
                 .limit(min(limit, 2**63 - 1)))
        if eval_run_id:
            query = query.where(ReviewItem.eval_run_id == eval_run_id)
        return [{"id": i.id, "benchmark": i.benchmark, "model": i.model, "image": i.image_path,
                 "positive": i.positive, "confuser": i.confuser, "positive_score": i.positive_score,
                 "confuser_score": i.confuser_score, "generator": i.generator, "trace_id": i.trace_id}
                for i in session.scalars(query)]


def regression_set(store: Store) -> list[dict[str, Any]]:
    """The confirmed model errors: items whose latest verdict is model_error, once per (image, positive,
    confuser) however often or in however many evaluations they were confirmed. Oldest first.

    `confuser_kind` is "image" for a text-to-image retrieval miss (the confuser is the wrongly preferred
    image's path), else "text". `review_item` is the item to give a new verdict to take it out of the set.
    """
    latest = select(func.max(ReviewVerdict.id)).group_by(ReviewVerdict.item_id)
    query = (select(RegressionItem, ReviewItem.id, ReviewItem.item_key)
             .join(ReviewVerdict, ReviewVerdict.id == RegressionItem.verdict_id)
             .join(ReviewItem, ReviewItem.id == ReviewVerdict.item_id)
             .where(RegressionItem.verdict_id.in_(latest)).order_by(RegressionItem.id))
    found: dict[tuple[str, str, str], dict[str, Any]] = {}
    with store.session() as session:
        for row, item_id, item_key in session.execute(query).all():
            key = (row.image_path, row.positive, row.confuser)
            if key not in found:
                # eval_run records retrieval failures under "<subset>/<metric>/<id>"
                missed_image = row.benchmark.startswith("retrieval") and item_key.startswith("text_to_image/")
                kind = "image" if missed_image else "text"
                found[key] = {"image_path": row.image_path, "positive": row.positive, "confuser": row.confuser,
                              "benchmark": row.benchmark, "confuser_kind": kind, "review_item": item_id}
    return list(found.values())
