"""Snapshots: the catalog's current membership frozen under a content hash, for runs to reference."""

from __future__ import annotations

import hashlib
import re
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from toolkit.catalog.db import Store
from toolkit.catalog.models import Caption, Image, Snapshot, SnapshotMember
from toolkit.core.config import current_actor
from toolkit.core.errors import InputError

# What resolve_snapshot reads as a content hash prefix; names may not look like one.
_HASH_PREFIX = re.compile(r"[0-9a-fA-F]{8,}")


class SnapshotError(InputError):
    """A snapshot reference that does not resolve, or a snapshot that cannot be made."""


def _membership(session: Session) -> list[tuple[int, int, str, str, str]]:
    rows = session.execute(
        select(Caption.id, Image.id, Image.split, Image.sha256, Caption.text_sha256)
        .join(Image, Image.id == Caption.image_id)
        .where(Caption.status == "active")
        .order_by(Image.sha256, Caption.text_sha256)
    ).all()
    return [(int(r[0]), int(r[1]), str(r[2]), str(r[3]), str(r[4])) for r in rows]


def membership_hash(pairs: list[tuple[str, str]]) -> str:
    """SHA-256 over sorted (image sha, caption-text sha) lines: same content, same hash, on any database."""
    digest = hashlib.sha256()
    for image_sha, caption_sha in sorted(pairs):
        digest.update(f"{image_sha}:{caption_sha}\n".encode())
    return digest.hexdigest()


def create_snapshot(store: Store, name: str = "") -> tuple[Snapshot, bool]:
    """Freeze every active caption. Returns (snapshot, created); an identical membership is reused.

    A name must be free (a name resolves to one snapshot) and not `latest`, which resolve_snapshot reads as
    "the newest"."""
    if name == "latest":
        raise SnapshotError("the name 'latest' is reserved (it always means the newest snapshot); choose another")
    if _HASH_PREFIX.fullmatch(name):
        raise SnapshotError(f"the snapshot name {name!r} reads as a content hash prefix (8+ hex characters) and "
                            "would hide the snapshot whose hash starts so; choose a name with other characters")
    with store.session() as session:
        members = _membership(session)
        if not members:
            raise SnapshotError("the catalog has no active captions; run `toolkit ingest` first")
        content_hash = membership_hash([(m[3], m[4]) for m in members])
        named = session.scalar(select(Snapshot).where(Snapshot.name == name).limit(1)) if name else None
        if named is not None and named.content_hash != content_hash:
            raise SnapshotError(f"snapshot name {name!r} is already used by snapshot {named.content_hash[:16]}; "
                                "choose another name (list them with `toolkit data snapshots`)")
        existing = session.scalar(select(Snapshot).where(Snapshot.content_hash == content_hash))
        named_now = False
        if existing is not None:
            # One name per snapshot: a nameless one takes the name; another name would be silently dropped.
            if name and existing.name and existing.name != name:
                raise SnapshotError(f"the catalog's content is already snapshot {existing.content_hash[:16]}, "
                                    f"named {existing.name!r}; refer to it by that name or its hash")
            named_now = bool(name) and not existing.name
            if named_now:
                existing.name = name
        else:
            snapshot = _store_snapshot(session, content_hash, name, members)
    if existing is not None:
        if named_now:
            store.audit("snapshot.name", content_hash, {"name": name})
        return existing, False
    store.audit("snapshot.create", content_hash, {"name": name, **snapshot.counts})
    return snapshot, True


def _store_snapshot(session: Session, content_hash: str, name: str,
                    members: list[tuple[int, int, str, str, str]]) -> Snapshot:
    splits: dict[str, int] = {}
    for _, _, split, _, _ in members:
        splits[split] = splits.get(split, 0) + 1
    snapshot = Snapshot(
        content_hash=content_hash,
        name=name,
        actor=current_actor(),
        counts={"captions": len(members), "images": len({m[1] for m in members}), "splits": splits},
    )
    session.add(snapshot)
    session.flush()
    session.execute(
        insert(SnapshotMember),
        [{"snapshot_id": snapshot.id, "caption_id": m[0], "image_id": m[1], "split": m[2]} for m in members],
    )
    return snapshot


def resolve_snapshot(session: Session, ref: str) -> Snapshot:
    """`latest`, a full content hash, a unique hash prefix (≥ 8 hex chars) or a snapshot name."""
    if not ref.strip():
        raise SnapshotError("the snapshot reference is empty; give latest, a content hash (8+ characters) or "
                            "a name (list them with `toolkit data snapshots`)")
    if ref == "latest":
        found = session.scalar(select(Snapshot).order_by(Snapshot.id.desc()).limit(1))
        if found is None:
            raise SnapshotError("no snapshot exists yet; create one with `toolkit data snapshot`")
        return found
    matches = {s.id: s for s in session.scalars(select(Snapshot).where(Snapshot.name == ref))}
    if _HASH_PREFIX.fullmatch(ref):  # also when a name matches: an older name may look like a hash
        matches.update((s.id, s) for s in session.scalars(
            select(Snapshot).where(Snapshot.content_hash.startswith(ref.lower()))))
    if len(matches) == 1:
        return next(iter(matches.values()))
    if not matches:
        hint = ("; a hash prefix needs 8+ characters" if re.fullmatch(r"[0-9a-fA-F]{1,7}", ref) else "")
        raise SnapshotError(f"snapshot {ref!r} does not exist{hint}; list them with `toolkit data snapshots`")
    raise SnapshotError(f"snapshot reference {ref!r} is ambiguous ({len(matches)} matches: a name, hash "
                        "prefixes or both); use the full hash")


def snapshot_summary(session: Session, snapshot: Snapshot) -> dict[str, Any]:
    members = session.scalar(
        select(func.count()).select_from(SnapshotMember).where(SnapshotMember.snapshot_id == snapshot.id)
    )
    return {"id": snapshot.content_hash, "name": snapshot.name, "created_at": snapshot.created_at,
            "actor": snapshot.actor, "members": int(members or 0), **snapshot.counts}
