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

import hashlib
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from toolkit.ingest.delimited import CsvRecord, csv_records
from toolkit.ingest.rows import SourceError, SourceRow, excerpt
from toolkit.ingest.shards import read_wds

__all__ = ["SourceError", "SourceInfo", "SourceRow", "describe_source", "detect_kind", "read_source"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")
# `caption`, `caption_2`, …; not `caption_source` or `captioner`, which describe the caption.
CAPTION_COLUMN = re.compile(r"caption(_\d+)?")
MANIFEST_KINDS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "coco"}
_BOM = b"\xef\xbb\xbf"
_MAX_JSON_DEPTH = 64
# Any \uD800-\uDFFF escape in JSON text; see _ijson_backend.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


@dataclass(frozen=True)
class SourceInfo:
    kind: str  # csv | tsv | jsonl | coco | folder | wds
    uri: str
    sha256: str


def detect_kind(source: Path) -> str:
    suffix = source.suffix.lower()
    if source.is_dir():
        if suffix in MANIFEST_KINDS:
            raise SourceError(f"{source} is a folder, not a {suffix} file; name the manifest file itself (or "
                              "rename the folder if it is a folder of images)")
        return "wds" if any(source.glob("*.tar")) else "folder"
    kinds = {**MANIFEST_KINDS, ".tar": "wds"}
    if suffix not in kinds:
        raise SourceError(f"{source}: unknown source type {suffix!r}; expected .csv, .tsv, .jsonl, .json "
                          "(COCO captions), .tar (WebDataset) or a folder of images with .txt sidecars")
    return kinds[suffix]


def _hash_files(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode("utf-8", errors="surrogateescape"))
        try:
            with path.open("rb") as handle:
                while block := handle.read(1 << 20):
                    digest.update(block)
        except OSError as err:
            raise SourceError(f"{path} cannot be read ({err.strerror or err}); check its permissions") from err
    return digest.hexdigest()


def describe_source(source: Path) -> SourceInfo:
    """Identify a source and fingerprint its content (rejects are keyed by this fingerprint)."""
    if not source.exists():
        raise SourceError(f"source {source} does not exist")
    kind = detect_kind(source)
    if kind == "folder":
        # A folder's identity is its listing; content is checked per image anyway.
        files = sorted(str(p.relative_to(source)) for p in source.rglob("*") if p.is_file())
        if not any(name.lower().endswith(IMAGE_SUFFIXES) for name in files):
            raise SourceError(f"{source}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder or below; "
                              "expected a folder of images with .txt sidecars, or of .tar shards")
        listing = "\n".join(files)
        sha = hashlib.sha256(f"{source.resolve()}\n{listing}".encode("utf-8", "surrogateescape")).hexdigest()
    elif kind == "wds" and source.is_dir():
        sha = _hash_files(sorted(source.glob("*.tar")))
    else:
        sha = _hash_files([source])
    return SourceInfo(kind=kind, uri=str(source.resolve()), sha256=sha)


def read_source(source: Path, kind: str) -> Iterator[SourceRow]:
    if kind in ("csv", "tsv"):
        return _read_delimited(source, "\t" if kind == "tsv" else ",")
    readers = {"jsonl": _read_jsonl, "coco": _read_coco, "folder": _read_folder, "wds": read_wds}
    return readers[kind](source)


def _read_delimited(path: Path, delimiter: str) -> Iterator[SourceRow]:
    records = csv_records(path, delimiter)
    first = next(records, None)
    if first is None:
        raise SourceError(f"{path}: empty file, expected a header row with an 'image' column")
    if first.fields is None:
        raise SourceError(f"{path}: the header row is not valid CSV ({first.error})")
    header = [h.strip() for h in first.fields]
    if "image" not in header:
        raise SourceError(f"{path}: header {header} has no 'image' column")
    repeated = [name for name in ("image", "sentences") if header.count(name) > 1]
    if repeated:  # which of two 'image' columns is meant cannot be guessed
        raise SourceError(f"{path}: header {header} repeats {repeated}; each column may appear once")
    caption_columns = [i for i, h in enumerate(header) if CAPTION_COLUMN.fullmatch(h)]
    sentences_column = header.index("sentences") if "sentences" in header else None
    if not caption_columns and sentences_column is None:
        raise SourceError(f"{path}: header {header} has no 'caption' (or caption_2, …) or 'sentences' column")
    image_column = header.index("image")
    for record in records:
        row_ref = f"line {record.line}"
        values = record.fields
        if values is None:
            yield SourceRow(row_ref, excerpt(record.first_line.rstrip("\r\n")), problem=_csv_problem(record))
            continue
        raw = excerpt(delimiter.join(values))
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
            except (json.JSONDecodeError, RecursionError) as err:
                message = err.msg if isinstance(err, json.JSONDecodeError) else "nested too deeply"
                yield SourceRow(row_ref, raw, problem=(
                    "row_malformed_json", f"'sentences' column is not a JSON list: {message}"))
                continue
        image_path = _undo_surrogates(values[image_column])
        if isinstance(image_path, bytes):
            yield SourceRow(row_ref, raw, problem=("image_path_not_utf8", "the image path is not valid UTF-8"))
            continue
        yield SourceRow(row_ref, raw, image_path=image_path, captions=captions)


def _csv_problem(record: CsvRecord) -> tuple[str, str]:
    if record.lines > 1 or record.error == "unexpected end of data":
        where = "the end of the file" if record.error == "unexpected end of data" else \
            f"line {record.line + record.lines - 1} ({record.error})"
        return ("row_unterminated_quote",
                f"the quoted field opened on this line is not closed properly before {where}; the lines after "
                "it were read as rows of their own")
    return "row_malformed_csv", f"not valid CSV: {record.error}; check the quoting"


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
    any_line = False
    with path.open("rb") as handle:
        for number, line_bytes in enumerate(handle, start=1):
            row_ref = f"line {number}"
            if not line_bytes.strip():
                continue
            any_line = True
            try:
                line = line_bytes.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as err:
                yield SourceRow(row_ref, excerpt(line_bytes.decode("utf-8", "replace")), problem=(
                    "row_not_utf8", f"line is not valid UTF-8 (byte offset {err.start}); re-encode as UTF-8"))
                continue
            raw = excerpt(line.strip())
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as err:
                yield SourceRow(row_ref, raw, problem=("row_malformed_json", f"not valid JSON: {err.msg}"))
                continue
            except RecursionError:
                yield SourceRow(row_ref, raw, problem=("row_malformed_json", "not usable JSON: nested too deeply"))
                continue
            if not isinstance(obj, dict):
                yield SourceRow(row_ref, raw, problem=(
                    "row_not_object", f"expected a JSON object, got {type(obj).__name__}"))
                continue
            yield _row_from_object(row_ref, raw, obj)
    if not any_line:  # as an empty CSV: an empty manifest is a failed export or download, not "no news"
        raise SourceError(f"{path}: empty file, expected one JSON object per line with 'image' and 'caption'")


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
    if not captions and obj.get("captions") == []:
        return SourceRow(row_ref, raw, problem=("caption_missing", "'captions' is an empty list; give at least one"))
    if not captions:
        return SourceRow(row_ref, raw, problem=(
            "caption_missing", f"no 'caption', 'captions' or 'sentences' key (keys present: {sorted(obj)})"))
    return SourceRow(row_ref, raw, image_path=image, captions=captions)


def _read_coco(path: Path) -> Iterator[SourceRow]:
    import ijson

    parser = _ijson_backend(path)
    file_names: dict[object, str] = {}
    conflicts: dict[object, set[str]] = {}  # ids listed with different file names
    try:
        _check_depth(path, parser)
        # Two streamed passes instead of loading a multi-GB JSON document: images first, then annotations.
        with _open_json(path) as handle:
            for index, image in enumerate(parser.items(handle, "images.item", use_float=True)):
                if not isinstance(image, dict) or "id" not in image or not isinstance(image.get("file_name"), str):
                    continue  # annotations that point at it are rejected as image_id_unknown
                if not _usable_coco_id(image["id"]):
                    raw = excerpt(json.dumps(image, default=str, ensure_ascii=False))
                    yield SourceRow(f"images[{index}]", raw, problem=(
                        "image_id_invalid", f"'id' must be an integer or a string, got {_json_type(image['id'])}"))
                    continue
                known = file_names.setdefault(image["id"], image["file_name"])
                if known != image["file_name"]:
                    conflicts.setdefault(image["id"], {known}).add(image["file_name"])
        if not file_names:
            raise SourceError(f"{path}: no usable 'images' entries with 'id' and 'file_name' "
                              "(is this a COCO captions file?)")
        with _open_json(path) as handle:
            for index, ann in enumerate(parser.items(handle, "annotations.item", use_float=True)):
                yield _coco_row(f"annotations[{index}]", ann, file_names, conflicts)
    except (ijson.JSONError, UnicodeDecodeError) as err:
        raise _coco_error(path, err) from err


def _coco_row(row_ref: str, ann: object, file_names: dict[object, str],
              conflicts: dict[object, set[str]]) -> SourceRow:
    raw = excerpt(json.dumps(ann, default=str, ensure_ascii=False))
    if not isinstance(ann, dict) or "image_id" not in ann:
        return SourceRow(row_ref, raw, problem=("row_missing_image_key", "annotation has no 'image_id'"))
    image_id = ann["image_id"]
    if not _usable_coco_id(image_id):
        return SourceRow(row_ref, raw, problem=(
            "image_id_invalid", f"'image_id' must be an integer or a string, got {_json_type(image_id)}"))
    if image_id in conflicts:
        names = ", ".join(repr(name) for name in sorted(conflicts[image_id])[:5])
        return SourceRow(row_ref, raw, problem=(
            "image_id_ambiguous", f"image_id {image_id!r} is listed under 'images' with different file names "
                                  f"({names}); fix the 'images' list so each id names one file"))
    if image_id not in file_names:
        return SourceRow(row_ref, raw, problem=(
            "image_id_unknown", f"image_id {image_id!r} is not listed under 'images'"))
    if "caption" not in ann:
        return SourceRow(row_ref, raw, problem=("caption_missing", "annotation has no 'caption'"))
    return SourceRow(row_ref, raw, image_path=file_names[image_id], captions=[ann["caption"]])


def _usable_coco_id(value: object) -> bool:
    # Lists and objects cannot key a lookup; true/false would pass for the ids 1 and 0.
    return isinstance(value, (int, str, float)) and not isinstance(value, bool)


def _json_type(value: object) -> str:
    names = {list: "a list", dict: "an object", bool: "a boolean", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _open_json(path: Path) -> BinaryIO:
    """The file, positioned after a UTF-8 byte order mark if it has one (as the CSV and JSONL readers allow)."""
    handle = path.open("rb")
    if handle.read(len(_BOM)) != _BOM:
        handle.seek(0)
    return handle


def _ijson_backend(path: Path) -> Any:
    """ijson's C parser silently turns a lone surrogate escape ("\\ud800") into '?', changing the caption or
    path; a file with any surrogate escape is parsed by the pure-Python backend, which keeps it for
    validation to reject."""
    import ijson

    with path.open("rb") as handle:
        tail = b""
        while block := handle.read(1 << 20):
            if _SURROGATE_ESCAPE.search(tail + block):
                return ijson.get_backend("python")
            tail = block[-5:]
    return ijson


def _check_depth(path: Path, parser: Any) -> None:
    """ijson's memory grows with the square of the nesting depth (100,000 '[' take tens of GB), so a
    document nested deeper than any COCO file is refused before it is parsed for items."""
    depth = 0
    with _open_json(path) as handle:
        for event, _ in parser.basic_parse(handle):
            if event in ("start_map", "start_array"):
                depth += 1
                if depth > _MAX_JSON_DEPTH:
                    raise SourceError(f"{path}: JSON nested more than {_MAX_JSON_DEPTH} levels deep; a COCO "
                                      "captions file needs 4 (is the file damaged?)")
            elif event in ("end_map", "end_array"):
                depth -= 1


def _coco_error(path: Path, err: Exception) -> SourceError:
    if isinstance(err, UnicodeDecodeError) or "UTF8" in str(err):
        return SourceError(f"{path}: not valid UTF-8 text; re-encode the COCO file as UTF-8")
    message = err.args[0] if err.args else err
    text = message.decode("utf-8", errors="replace") if isinstance(message, bytes) else str(message)
    summary = next((line.strip() for line in text.splitlines() if line.strip()), "")[:200]  # not yajl's pointer
    return SourceError(f"{path}: not a valid COCO captions JSON document ({summary})")


def _read_folder(root: Path) -> Iterator[SourceRow]:
    resolved_root = root.resolve()
    unlisted: list[OSError] = []
    # os.walk skips a folder it cannot list unless told; each one becomes a reject instead.
    for directory, subdirs, files in os.walk(root, onerror=unlisted.append):
        yield from _unlisted_folders(root, unlisted)
        subdirs.sort()
        for name in sorted(files):
            if name.lower().endswith(IMAGE_SUFFIXES):
                yield _folder_row(root, resolved_root, Path(directory, name))
    yield from _unlisted_folders(root, unlisted)


def _folder_row(root: Path, resolved_root: Path, image: Path) -> SourceRow:
    relative = str(image.relative_to(root))
    sidecar = image.with_suffix(".txt")
    if not sidecar.is_file():
        return SourceRow(relative, relative, problem=(
            "caption_missing", f"no sidecar caption file {sidecar.name} next to the image"))
    # A sidecar is read like an image: never from outside the folder, whatever a symlink says.
    target = Path(os.path.realpath(sidecar))
    if not target.is_relative_to(resolved_root):
        return SourceRow(relative, relative, problem=(
            "caption_path_symlink_escape",
            f"sidecar {sidecar.name!r} resolves through a symlink to {str(target)!r}, outside the source folder"))
    try:
        caption = target.read_bytes()
    except OSError as err:
        return SourceRow(relative, relative, problem=(
            "caption_unreadable", f"sidecar {sidecar.name!r} cannot be read ({err.strerror or err})"))
    return SourceRow(relative, relative, image_path=relative, captions=[caption])


def _unlisted_folders(root: Path, errors: list[OSError]) -> Iterator[SourceRow]:
    for err in errors:
        folder = Path(err.filename) if err.filename else root
        if folder == root:
            raise SourceError(f"{root}: cannot list the folder ({err.strerror or err}); check its permissions")
        relative = str(folder.relative_to(root))
        yield SourceRow(relative, relative, problem=(
            "folder_unreadable", f"cannot list folder {relative!r} ({err.strerror or err}); the images in it "
                                 "were not read"))
    errors.clear()
