"""Ingest under faults: a pipe as the manifest, a repeated WebDataset key, a batch that fails midway,
empty manifests."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from tests.helpers import REPO, run_toolkit, write_png
from toolkit.catalog import open_store
from toolkit.catalog.db import StoreError
from toolkit.catalog.models import Caption, IngestBatch, Reject
from toolkit.core.config import IngestConfig
from toolkit.ingest import ingest_source, load_tagger


@pytest.fixture(scope="module")
def tagger():
    return load_tagger()


def _manifest_rows(root: Path, count: int) -> list[str]:
    for index in range(count):
        write_png(root / f"{index}.png", (40, 30), (index * 30, 90, 200))
    return [json.dumps({"image": f"{index}.png", "caption": f"A blue lamp number {index}."}) for index in range(count)]


def test_a_fifo_manifest_is_read_once_and_ingested(tmp_path: Path) -> None:
    """On main: describe_source read the pipe to hash it, then read_source opened it again and waited for a
    writer that never came (the command hung)."""
    text = "\n".join(_manifest_rows(tmp_path, 3)) + "\n"
    fifo = tmp_path / "manifest.jsonl"
    os.mkfifo(fifo)

    def write() -> None:
        with fifo.open("w") as pipe:
            pipe.write(text)

    threading.Thread(target=write, daemon=True).start()
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    try:
        done = subprocess.run([sys.executable, "-m", "toolkit", "ingest", str(fifo), "--db",
                               f"sqlite:///{tmp_path / 'c.db'}", "--json", "--workers", "1"],
                              env=env, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail("ingest of a FIFO manifest hung")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["captions_added"] == 3 and report["source"] == str(fifo.resolve())


def _shard(path: Path, members: list[tuple[str, bytes]]) -> None:
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _ingest(tmp_path: Path, source: Path, tagger, **options):
    store = open_store(f"sqlite:///{tmp_path / 'c.db'}")
    try:
        report = ingest_source(store, source, IngestConfig(images_root=tmp_path, **options),
                               blob_dir=tmp_path / "blobs", tagger=tagger)
        with store.session() as session:
            captions = sorted(session.scalars(select(Caption.text)))
            rejects = dict(session.execute(select(Reject.row_ref, Reject.reason)).all())
    finally:
        store.close()
    return report, captions, rejects


def test_a_repeated_webdataset_key_keeps_every_caption(tmp_path: Path, tagger) -> None:
    """On main the second `a.txt` overwrote the first: one caption of a pair was dropped without a word."""
    red = write_png(tmp_path / "red.png", (40, 30), (200, 10, 10))
    blue = write_png(tmp_path / "blue.png", (40, 30), (10, 10, 200))
    shard = tmp_path / "000.tar"
    _shard(shard, [("a.png", red), ("a.txt", b"A red lamp."), ("a.png", blue), ("a.txt", b"A blue lamp."),
                   ("a.txt", b"A stray caption."), ("b.png", red), ("b.txt", b"Another red lamp.")])
    _, captions, rejects = _ingest(tmp_path, shard, tagger)
    assert captions == ["A blue lamp.", "A red lamp.", "Another red lamp."]
    assert rejects == {"000.tar:a#3": "duplicate_key"}  # the repeat that has no image of its own


def test_a_failed_batch_records_only_what_it_committed(tmp_path: Path, tagger, monkeypatch) -> None:
    """On main the failed batch's counts included the chunk that was rolled back."""
    import toolkit.ingest.pipeline as pipeline

    manifest = tmp_path / "m.jsonl"
    manifest.write_text("\n".join(_manifest_rows(tmp_path, 4)) + "\n")
    original, calls = pipeline._write_chunk, []

    def write_then_fail(session, *args):
        original(session, *args)
        calls.append(1)
        if len(calls) == 2:  # the second chunk's rows are written, then its commit cannot happen
            raise OperationalError("INSERT", {}, Exception("disk I/O error"))

    monkeypatch.setattr(pipeline, "_write_chunk", write_then_fail)
    with pytest.raises(StoreError):
        _ingest(tmp_path, manifest, tagger, commit_every=2)
    store = open_store(f"sqlite:///{tmp_path / 'c.db'}")
    with store.session() as session:
        (batch,) = session.scalars(select(IngestBatch))
        stored = session.scalar(select(func.count()).select_from(Caption))
        status, counts = batch.status, dict(batch.counts)
    store.close()
    assert status == "failed" and stored == 2
    assert counts["captions_added"] == 2 and counts["images_added"] == 2 and counts["rows_read"] == 2, counts


@pytest.mark.parametrize("name", ["empty.csv", "empty.jsonl", "blank.jsonl"])
def test_an_empty_manifest_is_bad_input_whatever_its_format(tmp_path: Path, name: str) -> None:
    """On main an empty CSV exited 3 and an empty JSONL 0 (a committed batch of nothing)."""
    manifest = tmp_path / name
    manifest.write_text("\n \n" if name.startswith("blank") else "")
    result = run_toolkit(["ingest", manifest, "--db", f"sqlite:///{tmp_path / 'c.db'}", "--workers", "1"])
    assert result.exit_code == 3, result.output
    assert "empty file" in result.output


def test_an_interrupt_inside_a_statement_still_marks_the_batch_failed(tmp_path: Path, tagger, monkeypatch) -> None:
    """Ctrl-C landing just after SQLite ran an INSERT (while SQLAlchemy builds its result) left the statement's
    cursor alive in the traceback's frames: the connection stayed open in its write transaction, so the
    status write waited out the 30 s busy timeout. On main: `StoreError: the catalog failed during ingest
    (database is locked)` after 30 s and the batch left `running` (one Ctrl-C in 12 in a real run)."""
    from sqlalchemy.engine.cursor import CursorResult

    manifest = tmp_path / "m.jsonl"
    manifest.write_text("\n".join(_manifest_rows(tmp_path, 4)) + "\n")
    original = CursorResult.__init__

    def interrupted(self, context, *args):
        original(self, context, *args)
        if str(context.statement).startswith("INSERT INTO captions"):
            raise KeyboardInterrupt

    monkeypatch.setattr(CursorResult, "__init__", interrupted)
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        _ingest(tmp_path, manifest, tagger, commit_every=2)
    took = time.monotonic() - started
    monkeypatch.undo()
    store = open_store(f"sqlite:///{tmp_path / 'c.db'}")
    with store.session() as session:
        (batch,) = session.scalars(select(IngestBatch))
        status = batch.status
    store.close()
    assert status == "failed" and took < 10, (status, took)
