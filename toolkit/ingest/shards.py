"""WebDataset tar shards (a `.tar` file or a folder of them): members `<key>.jpg|.jpeg|.png|.webp` + `<key>.txt`.

A damaged shard keeps the samples before the damage and adds one `shard_corrupt` row: tarfile in stream mode
stops without a word at a header cut short, so the end-of-archive block and the end of a compressed stream
are checked here.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
import tarfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import IO, BinaryIO

from toolkit.ingest.rows import SourceRow


def read_wds(source: Path) -> Iterator[SourceRow]:
    shards = sorted(source.glob("*.tar")) if source.is_dir() else [source]
    for shard in shards:
        yield from _read_shard(shard)


class _Shard(tarfile.TarFile):
    """Notes whether reading stopped at the end-of-archive block: in stream mode tarfile stops just as
    quietly at a header that was cut short, which would drop the rest of a truncated shard unseen."""

    reached_end = False


class _ShardMember(tarfile.TarInfo):
    @classmethod
    def fromtarfile(cls, archive: tarfile.TarFile) -> _ShardMember:
        try:
            return super().fromtarfile(archive)
        except tarfile.EOFHeaderError:  # type: ignore[attr-defined]  # (not in typeshed) an all-zero block
            if isinstance(archive, _Shard):
                archive.reached_end = True
            raise


_Shard.tarinfo = _ShardMember


def _decompressed(handle: BinaryIO) -> IO[bytes] | gzip.GzipFile:
    """These readers raise EOFError on a cut stream, where tarfile's own decompression stops quietly."""
    magic = handle.read(6)
    handle.seek(0)
    if magic.startswith(b"\x1f\x8b"):
        return gzip.GzipFile(fileobj=handle)
    if magic.startswith(b"BZh"):
        return bz2.BZ2File(handle)
    if magic.startswith(b"\xfd7zXZ\x00"):
        return lzma.LZMAFile(handle)
    return handle


def _read_shard(shard: Path) -> Iterator[SourceRow]:
    """A shard's samples; one that ends early (cut header, no end-of-archive block, incomplete compressed
    stream) or is corrupt also yields a `shard_corrupt` row naming the last member read whole."""
    # WebDataset keeps a sample's members adjacent: group consecutive members by key.
    key: str | None = None  # the sample being gathered
    members: dict[str, bytes] = {}
    # A member whose key and extension were already read starts a new sample of that key (numbered from 2),
    # so a repeated key keeps both captions instead of the later one overwriting the earlier.
    occurrence = 1
    last_member: str | None = None
    damage: str | None = None
    try:
        with shard.open("rb") as handle, _decompressed(handle) as stream:
            # Small reads from a compressed stream: the read that meets a cut loses what it had gathered.
            bufsize = tarfile.RECORDSIZE if stream is handle else tarfile.BLOCKSIZE
            with _Shard.open(fileobj=stream, mode="r|", bufsize=bufsize) as tar:
                for member in tar:
                    if not member.isfile():
                        continue
                    base = os.path.basename(member.name)
                    key_part, _, extension = base.partition(".")
                    member_key = f"{os.path.dirname(member.name)}/{key_part}".lstrip("/")
                    repeated = member_key == key and extension.lower() in members
                    if (member_key != key or repeated) and key is not None:
                        yield _wds_row(shard, key, members, occurrence=occurrence)
                        occurrence = occurrence + 1 if repeated else 1
                        key, members = None, {}
                    content = tar.extractfile(member)
                    members[extension.lower()] = content.read() if content else b""
                    key, last_member = member_key, member.name
                reached_end = isinstance(tar, _Shard) and tar.reached_end
            while stream.read(1 << 20):
                pass  # a compressed shard must also end where its stream says it ends (EOFError if cut)
        if not reached_end:
            damage = "it ends before the end-of-archive block"
    except (tarfile.TarError, EOFError, OSError, zlib.error, lzma.LZMAError) as err:
        damage = f"{type(err).__name__}: {err}"
    if key is not None:
        yield _wds_row(shard, key, members, cut_short=damage is not None, occurrence=occurrence)
    if damage is not None:
        after = f"after member {last_member!r}" if last_member else "before its first member"
        yield SourceRow(shard.name, shard.name, problem=(
            "shard_corrupt", f"{shard.name} is truncated or corrupt {after} ({damage}); the samples before "
                             "the damage were read, re-create or re-download the shard for the rest"))


def _wds_row(shard: Path, key: str, members: dict[str, bytes], cut_short: bool = False,
             occurrence: int = 1) -> SourceRow:
    # Rejects are keyed by row reference: a repeated key needs its own.
    row_ref = f"{shard.name}:{key}" + (f"#{occurrence}" if occurrence > 1 else "")
    image_ext = next((ext for ext in ("jpg", "jpeg", "png", "webp") if ext in members), None)
    if cut_short and (image_ext is None or "txt" not in members):
        return SourceRow(row_ref, row_ref, problem=(
            "shard_corrupt", f"the sample was cut short by the damage in {shard.name} (members read: "
                             f"{sorted(members)})"))
    if occurrence > 1 and (image_ext is None or "txt" not in members):
        return SourceRow(row_ref, row_ref, problem=(
            "duplicate_key", f"key {key!r} repeats a member of the sample before it in {shard.name} "
                             f"(members of this repeat: {sorted(members)}); give each sample its own key"))
    if image_ext is None:
        return SourceRow(row_ref, row_ref, problem=(
            "image_missing", f"sample has no .jpg/.jpeg/.png/.webp member (members: {sorted(members)})"))
    if "txt" not in members:
        return SourceRow(row_ref, row_ref, problem=("caption_missing", "sample has no .txt member"))
    return SourceRow(row_ref, row_ref, image_bytes=members[image_ext], captions=[members["txt"]])
