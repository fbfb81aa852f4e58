"""Pure caption utilities, split assignment, and the store's own guarantees (on SQLite and PostgreSQL)."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from tests.helpers import add_images, run_toolkit
from toolkit.catalog import open_store
from toolkit.catalog.models import AuditEvent
from toolkit.catalog.splits import split_for_hash
from toolkit.core.config import SplitRatios
from toolkit.core.text import CaptionError, decode_utf8, normalise_caption, split_sentences, truncate_at_sentence


@pytest.mark.parametrize(("caption", "expected"), [
    ("A man wearing a black hat. A water feature in a garden.",
     ["A man wearing a black hat.", "A water feature in a garden."]),
    ("Mr. Smith holds 2.5 kg of apples! Is it heavy? Yes",
     ["Mr. Smith holds 2.5 kg of apples!", "Is it heavy?", "Yes"]),
    ('He said "stop." Then he left.', ['He said "stop."', "Then he left."]),
    ("A dog e.g. a puppy. ... !", ["A dog e.g. a puppy."]),
    ("no final stop", ["no final stop"]),
])
def test_split_sentences(caption, expected):
    assert split_sentences(caption) == expected


def test_normalise_and_decode():
    assert normalise_caption("  Cafe\u0301\t au\n lait ") == "Café au lait"
    assert decode_utf8("\ufeffhi".encode()) == "hi"
    with pytest.raises(CaptionError) as err:
        decode_utf8(b"caf\xe9")
    assert err.value.reason == "caption_not_utf8" and "offset 3" in err.value.detail
    with pytest.raises(CaptionError):
        normalise_caption("nul\x00byte")


def test_truncate_keeps_whole_sentences():
    assert truncate_at_sentence("One two. Three four. Five six.", 20) == "One two. Three four."
    assert truncate_at_sentence("A very long first sentence.", 6) == "A very"


def test_split_for_hash_is_deterministic_and_follows_ratios():
    ratios = SplitRatios(0.8, 0.1, 0.1)
    assert split_for_hash("0" * 64, ratios) == "train"
    assert split_for_hash("f" * 64, ratios) == "test"
    assert split_for_hash("e" + "0" * 63, ratios) == "val"  # 0.875 lies in [0.8, 0.9)
    import hashlib

    shares = [split_for_hash(hashlib.sha256(str(i).encode()).hexdigest(), ratios) for i in range(5000)]
    assert abs(shares.count("train") / 5000 - 0.8) < 0.03
    with pytest.raises(ValueError, match="sum to 1"):
        SplitRatios(0.5, 0.1, 0.1)
    with pytest.raises(ValueError, match="three comma-separated"):
        SplitRatios.parse("0.8,0.2")


def test_audit_log_is_append_only_and_migrations_are_idempotent(catalog_url):
    store = open_store(catalog_url)
    store.audit("test.event", "subject", {"k": 1}, actor="alice")
    store.close()
    store = open_store(catalog_url)  # second open: migrations already at head
    with store.session() as session:
        event = session.query(AuditEvent).one()
        assert (event.actor, event.action, event.details) == ("alice", "test.event", {"k": 1})
    for statement in ("UPDATE audit_log SET actor = 'mallory'", "DELETE FROM audit_log"):
        with pytest.raises(Exception, match="append-only"), store.engine.begin() as conn:
            conn.execute(text(statement))
    with store.session() as session:
        assert session.query(AuditEvent).one().actor == "alice"
    store.close()


def _two_snapshots(store):  # type: ignore[no-untyped-def]
    """Two snapshots of different content: (first, second)."""
    import tempfile
    from pathlib import Path

    from toolkit.catalog.snapshot import create_snapshot

    root = Path(tempfile.mkdtemp())
    add_images(store, root, [("a.png", (1, 2, 3), 40, 20, "train", [("A cup.", "DET NOUN PUNCT")])])
    first, _ = create_snapshot(store)
    add_images(store, root, [("b.png", (4, 5, 6), 40, 20, "train", [("A mug.", "DET NOUN PUNCT")])])
    second, _ = create_snapshot(store)
    return first, second


def test_snapshot_names_cannot_pass_for_hashes_and_refs_are_checked(catalog_url):
    from toolkit.catalog.models import Snapshot
    from toolkit.catalog.snapshot import SnapshotError, create_snapshot, resolve_snapshot

    store = open_store(catalog_url)
    first, second = _two_snapshots(store)
    for name in ("deadbeef", "DEADBEEF00", second.content_hash[:8]):
        with pytest.raises(SnapshotError, match="reads as a content hash prefix"):
            create_snapshot(store, name=name)
    with store.session() as session:
        assert resolve_snapshot(session, second.content_hash[:8]).id == second.id
        with pytest.raises(SnapshotError, match="the snapshot reference is empty"):
            resolve_snapshot(session, "")
        with pytest.raises(SnapshotError, match="a hash prefix needs 8\\+ characters"):
            resolve_snapshot(session, second.content_hash[:6])
        # A name from before the rule that looks like the other snapshot's hash no longer hides it.
        session.get(Snapshot, first.id).name = second.content_hash[:8]
    with store.session() as session, pytest.raises(SnapshotError, match="ambiguous"):
        resolve_snapshot(session, second.content_hash[:8])
    store.close()


def test_an_unknown_database_scheme_is_a_store_error(tmp_path):

    from toolkit.catalog.db import StoreError

    with pytest.raises(StoreError, match="unsupported database URL 'bogus://x'"):
        open_store("bogus://x")
    result = run_toolkit(["data", "stats", "--db", "bogus://x"])
    assert result.exit_code == 3 and "unsupported database URL" in result.output
