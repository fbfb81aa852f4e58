"""`ingest_source`: read a source, validate every row, tag captions once, and store them.

Crash safety: rows are committed in chunks of `commit_every`, one transaction each, and every insert
is idempotent (images by content hash, captions by (image, text hash), rejects by (source, row)).
A `kill -9` loses at most the chunk in flight; re-running the same source then yields exactly the
state of an uninterrupted run. `--strict` runs the whole batch in one transaction instead.
"""

from __future__ import annotations

import functools
import gc
import os
import shutil
import tempfile
import traceback
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, insert, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from toolkit.catalog.db import Store, StoreError
from toolkit.catalog.models import Caption, Image, IngestBatch, Reject, Sentence
from toolkit.catalog.splits import split_for_hash
from toolkit.core.config import IngestConfig, current_actor
from toolkit.core.errors import InputError, StrictRefusal
from toolkit.core.text import replace_surrogates, split_sentences, text_sha256
from toolkit.ingest.rows import SourceError, SourceRow
from toolkit.ingest.sources import SourceInfo, describe_source, read_source
from toolkit.ingest.tagging import SpacyTagger, load_tagger
from toolkit.ingest.validate import (
    RowRejected,
    ValidImage,
    clean_caption,
    inspect_image,
    read_image_file,
    resolve_image_path,
)

if TYPE_CHECKING:
    from toolkit.ingest.parallel import Shard

REJECTS_SHOWN = 1000  # rejects listed in the report; all of them are in the rejects table


class WorkspaceError(InputError):
    """The workspace cannot take an image blob (disk full, no permission): an environment fault, fatal."""


class StrictIngestError(StrictRefusal):
    def __init__(self, report: IngestReport) -> None:
        super().__init__(f"--strict: {report.rejected} row(s) rejected, nothing was stored "
                         f"(first: {report.rejects[0]['row']}: {report.rejects[0]['reason']})")
        self.report = report


@dataclass
class IngestReport:
    batch_id: int
    source: str
    source_kind: str
    status: str = "running"
    rows_read: int = 0
    images_added: int = 0
    captions_added: int = 0
    sentences_added: int = 0
    duplicates: int = 0  # captions already present (same image bytes, same text)
    duplicate_images: int = 0  # rows whose image bytes were already stored under another path
    rejected: int = 0
    rejects: list[dict[str, str]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def counts(self) -> dict[str, int]:
        return {k: v for k, v in self.__dict__.items() if isinstance(v, int) and k != "batch_id"}


@dataclass
class _Pending:
    """What a chunk of valid rows will write."""

    images: dict[str, ValidImage] = field(default_factory=dict)
    captions: list[tuple[str, str, str]] = field(default_factory=list)  # (image sha, text, row ref)
    rejects: list[tuple[str, str, str, str]] = field(default_factory=list)  # (row, reason, detail, raw)
    duplicate_images: int = 0  # rows whose image bytes an earlier row of the chunk had under another path


def _chunks(rows: Iterable[SourceRow], size: int) -> Iterator[list[SourceRow]]:
    iterator = iter(rows)
    while chunk := list(islice(iterator, size)):
        yield chunk


def _dialect_insert(session: Session, table: Any) -> Any:
    """INSERT with ON CONFLICT DO NOTHING support (both dialects spell it the same way)."""
    if session.get_bind().dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table)
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(table)


class _ImageReader:
    """Validates images, remembering recent paths so a manifest listing one image per caption
    (COCO has five) decodes it once."""

    def __init__(self, config: IngestConfig, blob_dir: Path) -> None:
        self.config = config
        self.root = config.images_root
        self.blob_dir = blob_dir
        self._recent: OrderedDict[str, ValidImage | RowRejected] = OrderedDict()

    def read(self, row: SourceRow) -> ValidImage:
        if row.image_bytes is not None:
            image = inspect_image(row.image_bytes, self.config.images, None)
            return replace(image, path=self._store_blob(image), root=str(self.blob_dir.resolve()), data=b"")
        assert row.image_path is not None
        cached = self._recent.get(row.image_path)
        if cached is None:
            try:
                resolved, relative = resolve_image_path(self.root, row.image_path)
                data = read_image_file(resolved, self.config.images)
                cached = replace(inspect_image(data, self.config.images, relative), data=b"",
                                 root=str(self.root.resolve()))
            except RowRejected as err:
                cached = err
            self._recent[row.image_path] = cached
            if len(self._recent) > 4096:
                self._recent.popitem(last=False)
        if isinstance(cached, RowRejected):
            raise cached
        return cached

    def _store_blob(self, image: ValidImage) -> str:
        """Images that arrive as bytes (WebDataset) are kept content-addressed in the workspace."""
        relative = f"{image.sha256[:2]}/{image.sha256}.{image.format.lower()}"
        target = self.blob_dir / relative
        if not target.exists():
            tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                tmp.write_bytes(image.data)
                os.replace(tmp, target)
            except OSError as err:
                raise WorkspaceError(f"cannot write image blob {target}: {err.strerror or err}") from err
        return relative


def _validate_chunk(rows: list[SourceRow], reader: _ImageReader, config: IngestConfig) -> _Pending:
    pending = _Pending()
    for row in rows:
        # Row references and excerpts go into the catalog as text, so no lone surrogate may remain.
        row = replace(row, row_ref=replace_surrogates(row.row_ref), raw=replace_surrogates(row.raw))
        try:
            _validate_row(row, reader, config, pending)
        except (SQLAlchemyError, WorkspaceError):
            raise  # the catalog or the workspace failed, not the row: stop, committed chunks stay
        except Exception as err:  # a validator bug must cost this row only, not the chunk
            pending.rejects.append((row.row_ref, "row_unexpected_error",
                                    replace_surrogates(f"{type(err).__name__}: {err}"), row.raw))
    return pending


def _validate_row(row: SourceRow, reader: _ImageReader, config: IngestConfig, pending: _Pending) -> None:
    """Adds the row's valid captions, or its rejects, to `pending`; either all of them or none."""
    if row.problem is not None:
        reason, detail = row.problem
        pending.rejects.append((row.row_ref, reason, replace_surrogates(detail), row.raw))
        return
    try:
        image = reader.read(row)
    except RowRejected as err:
        pending.rejects.append((row.row_ref, err.reason, replace_surrogates(err.detail), row.raw))
        return
    if not row.captions:
        pending.rejects.append((row.row_ref, "caption_missing", "the row has no caption", row.raw))
        return
    captions: list[tuple[str, str, str]] = []
    rejects: list[tuple[str, str, str, str]] = []
    for index, value in enumerate(row.captions):
        # A multi-caption row keeps its valid captions; each bad one is rejected on its own.
        ref = row.row_ref if len(row.captions) == 1 else f"{row.row_ref} caption {index + 1}"
        try:
            captions.append((image.sha256, clean_caption(value, config.captions), ref))
        except RowRejected as err:
            rejects.append((ref, err.reason, replace_surrogates(err.detail), row.raw))
    pending.rejects.extend(rejects)
    if captions:
        known = pending.images.setdefault(image.sha256, image)
        if image.path is not None and known.path != image.path:
            pending.duplicate_images += 1  # identical bytes met under another path in this chunk
        pending.captions.extend(captions)


def _write_chunk(session: Session, pending: _Pending, batch: IngestBatch, info: SourceInfo,
                 tagger: SpacyTagger, config: IngestConfig, report: IngestReport) -> None:
    if pending.images:
        existing_paths = dict(session.execute(
            select(Image.sha256, Image.path).where(Image.sha256.in_(pending.images))).all())
        new_images = [
            {"sha256": sha, "images_root": img.root, "path": img.path, "width": img.width,
             "height": img.height, "orientation": img.orientation, "format": img.format, "num_bytes": img.num_bytes,
             "split": split_for_hash(sha, config.splits), "batch_id": batch.id,
             "created_at": datetime.now(timezone.utc)}
            for sha, img in pending.images.items() if sha not in existing_paths
        ]
        report.duplicate_images += pending.duplicate_images + sum(
            1 for sha, img in pending.images.items()
            if sha in existing_paths and img.path is not None and existing_paths[sha] != img.path)
        if new_images:
            session.execute(_dialect_insert(session, Image).on_conflict_do_nothing(index_elements=["sha256"]),
                            new_images)
            # A concurrent ingest of the same source may have stored some of them first: count only ours.
            report.images_added += session.scalar(
                select(func.count()).select_from(Image)
                .where(Image.batch_id == batch.id, Image.sha256.in_([row["sha256"] for row in new_images]))) or 0
    image_ids = dict(session.execute(
        select(Image.sha256, Image.id).where(Image.sha256.in_(pending.images))).all())
    present = set(session.execute(
        select(Caption.image_id, Caption.text_sha256).where(Caption.image_id.in_(image_ids.values()))
    ).all())
    new_captions: dict[tuple[int, str], tuple[str, str]] = {}
    for sha, text, ref in pending.captions:
        key = (image_ids[sha], text_sha256(text))
        if key in present or key in new_captions:
            report.duplicates += 1
        else:
            new_captions[key] = (text, ref)
    if new_captions:
        # Insert-or-skip: a concurrent ingest of the same source may store a caption between our read of
        # `present` and this insert. Whatever it stored is its own (with its sentences); we tag only the
        # captions this batch actually inserted, and count the rest as duplicates.
        session.execute(
            _dialect_insert(session, Caption).on_conflict_do_nothing(index_elements=["image_id", "text_sha256"]),
            [{"image_id": image_id, "text": text, "text_sha256": sha, "status": "active",
              "batch_id": batch.id, "source_row": ref[:256], "created_at": datetime.now(timezone.utc)}
             for (image_id, sha), (text, ref) in new_captions.items()])
        caption_ids = {
            (image_id, sha): cid for cid, image_id, sha in session.execute(
                select(Caption.id, Caption.image_id, Caption.text_sha256)
                .where(Caption.batch_id == batch.id, Caption.image_id.in_({k[0] for k in new_captions})))}
        ours = {key: value for key, value in new_captions.items() if key in caption_ids}
        report.duplicates += len(new_captions) - len(ours)
        if ours:
            _write_sentences(session, ours, caption_ids, tagger, report)
        report.captions_added += len(ours)
    if pending.rejects:
        session.execute(
            _dialect_insert(session, Reject).on_conflict_do_nothing(index_elements=["source_sha256", "row_ref"]),
            [{"batch_id": batch.id, "source_uri": info.uri, "source_sha256": info.sha256, "row_ref": ref[:256],
              "reason": reason, "detail": detail, "raw": raw, "created_at": datetime.now(timezone.utc)}
             for ref, reason, detail, raw in pending.rejects])


def _write_sentences(session: Session, new_captions: dict[tuple[int, str], tuple[str, str]],
                     caption_ids: dict[tuple[int, str], int], tagger: SpacyTagger,
                     report: IngestReport) -> None:
    owners: list[tuple[int, int, str]] = []
    for key, (text, _) in new_captions.items():
        for position, sentence in enumerate(split_sentences(text) or [text]):
            owners.append((caption_ids[key], position, sentence))
    tagged = tagger.tag([sentence for _, _, sentence in owners])
    session.execute(insert(Sentence), [
        {"caption_id": cid, "position": position, "text": sentence, "tokens": list(tags.tokens),
         "pos": list(tags.pos), "tagger": tagger.spec, "parse": tags.to_json()}
        for (cid, position, sentence), tags in zip(owners, tagged, strict=True)])
    report.sentences_added += len(owners)


def _catalog_failure_as_store_error(ingest: Callable[..., IngestReport]) -> Callable[..., IngestReport]:
    """A database failure mid-ingest (a dropped connection, a full disk) is the catalog's, not a bug: it
    becomes a StoreError that says what is kept and how to continue."""
    @functools.wraps(ingest)
    def wrapped(*args: Any, **kwargs: Any) -> IngestReport:
        try:
            return ingest(*args, **kwargs)
        except SQLAlchemyError as err:
            raise StoreError(f"the catalog failed during ingest ({getattr(err, 'orig', None) or err}); the chunks "
                             "committed before it are kept, re-run the same command to continue") from err
    return wrapped


@_catalog_failure_as_store_error
def ingest_source(
    store: Store,
    source: Path,
    config: IngestConfig,
    *,
    blob_dir: Path,
    tagger: SpacyTagger | None = None,
    on_progress: Callable[[IngestReport], None] | None = None,
    workers: int = 1,
    shard: Shard | None = None,
) -> IngestReport:
    """Ingest `source` into `store`. Raises StrictIngestError (nothing stored) under `config.strict`.

    `workers` > 1 validates and tags in that many processes (toolkit.ingest.parallel); `shard` keeps only
    that shard's rows, for several machines ingesting one source into one catalog.
    """
    with ExitStack() as stack:
        readable = stack.enter_context(_regular_file(source))
        info = replace(describe_source(readable), uri=str(source.resolve()))
        rows = read_source(readable, info.kind)
        if shard is not None:
            rows = (row for row in rows if shard.owns(row))
        if workers > 1:
            from toolkit.ingest.parallel import WorkerPool  # it imports this module

            pool = stack.enter_context(WorkerPool(config, blob_dir, workers))
            spec, validated = pool.spec, pool.validate
        else:
            local_tagger = tagger or load_tagger(config.tagger, config.tag_batch_size)
            reader = _ImageReader(config, blob_dir)
            spec = local_tagger.spec
            validated = functools.partial(_validate_serially, reader, config, local_tagger)
        return _ingest_chunks(store, rows, info, config, spec, validated, on_progress)


@contextmanager
def _regular_file(source: Path) -> Iterator[Path]:
    """`source`, or for a pipe (a FIFO, /dev/stdin) a temporary copy of it: a source is read twice (once
    to fingerprint it, once for its rows) and a pipe can be read only once."""
    if source.is_dir() or not source.exists() or source.is_file():
        yield source
        return
    with tempfile.TemporaryDirectory(prefix="toolkit-ingest-") as folder:
        copy = Path(folder) / source.name
        try:
            with source.open("rb") as pipe, copy.open("wb") as handle:
                shutil.copyfileobj(pipe, handle, 1 << 20)
        except OSError as err:
            raise SourceError(f"{source} cannot be read ({err.strerror or err})") from err
        yield copy


def _validate_serially(reader: _ImageReader, config: IngestConfig, tagger: SpacyTagger,
                       chunks: Iterable[list[SourceRow]]) -> Iterator[tuple[list[SourceRow], _Pending, Any]]:
    for chunk in chunks:
        yield chunk, _validate_chunk(chunk, reader, config), tagger


def _ingest_chunks(store: Store, rows: Iterable[SourceRow], info: SourceInfo, config: IngestConfig, spec: str,
                   validated: Callable[[Iterable[list[SourceRow]]], Iterator[tuple[list[SourceRow], _Pending, Any]]],
                   on_progress: Callable[[IngestReport], None] | None) -> IngestReport:
    with store.session() as session:
        batch = IngestBatch(source_uri=info.uri, source_kind=info.kind, source_sha256=info.sha256,
                            images_root=str(config.images_root.resolve()), tagger=spec,
                            actor=current_actor(), status="running", counts={})
        session.add(batch)
    report = IngestReport(batch_id=batch.id, source=info.uri, source_kind=info.kind)

    def process(session: Session, chunk: list[SourceRow], pending: _Pending, tagger: Any) -> None:
        _write_chunk(session, pending, batch, info, tagger, config, report)
        report.rows_read += len(chunk)
        report.rejected += len(pending.rejects)
        room = REJECTS_SHOWN - len(report.rejects)
        report.rejects.extend({"row": ref, "reason": reason, "detail": detail}
                              for ref, reason, detail, _ in pending.rejects[:max(room, 0)])
        if on_progress:
            on_progress(report)

    # The counts of what is committed: a failed batch records these, not those of the chunk rolled back.
    committed = replace(report, rejects=[])
    try:
        chunks = validated(_chunks(rows, config.commit_every))
        if config.strict:
            _ingest_strict(store, chunks, process, report)
        else:
            for chunk, pending, tagger in chunks:
                with store.session() as session:
                    process(session, chunk, pending, tagger)
                committed = replace(report, rejects=list(report.rejects))
    except StrictIngestError:
        _finish(store, batch.id, report, "refused")
        raise
    except BaseException as err:
        _release_interrupted_statements(err)
        _finish(store, batch.id, committed, "failed")
        raise
    _finish(store, batch.id, report, "committed")
    return report


def _release_interrupted_statements(err: BaseException) -> None:
    """Ctrl-C just after SQLite ran a statement (while SQLAlchemy builds its result) leaves that statement's
    cursor alive in the traceback's frames; SQLite then keeps the connection, and its write lock, until the
    cursor goes, so the batch's status could not be written for the busy timeout (30 s). Clearing the
    finished frames' locals (the printed traceback keeps its lines) lets the cursor and the lock go now."""
    seen: set[int] = set()
    chained: BaseException | None = err
    while chained is not None and id(chained) not in seen:
        seen.add(id(chained))
        traceback.clear_frames(chained.__traceback__)
        chained = chained.__cause__ or chained.__context__
    gc.collect()  # the cursor and SQLAlchemy's execution context refer to each other


class _Rollback(Exception):
    pass


def _ingest_strict(store: Store, chunks: Iterable[tuple[list[SourceRow], _Pending, Any]],
                   process: Callable[[Session, list[SourceRow], _Pending, Any], None], report: IngestReport) -> None:
    try:
        with store.session() as session:
            for chunk, pending, tagger in chunks:
                process(session, chunk, pending, tagger)
            if report.rejected:
                raise _Rollback
    except _Rollback:
        report.images_added = report.captions_added = report.sentences_added = 0
        raise StrictIngestError(report) from None


def _finish(store: Store, batch_id: int, report: IngestReport, status: str) -> None:
    report.status = status
    with store.session() as session:
        batch = session.get(IngestBatch, batch_id)
        assert batch is not None
        batch.status = status
        batch.finished_at = datetime.now(timezone.utc)
        batch.counts = report.counts()
    store.audit(f"ingest.{status}", report.source, {"batch_id": batch_id, **report.counts()})
