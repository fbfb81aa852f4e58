"""Hostile and damaged input: each bad row becomes one specific reject, every valid row is still stored."""

from __future__ import annotations

import gzip
import io
import json
import os
import tarfile
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from tests.helpers import write_png
from toolkit.catalog import open_store
from toolkit.catalog.db import StoreError
from toolkit.catalog.models import Caption, Image, Reject
from toolkit.core.config import CaptionLimits, IngestConfig, SplitRatios
from toolkit.ingest import SourceError, ingest_source, load_tagger
from toolkit.ingest.sources import describe_source, read_source


@pytest.fixture(scope="module")
def tagger():
    return load_tagger()


def _ingest(tmp_path: Path, source: Path, root: Path, tagger, **options):
    store = open_store(f"sqlite:///{tmp_path / 'c.db'}")
    report = ingest_source(store, source, IngestConfig(images_root=root, **options), blob_dir=tmp_path / "blobs",
                           tagger=tagger)
    with store.session() as session:
        pairs = sorted((p, t) for p, t in session.execute(
            select(Image.path, Caption.text).join(Caption, Caption.image_id == Image.id)))
        stored_rejects = {ref: (reason, detail) for ref, reason, detail in session.execute(
            select(Reject.row_ref, Reject.reason, Reject.detail))}
    store.close()
    assert {r["row"]: r["reason"] for r in report.rejects} == {k: v[0] for k, v in stored_rejects.items()}
    return report, pairs, stored_rejects


def _reasons(report) -> dict[str, str]:
    return {r["row"]: r["reason"] for r in report.rejects}


def _images(root: Path, *names: str) -> None:
    for index, name in enumerate(names):
        write_png(root / name, (40, 30), (index * 40, 90, 200))


def _only_unreadable(monkeypatch, method: str, *names: str) -> None:
    """Root reads everything despite chmod 000, so unreadability is simulated on the named files."""
    original = getattr(Path, method)

    def guarded(self, *args, **kwargs):
        if self.name in names:
            raise PermissionError(13, "Permission denied", str(self))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Path, method, guarded)


# --- folder sources ----------------------------------------------------------------------------------------

def test_sidecar_symlinked_out_of_the_root_is_rejected(tmp_path, tagger):
    folder = tmp_path / "photos"
    _images(folder, "a.png", "b.png", "c.png")
    (folder / "a.txt").write_text("A kept caption.", encoding="utf-8")
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0:secret", encoding="utf-8")
    (folder / "b.txt").symlink_to(secret)
    (folder / "inside.txt").write_text("A caption shared by link.", encoding="utf-8")
    (folder / "c.txt").symlink_to(folder / "inside.txt")  # a link that stays inside is fine
    report, pairs, rejects = _ingest(tmp_path, folder, folder, tagger)
    assert pairs == [("a.png", "A kept caption."), ("c.png", "A caption shared by link.")]
    assert _reasons(report) == {"b.png": "caption_path_symlink_escape"}
    assert "b.txt" in rejects["b.png"][1]


def test_unreadable_image_and_sidecar_are_rejected_per_row(tmp_path, tagger, monkeypatch):
    folder = tmp_path / "photos"
    _images(folder, "a.png", "b.png", "c.png")
    for stem in "abc":
        (folder / f"{stem}.txt").write_text(f"Caption {stem}.", encoding="utf-8")
    _only_unreadable(monkeypatch, "read_bytes", "b.png", "c.txt")
    report, pairs, rejects = _ingest(tmp_path, folder, folder, tagger)
    assert pairs == [("a.png", "Caption a.")]
    assert _reasons(report) == {"b.png": "image_unreadable", "c.png": "caption_unreadable"}
    assert "Permission denied" in rejects["b.png"][1] and "c.txt" in rejects["c.png"][1]


def test_unreadable_subfolder_is_rejected_not_skipped(tmp_path, tagger, monkeypatch):
    folder = tmp_path / "photos"
    _images(folder, "a.png", "locked/b.png")
    (folder / "a.txt").write_text("Caption a.", encoding="utf-8")
    (folder / "locked" / "b.txt").write_text("Caption b.", encoding="utf-8")
    original = os.scandir

    def scandir(path="."):
        if os.fspath(path).endswith("locked"):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return original(path)

    monkeypatch.setattr(os, "scandir", scandir)
    report, pairs, rejects = _ingest(tmp_path, folder, folder, tagger)
    assert pairs == [("a.png", "Caption a.")]
    assert _reasons(report) == {"locked": "folder_unreadable"}
    assert "Permission denied" in rejects["locked"][1]


def test_folders_that_are_not_image_folders_are_refused(tmp_path):
    (tmp_path / "rows.csv").mkdir()
    with pytest.raises(SourceError, match=r"rows\.csv is a folder"):
        describe_source(tmp_path / "rows.csv")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no images here")
    with pytest.raises(SourceError, match="no images"):
        describe_source(tmp_path / "empty")


# --- text that is not valid Unicode -------------------------------------------------------------------------

def test_lone_surrogates_are_rejected_per_row(tmp_path, tagger):
    _images(tmp_path, "a.png", "b.png")
    lines = [
        '{"image": "a.png", "caption": "A kept caption."}',
        '{"image": "b.png", "caption": "a green \\ud800 square"}',
        '{"image": "b\\udc80.png", "caption": "A path with a surrogate."}',
        '{"image": "b.png", "sentences": ["Fine.", "broken \\udfff"]}',
        '{"image": "b.png", "caption": "Also kept."}',
    ]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("\n".join(lines) + "\n", encoding="utf-8")
    report, pairs, rejects = _ingest(tmp_path, manifest, tmp_path, tagger, commit_every=100)
    assert pairs == [("a.png", "A kept caption."), ("b.png", "Also kept.")]
    assert _reasons(report) == {"line 2": "caption_not_utf8", "line 3": "image_path_not_utf8",
                                "line 4": "caption_not_utf8"}
    assert "\\udc80" in rejects["line 3"][1]


def test_coco_surrogate_caption_is_rejected_and_its_raw_row_kept(tmp_path, tagger):
    _images(tmp_path, "a.png")
    doc = ('{"images": [{"id": 1, "file_name": "a.png"}], "annotations": ['
           '{"image_id": 1, "caption": "bad \\ud800 text"}, {"image_id": 1, "caption": "A good one."}]}')
    manifest = tmp_path / "captions.json"
    manifest.write_text(doc, encoding="utf-8")
    report, pairs, _ = _ingest(tmp_path, manifest, tmp_path, tagger)
    assert pairs == [("a.png", "A good one.")]
    assert _reasons(report) == {"annotations[0]": "caption_not_utf8"}


def test_an_unexpected_row_error_becomes_a_reject_but_database_errors_stay_fatal(tmp_path, tagger, monkeypatch):
    import toolkit.ingest.pipeline as pipeline

    _images(tmp_path, "a.png")
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("\n".join(json.dumps({"image": "a.png", "caption": c})
                                  for c in ("Before.", "explode", "After.")) + "\n")
    original = pipeline.clean_caption

    def clean_caption(value, limits):
        if value == "explode":
            raise ZeroDivisionError("a bug in a validator")
        return original(value, limits)

    monkeypatch.setattr(pipeline, "clean_caption", clean_caption)
    report, pairs, rejects = _ingest(tmp_path, manifest, tmp_path, tagger, commit_every=10)
    assert pairs == [("a.png", "After."), ("a.png", "Before.")]
    assert _reasons(report) == {"line 2": "row_unexpected_error"}
    assert "ZeroDivisionError: a bug in a validator" in rejects["line 2"][1]

    def database_down(value, limits):
        raise OperationalError("SELECT 1", {}, Exception("connection refused"))

    monkeypatch.setattr(pipeline, "clean_caption", database_down)
    with pytest.raises(StoreError, match="the catalog failed during ingest") as failed:  # not a row reject
        _ingest(tmp_path, manifest, tmp_path, tagger)
    assert isinstance(failed.value.__cause__, OperationalError)


# --- CSV ---------------------------------------------------------------------------------------------------

def test_csv_field_over_the_csv_module_limit_is_an_over_long_caption(tmp_path, tagger):
    _images(tmp_path, "a.png", "b.png")
    huge = "A sentence. " + "word " * 30_000
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"image,caption\na.png,Kept.\nb.png,{huge}\nb.png,Also kept.\n", encoding="utf-8")
    report, pairs, _ = _ingest(tmp_path, manifest, tmp_path, tagger)
    assert pairs == [("a.png", "Kept."), ("b.png", "Also kept.")]
    assert _reasons(report) == {"line 3": "caption_too_long"}
    _, pairs, _ = _ingest(tmp_path / "t", manifest, tmp_path, tagger,
                          captions=CaptionLimits(max_chars=50, on_too_long="truncate"))
    assert ("b.png", "A sentence.") in pairs


def test_only_caption_and_numbered_caption_columns_are_captions(tmp_path, tagger):
    _images(tmp_path, "a.png")
    manifest = tmp_path / "m.csv"
    manifest.write_text("image,caption,caption_2,caption_source,captioner\n"
                        "a.png,A red square.,A square.,synthetic,annotator_7\n", encoding="utf-8")
    _, pairs, _ = _ingest(tmp_path, manifest, tmp_path, tagger)
    assert pairs == [("a.png", "A red square."), ("a.png", "A square.")]


def test_a_repeated_image_column_is_refused(tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text("image,caption,image\na.png,A cup.,b.png\n", encoding="utf-8")
    with pytest.raises(SourceError, match=r"repeats \['image'\]"):
        list(read_source(manifest, "csv"))


@pytest.mark.parametrize(("bad_line", "reason"), [
    ('b.png,"an unterminated caption', "row_unterminated_quote"),  # swallowed the rows below it before
    ('b.png,"closed" then text', "row_malformed_csv"),
])
def test_csv_quoting_error_costs_one_row(tmp_path, tagger, bad_line, reason):
    _images(tmp_path, "a.png", "b.png", "c.png")
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"image,caption\na.png,Kept before.\n{bad_line}\nc.png,Kept after.\n"
                        'c.png,"A quoted, kept caption."\n', encoding="utf-8")
    report, pairs, rejects = _ingest(tmp_path, manifest, tmp_path, tagger)
    assert pairs == [("a.png", "Kept before."), ("c.png", "A quoted, kept caption."), ("c.png", "Kept after.")]
    assert _reasons(report) == {"line 3": reason}
    assert "quot" in rejects["line 3"][1]


def test_multi_line_quoted_captions_still_work(tmp_path, tagger):
    _images(tmp_path, "a.png", "b.png")
    manifest = tmp_path / "m.csv"
    manifest.write_text('image,caption\na.png,"Two lines,\none caption."\nb.png,Next.\n', encoding="utf-8")
    report, pairs, _ = _ingest(tmp_path, manifest, tmp_path, tagger)
    assert pairs == [("a.png", "Two lines, one caption."), ("b.png", "Next.")] and not report.rejects


# --- WebDataset --------------------------------------------------------------------------------------------

def _tar_bytes(tmp_path: Path, samples: int) -> tuple[bytes, list[int]]:
    """A shard of `samples` samples, and the byte offset at which each member's header starts."""
    png = write_png(tmp_path / "tmp.png", (40, 30), (7, 7, 7))
    buffer = io.BytesIO()
    starts = []
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for i in range(samples):
            for name, data in ((f"s{i}.png", png[:-1] + bytes([i])), (f"s{i}.txt", f"Lamp {i}.".encode())):
                starts.append(buffer.tell())
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue(), starts


@pytest.mark.parametrize("cut", ["mid_header", "block_boundary", "gzip"])
def test_truncated_shard_is_reported(tmp_path, tagger, cut):
    data, starts = _tar_bytes(tmp_path, 3)
    shard = tmp_path / "000.tar"
    if cut == "mid_header":
        shard.write_bytes(data[:starts[4] + 100])  # inside sample 2's first header
    elif cut == "block_boundary":
        shard.write_bytes(data[:starts[4]])  # sample 1 complete, no end-of-archive blocks
    else:
        compressed = gzip.compress(data)
        shard.write_bytes(compressed[:len(compressed) - 12])
    report, pairs, rejects = _ingest(tmp_path, shard, tmp_path, tagger)
    assert [text for _, text in pairs][:2] == ["Lamp 0.", "Lamp 1."]
    assert _reasons(report)["000.tar"] == "shard_corrupt"
    if cut != "gzip":
        assert len(pairs) == 2 and "s1.txt" in rejects["000.tar"][1]


def test_complete_gzip_shard_has_no_reject(tmp_path, tagger):
    data, _ = _tar_bytes(tmp_path, 2)
    shard = tmp_path / "000.tar"
    shard.write_bytes(gzip.compress(data))
    report, pairs, _ = _ingest(tmp_path, shard, tmp_path, tagger)
    assert len(pairs) == 2 and not report.rejects


def test_unreadable_shard_is_a_source_error(tmp_path, monkeypatch):
    shards = tmp_path / "shards"
    shards.mkdir()
    for name in ("a.tar", "b.tar"):
        (shards / name).write_bytes(_tar_bytes(tmp_path, 1)[0])
    _only_unreadable(monkeypatch, "open", "a.tar")
    with pytest.raises(SourceError, match=r"a\.tar.*cannot be read.*Permission denied"):
        describe_source(shards)


# --- COCO and JSONL ----------------------------------------------------------------------------------------

def test_coco_ids_that_are_lists_objects_or_ambiguous_are_rejected(tmp_path, tagger):
    _images(tmp_path, "red.png", "green.png", "blue.png", "yellow.png")
    doc = {"images": [{"id": 1, "file_name": "red.png"}, {"id": 2, "file_name": "green.png"},
                      {"id": 2, "file_name": "blue.png"}, {"id": 3, "file_name": "blue.png"},
                      {"id": 3, "file_name": "blue.png"}, {"id": {"a": 1}, "file_name": "yellow.png"}],
           "annotations": [{"image_id": 1, "caption": "A red square."},
                           {"image_id": [2], "caption": "A list id."},
                           {"image_id": {"id": 1}, "caption": "An object id."},
                           {"image_id": 2, "caption": "Which image is this?"},
                           {"image_id": 3, "caption": "A blue square."}]}
    manifest = tmp_path / "captions.json"
    manifest.write_text(json.dumps(doc))
    report, pairs, rejects = _ingest(tmp_path, manifest, tmp_path, tagger)
    assert pairs == [("blue.png", "A blue square."), ("red.png", "A red square.")]
    assert _reasons(report) == {"images[5]": "image_id_invalid", "annotations[1]": "image_id_invalid",
                                "annotations[2]": "image_id_invalid", "annotations[3]": "image_id_ambiguous"}
    assert "green.png" in rejects["annotations[3]"][1] and "blue.png" in rejects["annotations[3]"][1]


def test_coco_with_a_bom_is_read_and_non_utf8_is_named(tmp_path, tagger):
    _images(tmp_path, "a.png")
    doc = {"images": [{"id": 1, "file_name": "a.png"}], "annotations": [{"image_id": 1, "caption": "A cup."}]}
    manifest = tmp_path / "captions.json"
    manifest.write_bytes(b"\xef\xbb\xbf" + json.dumps(doc).encode())
    _, pairs, _ = _ingest(tmp_path, manifest, tmp_path, tagger)
    assert pairs == [("a.png", "A cup.")]
    manifest.write_bytes(json.dumps(doc).replace("A cup.", "Caf\\u00e9").encode().replace(b"\\u00e9", b"\xe9"))
    with pytest.raises(SourceError) as caught:
        _ingest(tmp_path / "latin1", manifest, tmp_path, tagger)
    assert "captions.json" in str(caught.value) and "UTF-8" in str(caught.value)
    assert "b'" not in str(caught.value)


def test_jsonl_deep_nesting_and_empty_captions_are_rejected_with_clear_reasons(tmp_path, tagger):
    _images(tmp_path, "a.png")
    lines = [json.dumps({"image": "a.png", "caption": "Kept."}),
             '{"image": "a.png", "caption": ' + "[" * 100_000 + "]" * 100_000 + "}",
             json.dumps({"image": "a.png", "captions": []})]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("\n".join(lines) + "\n")
    report, pairs, rejects = _ingest(tmp_path, manifest, tmp_path, tagger)
    assert pairs == [("a.png", "Kept.")]
    assert _reasons(report) == {"line 2": "row_malformed_json", "line 3": "caption_missing"}
    assert "nested" in rejects["line 2"][1] and "empty" in rejects["line 3"][1]


def test_identical_images_in_one_chunk_count_as_duplicates(tmp_path, tagger):
    data = write_png(tmp_path / "a.png", (40, 30), (1, 2, 3))
    (tmp_path / "copy.png").write_bytes(data)
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("\n".join(json.dumps({"image": p, "caption": c}) for p, c in
                                  (("a.png", "One."), ("a.png", "Two."), ("copy.png", "Three."))))
    report, _, _ = _ingest(tmp_path, manifest, tmp_path, tagger, commit_every=100)
    assert (report.images_added, report.duplicate_images) == (1, 1)


# --- configuration -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("make", [
    lambda: IngestConfig(images_root=Path("."), commit_every=0),
    lambda: IngestConfig(images_root=Path("."), tag_batch_size=-1),
    lambda: CaptionLimits(max_chars=-5),
    lambda: SplitRatios(float("nan"), 0.0, 1.0),
    lambda: SplitRatios.parse("inf,0,1"),
])
def test_impossible_settings_are_refused(make):
    with pytest.raises(ValueError):
        make()


def test_snapshot_names_are_unique_and_latest_is_reserved(tmp_path, tagger):
    from toolkit.catalog.snapshot import SnapshotError, create_snapshot

    _images(tmp_path, "a.png")
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"image": "a.png", "caption": "One."}))
    _ingest(tmp_path, manifest, tmp_path, tagger)
    store = open_store(f"sqlite:///{tmp_path / 'c.db'}")
    with pytest.raises(SnapshotError, match="reserved"):
        create_snapshot(store, "latest")
    first, created = create_snapshot(store, "s1")
    again, created_again = create_snapshot(store, "s1")  # the same content under its own name: reused
    assert created and not created_again and again.content_hash == first.content_hash
    store.close()
    manifest.write_text(json.dumps({"image": "a.png", "caption": "Two."}))
    _ingest(tmp_path, manifest, tmp_path, tagger)
    store = open_store(f"sqlite:///{tmp_path / 'c.db'}")
    with pytest.raises(SnapshotError, match="'s1' is already used"):
        create_snapshot(store, "s1")
    # Identical content asked for under a name: a nameless snapshot takes it, a named one refuses a second.
    nameless, _ = create_snapshot(store)
    named, created = create_snapshot(store, "s2")
    assert not created and named.content_hash == nameless.content_hash and named.name == "s2"
    with pytest.raises(SnapshotError, match=r"already snapshot .*, named 's2'"):
        create_snapshot(store, "s3")
    with store.session() as session:
        from toolkit.catalog.snapshot import resolve_snapshot

        assert resolve_snapshot(session, "s2").content_hash == nameless.content_hash
    store.close()


def test_coco_nested_absurdly_deep_is_refused_before_it_eats_memory(tmp_path, tagger):
    _images(tmp_path, "a.png")
    manifest = tmp_path / "captions.json"
    manifest.write_text('{"images": [{"id": 1, "file_name": "a.png"}], "annotations": [{"image_id": 1, "caption": '
                        + "[" * 100_000 + "]" * 100_000 + "}]}")
    with pytest.raises(SourceError, match="nested more than 64 levels"):
        _ingest(tmp_path, manifest, tmp_path, tagger)
