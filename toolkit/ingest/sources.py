"""Streaming readers for every supported source. Each yields `SourceRow`s one at a time, so memory
stays flat on manifests of millions of rows. Readers never judge content: a row that cannot even be
parsed is yielded with `problem` set, and validation decides everything else.

Supported sources:
- CSV / TSV with a header: column `image`, caption columns `caption`, `caption_2`, … (each one caption),
  or `sentences` holding a JSON list of sentences (one caption).
- JSONL: objects with `image` and one of `caption` (string), `captions` (list of strings) or
  `sentences` (list of strings forming one caption).
- COCO captions JSON: `images` [{id, file_name}] and `annotations` [{image_id, caption}].
- A folder of images with sidecar `.txt` captions (same stem).
- WebDataset tar shards (`.tar` file or a folder of them): members `<key>.jpg|.jpeg|.png|.webp` + `<key>.txt`.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
CAPTION_COLUMN_PREFIX = "caption"


class SourceError(ValueError):
    """The source as a whole cannot be read (missing file, unknown format, bad header)."""


@dataclass
class SourceRow:
    """One row as read. `captions` holds raw caption values: str, bytes (undecoded) or anything JSON gave.

    Exactly one of `image_path` (relative to the images root, as written in the source) and
    `image_bytes` (WebDataset members) is set, unless `problem` says the row is unreadable.
    """

    row_ref: str
    raw: str
    image_path: str | None = None
    image_bytes: bytes | None = None
    captions: list[object] = field(default_factory=list)
    problem: tuple[str, str] | None = None  # (reason, detail) for rows that cannot be parsed


@dataclass(frozen=True)
class SourceInfo:
    kind: str  # csv | tsv | jsonl | coco | folder | wds
    uri: str
    sha256: str


def detect_kind(source: Path) -> str:
    if source.is_dir():
        return "wds" if any(source.glob("*.tar")) else "folder"
    suffix = source.suffix.lower()
    kinds = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "coco",
             ".tar": "wds"}
    if suffix not in kinds:
        raise SourceError(f"{source}: unknown source type {suffix!r}; expected .csv, .tsv, .jsonl, .json "
                          "(COCO captions), .tar (WebDataset) or a folder of images with .txt sidecars")
    return kinds[suffix]


def _hash_files(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode())
        with path.open("rb") as handle:
            while block := handle.read(1 << 20):
                digest.update(block)
    return digest.hexdigest()


def describe_source(source: Path) -> SourceInfo:
    """Identify a source and fingerprint its content (rejects are keyed by this fingerprint)."""
    if not source.exists():
        raise SourceError(f"source {source} does not exist")
    kind = detect_kind(source)
    if kind == "folder":
        # A folder's identity is its listing; content is checked per image anyway.
        listing = "\n".join(sorted(str(p.relative_to(source)) for p in source.rglob("*") if p.is_file()))
        sha = hashlib.sha256(f"{source.resolve()}\n{listing}".encode()).hexdigest()
    elif kind == "wds" and source.is_dir():
        sha = _hash_files(sorted(source.glob("*.tar")))
    else:
        sha = _hash_files([source])
    return SourceInfo(kind=kind, uri=str(source.resolve()), sha256=sha)


def read_source(source: Path, kind: str) -> Iterator[SourceRow]:
    if kind in ("csv", "tsv"):
        return _read_delimited(source, "\t" if kind == "tsv" else ",")
    readers = {"jsonl": _read_jsonl, "coco": _read_coco, "folder": _read_folder, "wds": _read_wds}
    return readers[kind](source)


def _excerpt(text: str, limit: int = 300) -> str:
    """A printable excerpt of a raw row for the rejects table (undecodable bytes shown as U+FFFD)."""
    text = text.encode("utf-8", errors="surrogateescape").decode("utf-8", errors="replace")
    return text if len(text) <= limit else text[:limit] + "…"


def _read_delimited(path: Path, delimiter: str) -> Iterator[SourceRow]:
    # surrogateescape keeps undecodable bytes so the one bad row (not the whole file) is rejected.
    with path.open("r", encoding="utf-8-sig", errors="surrogateescape", newline="") as handle:
        reader = csv.reader(handle, delimiter=delimiter)
        header = next(reader, None)
        if header is None:
            raise SourceError(f"{path}: empty file, expected a header row with an 'image' column")
        header = [h.strip() for h in header]
        if "image" not in header:
            raise SourceError(f"{path}: header {header} has no 'image' column")
        caption_columns = [i for i, h in enumerate(header) if h.startswith(CAPTION_COLUMN_PREFIX)]
        sentences_column = header.index("sentences") if "sentences" in header else None
        if not caption_columns and sentences_column is None:
            raise SourceError(f"{path}: header {header} has no 'caption' (or caption_2, …) or 'sentences' "
                              "column")
        image_column = header.index("image")
        for values in reader:
            row_ref = f"line {reader.line_num}"
            raw = _excerpt(delimiter.join(values))
            if not any(v.strip() for v in values):
                continue  # blank line
            if len(values) != len(header):
                yield SourceRow(row_ref, raw, problem=(
                    "row_wrong_field_count",
                    f"{len(values)} fields where the header has {len(header)}; check quoting and delimiters"))
                continue
            captions: list[object] = [_undo_surrogates(values[i]) for i in caption_columns if values[i] != ""]
            if sentences_column is not None and values[sentences_column] != "":
                try:
                    captions.append(json.loads(values[sentences_column]))
                except json.JSONDecodeError as err:
                    yield SourceRow(row_ref, raw, problem=(
                        "row_malformed_json", f"'sentences' column is not a JSON list: {err.msg}"))
                    continue
            image_path = _undo_surrogates(values[image_column])
            if isinstance(image_path, bytes):
                yield SourceRow(row_ref, raw, problem=("image_path_not_utf8", "the image path is not valid UTF-8"))
                continue
            yield SourceRow(row_ref, raw, image_path=image_path, captions=captions)


def _undo_surrogates(value: str) -> str | bytes:
    """Text that was not valid UTF-8 goes back to bytes, so validation rejects it by name."""
    try:
        value.encode("utf-8")
        return value
    except UnicodeEncodeError:
        return value.encode("utf-8", errors="surrogateescape")


def _captions_from_object(obj: dict[str, object]) -> list[object]:
    captions: list[object] = []
    if "caption" in obj:
        captions.append(obj["caption"])
    if "captions" in obj:
        value = obj["captions"]
        captions.extend(value if isinstance(value, list) else [value])
    if "sentences" in obj:
        captions.append(obj["sentences"])
    return captions


def _read_jsonl(path: Path) -> Iterator[SourceRow]:
    with path.open("rb") as handle:
        for number, line_bytes in enumerate(handle, start=1):
            row_ref = f"line {number}"
            if not line_bytes.strip():
                continue
            try:
                line = line_bytes.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as err:
                yield SourceRow(row_ref, _excerpt(line_bytes.decode("utf-8", "replace")), problem=(
                    "row_not_utf8", f"line is not valid UTF-8 (byte offset {err.start}); re-encode as UTF-8"))
                continue
            raw = _excerpt(line.strip())
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                yield SourceRow(row_ref, raw, problem=("row_malformed_json", f"not valid JSON: {err.msg}"))
                continue
            if not isinstance(obj, dict):
                yield SourceRow(row_ref, raw, problem=(
                    "row_not_object", f"expected a JSON object, got {type(obj).__name__}"))
                continue
            yield _row_from_object(row_ref, raw, obj)


def _row_from_object(row_ref: str, raw: str, obj: dict[str, object]) -> SourceRow:
    if "image" not in obj:
        return SourceRow(row_ref, raw, problem=(
            "row_missing_image_key", f"no 'image' key (keys present: {sorted(obj)}); "
                                     "each row needs 'image' and 'caption'/'captions'/'sentences'"))
    image = obj["image"]
    if not isinstance(image, str):
        return SourceRow(row_ref, raw, problem=(
            "image_path_wrong_type", f"'image' must be a string path, got {type(image).__name__}"))
    captions = _captions_from_object(obj)
    if not captions:
        return SourceRow(row_ref, raw, problem=(
            "caption_missing", f"no 'caption', 'captions' or 'sentences' key (keys present: {sorted(obj)})"))
    return SourceRow(row_ref, raw, image_path=image, captions=captions)


def _read_coco(path: Path) -> Iterator[SourceRow]:
    import ijson  # streams the two arrays instead of loading a multi-GB JSON document

    file_names: dict[object, str] = {}
    try:
        with path.open("rb") as handle:
            for image in ijson.items(handle, "images.item"):
                if isinstance(image, dict) and "id" in image and isinstance(image.get("file_name"), str):
                    file_names[image["id"]] = image["file_name"]
        if not file_names:
            raise SourceError(f"{path}: no usable 'images' entries with 'id' and 'file_name' "
                              "(is this a COCO captions file?)")
        with path.open("rb") as handle:
            for index, ann in enumerate(ijson.items(handle, "annotations.item")):
                row_ref = f"annotations[{index}]"
                raw = _excerpt(json.dumps(ann, default=str, ensure_ascii=False))
                if not isinstance(ann, dict) or "image_id" not in ann:
                    yield SourceRow(row_ref, raw, problem=("row_missing_image_key", "annotation has no 'image_id'"))
                    continue
                if ann["image_id"] not in file_names:
                    yield SourceRow(row_ref, raw, problem=(
                        "image_id_unknown", f"image_id {ann['image_id']!r} is not listed under 'images'"))
                    continue
                if "caption" not in ann:
                    yield SourceRow(row_ref, raw, problem=("caption_missing", "annotation has no 'caption'"))
                    continue
                yield SourceRow(row_ref, raw, image_path=file_names[ann["image_id"]], captions=[ann["caption"]])
    except ijson.JSONError as err:
        raise SourceError(f"{path}: not a valid COCO captions JSON document: {err}") from err


def _read_folder(root: Path) -> Iterator[SourceRow]:
    for directory, subdirs, files in os.walk(root):
        subdirs.sort()
        for name in sorted(files):
            if not name.lower().endswith(IMAGE_SUFFIXES):
                continue
            image = Path(directory, name)
            relative = str(image.relative_to(root))
            sidecar = image.with_suffix(".txt")
            if not sidecar.is_file():
                yield SourceRow(relative, relative, problem=(
                    "caption_missing", f"no sidecar caption file {sidecar.name} next to the image"))
                continue
            yield SourceRow(relative, relative, image_path=relative, captions=[sidecar.read_bytes()])


def _read_wds(source: Path) -> Iterator[SourceRow]:
    shards = sorted(source.glob("*.tar")) if source.is_dir() else [source]
    for shard in shards:
        try:
            yield from _read_shard(shard)
        except tarfile.TarError as err:
            yield SourceRow(f"{shard.name}", shard.name, problem=(
                "shard_corrupt", f"tar shard is corrupt or truncated: {err}; rows before the damage were read"))


def _read_shard(shard: Path) -> Iterator[SourceRow]:
    # WebDataset keeps a sample's members adjacent: group consecutive members by key.
    current_key: str | None = None
    members: dict[str, bytes] = {}
    with tarfile.open(shard, mode="r|*") as tar:
        for member in tar:
            if not member.isfile():
                continue
            base = os.path.basename(member.name)
            key_part, _, extension = base.partition(".")
            key = f"{os.path.dirname(member.name)}/{key_part}".lstrip("/")
            if key != current_key and current_key is not None:
                yield _wds_row(shard, current_key, members)
                members = {}
            current_key = key
            handle = tar.extractfile(member)
            members[extension.lower()] = handle.read() if handle else b""
        if current_key is not None:
            yield _wds_row(shard, current_key, members)


def _wds_row(shard: Path, key: str, members: dict[str, bytes]) -> SourceRow:
    row_ref = f"{shard.name}:{key}"
    image_ext = next((ext for ext in ("jpg", "jpeg", "png", "webp") if ext in members), None)
    if image_ext is None:
        return SourceRow(row_ref, row_ref, problem=(
            "image_missing", f"sample has no .jpg/.jpeg/.png/.webp member (members: {sorted(members)})"))
    if "txt" not in members:
        return SourceRow(row_ref, row_ref, problem=("caption_missing", "sample has no .txt member"))
    return SourceRow(row_ref, row_ref, image_bytes=members[image_ext], captions=[members["txt"]])
