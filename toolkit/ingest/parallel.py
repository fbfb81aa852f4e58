"""Ingest on every core, and across machines.

- `WorkerPool`: decoding, hashing, validating and tagging run in worker processes, one chunk of rows per
  job. At most `2 × workers` chunks are in flight, so memory stays flat however long the source is, and
  results come back in source order to the parent, the only catalog writer, which commits each chunk as
  the serial path does: crash safety and idempotence are unchanged. Workers are spawned (not forked), so
  neither the parent's database connections nor its threads leak into them.
- `Shard`: `--shard i/N` keeps the rows whose image key hashes to shard i. The hash is stable across
  machines and runs, and all rows naming one image land in one shard, so N machines can ingest one
  manifest concurrently into one PostgreSQL catalog without racing on the same image's captions.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolkit.core.config import IngestConfig
from toolkit.core.parse import TaggedSentence
from toolkit.core.text import split_sentences
from toolkit.ingest.pipeline import _ImageReader, _Pending, _validate_chunk
from toolkit.ingest.rows import SourceRow
from toolkit.ingest.tagging import SpacyTagger, load_tagger


def default_workers() -> int:
    """The cores this process may run on (a container's CPU set, not the host's core count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class Shard:
    index: int  # 0-based
    count: int

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ValueError(f"shard {self.index}/{self.count}: need 0 <= i < N, e.g. 0/4 … 3/4")

    @classmethod
    def parse(cls, text: str) -> Shard:
        index, sep, count = text.partition("/")
        if not sep or not index.strip().isdigit() or not count.strip().isdigit():
            raise ValueError(f"{text!r} is not i/N (e.g. 0/4 for the first of four shards)")
        return cls(int(index), int(count))

    def owns(self, row: SourceRow) -> bool:
        return shard_of(shard_key(row), self.count) == self.index


def shard_key(row: SourceRow) -> str:
    """The image path as written (every caption row of one image goes to one shard), else the row."""
    return row.image_path if row.image_path is not None else row.row_ref


def shard_of(key: str, count: int) -> int:
    # sha256, not hash(): Python salts str hashes per process, and every machine must agree.
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") % count


class PretaggedTagger:
    """Stands in for the tagger in the writer: the sentences were tagged in a worker already."""

    def __init__(self, spec: str, tags: dict[str, TaggedSentence]) -> None:
        self.spec = spec
        self._tags = tags

    def tag(self, sentences: Sequence[str]) -> list[TaggedSentence]:
        return [self._tags[sentence] for sentence in sentences]


# One per worker process, set by `_start_worker`.
_reader: _ImageReader | None = None
_tagger: SpacyTagger | None = None
_config: IngestConfig | None = None


def _start_worker(config: IngestConfig, blob_dir: Path, parent: int, without_torch: bool) -> None:
    global _reader, _config
    if without_torch:
        _keep_torch_out()
    _config, _reader = config, _ImageReader(config, blob_dir)
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()


def _keep_torch_out() -> None:
    """spaCy's thinc imports torch whenever it is installed (+470 MB and seconds per worker), though a
    tagger never runs it. A None entry in sys.modules makes `import torch` raise ModuleNotFoundError,
    which thinc.compat takes for "torch is not installed" (its CPU ops are the same either way: the
    stored parses are identical, tested). Only in workers, whose process is ours; a torch already
    imported (by a parent's main module re-run under spawn) is left alone. A pipeline that does run
    torch (a transformer) fails to load here, and the pool starts again with torch (`WorkerPool`)."""
    sys.modules.setdefault("torch", None)  # type: ignore[arg-type]


def _exit_with_parent(parent: int) -> None:
    """A parent killed with SIGKILL cannot shut the pool down, and its idle workers would wait forever on
    their queue (holding a tagger each): they leave as soon as they are orphaned."""
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)


def _worker_tagger() -> SpacyTagger:
    # Loaded on first use, not in the initializer: a TaggerError then reaches the parent with its message
    # instead of breaking the pool.
    global _tagger
    assert _config is not None
    if _tagger is None:
        _tagger = load_tagger(_config.tagger, _config.tag_batch_size)
    return _tagger


def _tagger_spec() -> str:
    return _worker_tagger().spec


def _validate_and_tag(chunk: list[SourceRow]) -> tuple[_Pending, dict[str, TaggedSentence]]:
    assert _reader is not None and _config is not None
    pending = _validate_chunk(chunk, _reader, _config)
    # Every valid caption's sentences are tagged here; the writer uses those of the captions that are new.
    sentences = list(dict.fromkeys(
        sentence for _, text, _ in pending.captions for sentence in (split_sentences(text) or [text])))
    tags = dict(zip(sentences, _worker_tagger().tag(sentences), strict=True)) if sentences else {}
    return pending, tags


class WorkerPool:
    """`with WorkerPool(config, blob_dir, workers) as pool:` then `pool.spec` and `pool.validate(chunks)`."""

    def __init__(self, config: IngestConfig, blob_dir: Path, workers: int) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self.workers = workers
        self._config, self._blob_dir = config, blob_dir
        self._executor = self._start(without_torch=True)
        self.spec = ""

    def _start(self, without_torch: bool) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_start_worker,
                                   initargs=(self._config, self._blob_dir, os.getpid(), without_torch))

    def __enter__(self) -> WorkerPool:
        try:
            try:
                self.spec = self._executor.submit(_tagger_spec).result()  # also fails early on a missing model
            except ModuleNotFoundError as err:
                if err.name != "torch":
                    raise
                # The tagger runs torch (a transformer pipeline): these workers import it after all.
                self._executor.shutdown(cancel_futures=True)
                self._executor = self._start(without_torch=False)
                self.spec = self._executor.submit(_tagger_spec).result()
        except BaseException:
            self._executor.shutdown(cancel_futures=True)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)

    def validate(self, chunks: Iterable[list[SourceRow]]) -> Iterator[tuple[list[SourceRow], _Pending, Any]]:
        """(chunk, what it will write, a tagger holding its sentences' tags), in source order."""
        in_flight: deque[tuple[list[SourceRow], Future[tuple[_Pending, dict[str, TaggedSentence]]]]] = deque()
        limit = 2 * self.workers  # enough to keep every worker busy while the writer commits
        for chunk in chunks:
            in_flight.append((chunk, self._executor.submit(_validate_and_tag, chunk)))
            if len(in_flight) >= limit:
                yield self._next(in_flight)
        while in_flight:
            yield self._next(in_flight)

    def _next(self, in_flight: deque[tuple[list[SourceRow], Future[Any]]]) -> tuple[list[SourceRow], _Pending, Any]:
        chunk, future = in_flight.popleft()
        pending, tags = future.result()
        return chunk, pending, PretaggedTagger(self.spec, tags)
