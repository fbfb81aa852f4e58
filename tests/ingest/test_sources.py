"""Every source format streams into the same catalog rows."""

from __future__ import annotations

import csv
import io
import json
import tarfile
from pathlib import Path

import pytest
from sqlalchemy import select

from tests.helpers import write_png
from toolkit.catalog import open_store
from toolkit.catalog.models import Caption, Image, Sentence
from toolkit.core.config import IngestConfig
from toolkit.ingest import ingest_source, load_tagger


@pytest.fixture(scope="module")
def tagger():
    return load_tagger()


def _ingest(tmp_path: Path, source: Path, root: Path, tagger):
    store = open_store(f"sqlite:///{tmp_path / 'c.db'}")
    report = ingest_source(store, source, IngestConfig(images_root=root), blob_dir=tmp_path / "blobs",
                           tagger=tagger)
    with store.session() as session:
        pairs = sorted((p, t) for p, t in session.execute(
            select(Image.path, Caption.text).join(Caption, Caption.image_id == Image.id)))
    store.close()
    return report, pairs


def test_csv_with_several_caption_columns_and_a_bad_byte(tmp_path, tagger):
    write_png(tmp_path / "a.png", (40, 30), (1, 2, 3))
    write_png(tmp_path / "b.png", (30, 40), (4, 5, 6))
    manifest = tmp_path / "m.csv"
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["image", "caption", "caption_2"])
    writer.writerow(["a.png", "A cat, sitting.", "A grey cat."])
    writer.writerow(["b.png", "A dog.", ""])
    writer.writerow(["b.png", "too", "many", "fields"])
    manifest.write_bytes(buffer.getvalue().encode() + b"b.png,Caf\xe9 au lait.,\r\n")
    report, pairs = _ingest(tmp_path, manifest, tmp_path, tagger)
    assert pairs == [("a.png", "A cat, sitting."), ("a.png", "A grey cat."), ("b.png", "A dog.")]
    assert {r["row"]: r["reason"] for r in report.rejects} == {
        "line 4": "row_wrong_field_count", "line 5": "caption_not_utf8"}


def test_tsv_with_a_sentences_column(tmp_path, tagger):
    write_png(tmp_path / "a.png", (40, 30), (1, 2, 3))
    manifest = tmp_path / "m.tsv"
    manifest.write_text('image\tsentences\na.png\t["A red cube", "It is small."]\n', encoding="utf-8")
    _, pairs = _ingest(tmp_path, manifest, tmp_path, tagger)
    assert pairs == [("a.png", "A red cube. It is small.")]


def test_coco_captions_json(tmp_path, tagger):
    write_png(tmp_path / "img" / "1.jpg.png", (40, 30), (1, 2, 3))
    doc = {"images": [{"id": 1, "file_name": "img/1.jpg.png"}, {"id": 2, "file_name": "img/missing.png"}],
           "annotations": [{"image_id": 1, "id": 10, "caption": "A bus."},
                           {"image_id": 1, "id": 11, "caption": "A red bus on a road."},
                           {"image_id": 2, "id": 12, "caption": "Gone."},
                           {"image_id": 3, "id": 13, "caption": "Unknown id."}]}
    manifest = tmp_path / "captions.json"
    manifest.write_text(json.dumps(doc))
    report, pairs = _ingest(tmp_path, manifest, tmp_path, tagger)
    assert pairs == [("img/1.jpg.png", "A bus."), ("img/1.jpg.png", "A red bus on a road.")]
    assert {r["row"]: r["reason"] for r in report.rejects} == {
        "annotations[2]": "image_missing", "annotations[3]": "image_id_unknown"}


def test_folder_with_sidecar_captions(tmp_path, tagger):
    folder = tmp_path / "photos"
    write_png(folder / "x.png", (40, 30), (1, 2, 3))
    (folder / "x.txt").write_text("A boat. On a lake.", encoding="utf-8")
    write_png(folder / "sub" / "y.png", (40, 30), (3, 2, 1))
    (folder / "sub" / "y.txt").write_bytes(b"\xff\xfe broken")
    write_png(folder / "z.png", (40, 30), (9, 9, 9))
    report, pairs = _ingest(tmp_path, folder, folder, tagger)
    assert pairs == [("x.png", "A boat. On a lake.")]
    assert {r["row"]: r["reason"] for r in report.rejects} == {
        "sub/y.png": "caption_not_utf8", "z.png": "caption_missing"}


def test_webdataset_shards(tmp_path, tagger):
    shard_dir = tmp_path / "shards"
    shard_dir.mkdir()
    png = write_png(tmp_path / "tmp.png", (40, 30), (7, 7, 7))
    with tarfile.open(shard_dir / "000.tar", "w") as tar:
        for name, data in [("s1.png", png), ("s1.txt", b"A lamp. It is lit."), ("s2.txt", b"No image here.")]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    report, pairs = _ingest(tmp_path, shard_dir, shard_dir, tagger)
    assert len(pairs) == 1 and pairs[0][1] == "A lamp. It is lit."
    # The image was copied, content-addressed, into the workspace blob store.
    assert (tmp_path / "blobs" / pairs[0][0]).read_bytes() == png
    assert {r["row"]: r["reason"] for r in report.rejects} == {"000.tar:s2": "image_missing"}


def test_manifest_rows_stream_without_loading_the_file(tmp_path):
    """The readers are generators: the first row arrives before a broken tail is ever read."""
    from toolkit.ingest.sources import read_source

    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"image": "a.png", "caption": "x"}) + "\n" + "{" * 10)
    rows = read_source(manifest, "jsonl")
    first = next(rows)
    assert first.image_path == "a.png" and first.problem is None
    assert next(rows).problem[0] == "row_malformed_json"


def test_sentences_are_tagged_once_at_ingest(tmp_path, tagger):
    write_png(tmp_path / "a.png", (40, 30), (1, 2, 3))
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"image": "a.png", "caption": "A red ball. A blue box."}))
    _ingest(tmp_path, manifest, tmp_path, tagger)
    store = open_store(f"sqlite:///{tmp_path / 'c.db'}")
    with store.session() as session:
        assert [s.pos for s in session.scalars(select(Sentence).order_by(Sentence.position))] == [
            ["DET", "ADJ", "NOUN", "PUNCT"], ["DET", "ADJ", "NOUN", "PUNCT"]]
