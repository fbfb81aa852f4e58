"""The bundle manifest and its integrity check. Pure Python (hashlib/json): the torch-free runtime uses it.

Every file in the bundle is listed in manifest.json with its SHA-256; manifest.json's own hash is in
manifest.sha256. A bundle is intact only if both match and no unlisted file is present, so one
changed byte anywhere is refused. (Integrity, not authenticity: sign manifest.sha256 for that.)
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from toolkit.core.errors import Refused
from toolkit.core.hashing import file_sha256

MANIFEST = "manifest.json"
MANIFEST_HASH = "manifest.sha256"
FORMAT_VERSION = 2  # 2: variants are objects {file, approved, ...} instead of file names


class BundleError(Refused):
    """A bundle is missing, incomplete or altered; the message names the file at fault."""


# Sane bounds for untrusted bundle input, checked by `verify_bundle` before anything is allocated from it.
# open_clip's own values, for scale: 48,894 merges (1.4 MB decompressed), context 77, eot 49407, embed 512-1280.
MAX_MANIFEST_BYTES = 1 << 20
MAX_JSON_DEPTH = 32
MAX_INT_DIGITS = 18  # fits an int64; a 100,000-digit integer is not a setting
MAX_MERGES_BYTES = 16 << 20  # decompressed
MAX_MERGE_LINE_CHARS = 1024
MAX_MERGES = 1_000_000
MAX_CONTEXT_LENGTH = 4096
MAX_EMBED_DIM = 65_536
MAX_VOCAB = 2_000_000  # bytes*2 + merges + specials, with room


def _parse_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise ValueError(f"an integer of {len(text)} digits")
    return int(text)


def _refuse_constant(text: str) -> Any:
    raise ValueError(f"{text} is not a number JSON allows")


def _depth(value: Any, limit: int) -> int:
    """Nesting depth of parsed JSON, iteratively (no recursion to overflow), stopping past `limit`."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        deepest = max(deepest, level)
        if deepest > limit:
            return deepest
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        stack.extend((child, level + 1) for child in children)
    return deepest


def load_bounded_json(path: Path, max_bytes: int = MAX_MANIFEST_BYTES) -> Any:
    """JSON from an untrusted file with limits: size, nesting depth, integer digits, no NaN/Infinity."""
    size = path.stat().st_size
    if size > max_bytes:
        raise BundleError(f"{path} is {size} bytes; more than the {max_bytes} a manifest may be")
    raw = path.read_bytes()
    # Depth before parsing: json's recursive parser would overflow the stack on deep nesting.
    depth = running = 0
    in_string = escaped = False
    for byte in raw:
        if in_string:
            escaped, in_string = (False, True) if escaped else (byte == 0x5C, byte != 0x22)
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):
            running += 1
            depth = max(depth, running)
        elif byte in (0x5D, 0x7D):
            running -= 1
    if depth > MAX_JSON_DEPTH:
        raise BundleError(f"{path} nests {depth} levels deep; at most {MAX_JSON_DEPTH} are allowed")
    try:
        return json.loads(raw.decode("utf-8"), parse_int=_parse_int, parse_constant=_refuse_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as err:  # JSONDecodeError is a ValueError
        raise BundleError(f"{path} is not valid JSON within limits: {err}") from err


def check_merges_file(path: Path, count: int) -> None:
    """Stream-decompress the gzip merges file up to the limits: a bomb is refused after at most
    MAX_MERGES_BYTES of output, never read whole; fewer than `count` merge lines is refused too."""
    lines, total = 0, 0
    try:
        with gzip.open(path, "rb") as handle:
            while True:
                line = handle.readline(MAX_MERGE_LINE_CHARS + 1)
                if not line:
                    break
                total += len(line)
                if len(line) > MAX_MERGE_LINE_CHARS and not line.endswith(b"\n"):
                    raise BundleError(f"{path}: line {lines + 1} is longer than {MAX_MERGE_LINE_CHARS} bytes")
                if total > MAX_MERGES_BYTES:
                    raise BundleError(f"{path} decompresses to more than {MAX_MERGES_BYTES} bytes "
                                      "(a decompression bomb, or not a merges file)")
                lines += 1
    except (OSError, EOFError, zlib.error) as err:
        raise BundleError(f"{path} is not a readable gzip file: {err}") from err
    if lines < count + 1:
        raise BundleError(f"{path} holds {max(lines - 1, 0)} merge lines; the manifest says num_merges {count}")


def write_manifest(bundle_dir: Path, manifest: dict[str, Any]) -> Path:
    """Hash every file already in `bundle_dir` into manifest['files'], write manifest.json + its hash."""
    files = sorted(
        p for p in bundle_dir.rglob("*") if p.is_file() and p.name not in (MANIFEST, MANIFEST_HASH)
    )
    manifest = {
        **manifest,
        "format_version": FORMAT_VERSION,
        "files": {p.relative_to(bundle_dir).as_posix(): file_sha256(p) for p in files},
    }
    path = bundle_dir / MANIFEST
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    (bundle_dir / MANIFEST_HASH).write_text(f"{file_sha256(path)}  {MANIFEST}\n", encoding="utf-8")
    return path


def verify_bundle(bundle_dir: Path) -> dict[str, Any]:
    """Return the manifest of an intact bundle; raise BundleError naming every file that is wrong.

    Intact means: manifest.json matches manifest.sha256, every listed file is inside the bundle and matches
    its hash, nothing unlisted or symlinked is there, and the fields the runtime reads have their types,
    with every variant's graph and the tokenizer's merges among the hashed files. A signed manifest.sha256
    therefore covers every byte the runtime loads.
    """
    manifest_path, hash_path = bundle_dir / MANIFEST, bundle_dir / MANIFEST_HASH
    for required in (manifest_path, hash_path):
        if not required.is_file():
            raise BundleError(
                f"{required} is missing; {bundle_dir} is not a complete bundle (re-run `toolkit export`)"
            )
    recorded = hash_path.read_text(encoding="utf-8", errors="replace").split()
    if not recorded or recorded[0] != file_sha256(manifest_path):
        raise BundleError(f"{manifest_path} does not match the hash in {hash_path}: the manifest was altered")
    manifest = load_bounded_json(manifest_path)
    if not isinstance(manifest, dict):
        raise BundleError(f"{manifest_path}: expected a JSON object, got {type(manifest).__name__}")
    if manifest.get("format_version") != FORMAT_VERSION or not isinstance(manifest.get("files"), dict):
        raise BundleError(
            f"{manifest_path}: unsupported bundle format {manifest.get('format_version')!r}; "
            f"this toolkit reads format {FORMAT_VERSION}"
        )
    listed: dict[str, Any] = manifest["files"]
    problems: list[str] = []
    for name, expected in sorted(listed.items()):
        path = bundle_dir / name
        if why := _unsafe_name(name):
            problems.append(f"{manifest_path}: files lists {name!r}, {why}")
        elif path.is_symlink():
            problems.append(f"{path} is a symlink")
        elif not path.is_file():
            problems.append(f"{path} is missing")
        elif file_sha256(path) != expected:
            problems.append(f"{path} was altered (SHA-256 differs from the manifest)")
    present = {p.relative_to(bundle_dir).as_posix() for p in bundle_dir.rglob("*")
               if p.is_file() or p.is_symlink()}
    for extra in sorted(present - set(listed) - {MANIFEST, MANIFEST_HASH}):
        problems.append(f"{bundle_dir / extra} is not listed in the manifest")
    if problems:
        raise BundleError(f"bundle {bundle_dir} refused: " + "; ".join(problems))
    problems = _schema_problems(manifest)
    if problems:
        raise BundleError(f"{manifest_path} refused: " + "; ".join(problems) + " (re-run `toolkit export`)")
    tokenizer = manifest["tokenizer"]
    check_merges_file(bundle_dir / tokenizer["bpe_file"], tokenizer.get("num_merges", _OPEN_CLIP_MERGES))
    return manifest


def _unsafe_name(name: str) -> str | None:
    """Why a listed file name could reach outside the bundle, or None: relative POSIX paths only."""
    if not name or "\\" in name or name.startswith("/") or ":" in name.split("/")[0]:
        return "which is not a relative path inside the bundle"
    if any(part in ("", ".", "..") for part in name.split("/")):
        return "which steps outside the bundle or is not normalised"
    return None


def _int_in(low: int, high: int) -> Callable[[Any], bool]:
    return lambda v: type(v) is int and low <= v <= high


_OPEN_CLIP_MERGES = 49152 - 256 - 2  # the tokenizer's default, when a manifest does not say

# The fields the runtime reads: what each must be (`type(v) is int` keeps booleans out).
_FIELD_CHECKS: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "embed_dim": (f"an integer in 1..{MAX_EMBED_DIM}", _int_in(1, MAX_EMBED_DIM)),
    "context_length": (f"an integer in 2..{MAX_CONTEXT_LENGTH}", _int_in(2, MAX_CONTEXT_LENGTH)),
    "eot_id": (f"a token id in 0..{MAX_VOCAB}", _int_in(0, MAX_VOCAB)),
    "trim_to_eot": ("true or false", lambda v: isinstance(v, bool)),
    "input_name": ("a string", lambda v: isinstance(v, str) and bool(v)),
    "tokenizer": ("an object", lambda v: isinstance(v, dict)),
    "variants": ("an object", lambda v: isinstance(v, dict)),
}


def _schema_problems(manifest: dict[str, Any]) -> list[str]:
    problems = [f"{key} is {manifest.get(key)!r}, expected {want}"
                for key, (want, valid) in _FIELD_CHECKS.items() if not valid(manifest.get(key))]
    hashed = set(manifest["files"])
    tokenizer = manifest.get("tokenizer")
    if isinstance(tokenizer, dict):
        if tokenizer.get("bpe_file") not in hashed:
            problems.append(f"tokenizer.bpe_file {tokenizer.get('bpe_file')!r} is not one of the hashed files")
        merges = tokenizer.get("num_merges", _OPEN_CLIP_MERGES)
        if not _int_in(1, MAX_MERGES)(merges):
            problems.append(f"tokenizer.num_merges is {merges!r}, expected an integer in 1..{MAX_MERGES}")
        length = tokenizer.get("context_length")
        if length is not None and not _int_in(2, MAX_CONTEXT_LENGTH)(length):
            problems.append(f"tokenizer.context_length is {length!r}, expected an integer in 2..{MAX_CONTEXT_LENGTH}")
        elif length is not None and length != manifest.get("context_length"):
            problems.append(f"tokenizer.context_length {length!r} differs from context_length "
                            f"{manifest.get('context_length')!r}")
        if _int_in(1, MAX_MERGES)(merges) and type(manifest.get("eot_id")) is int \
                and manifest["eot_id"] >= 512 + merges + 2:
            problems.append(f"eot_id {manifest['eot_id']} is beyond the vocabulary of {512 + merges + 2} tokens")
    contract = manifest.get("client_contract")
    if isinstance(contract, dict):  # bundles since format 2 with foreign-client files: each must be hashed
        named = [*contract.get("tokenizer_files", []), *manifest.get("hf_layout", [])]
        named += [contract["conformance"]] if "conformance" in contract else []
        problems += [f"client file {name!r} is not one of the hashed files" for name in named if name not in hashed]
    variants = manifest.get("variants")
    if isinstance(variants, dict):
        if not variants:
            problems.append("variants is empty")
        owners: dict[str, str] = {}
        for name, entry in sorted(variants.items()):
            if not isinstance(entry, dict) or entry.get("file") not in hashed:
                problems.append(f"variants.{name}.file is not one of the hashed files")
            elif entry["file"] in owners:  # one graph under two names: one of them is served as the other
                problems.append(f"variants.{name} and variants.{owners[entry['file']]} name the same file")
            else:
                owners[entry["file"]] = name
            if isinstance(entry, dict) and not isinstance(entry.get("approved"), bool):
                problems.append(f"variants.{name}.approved is {entry.get('approved')!r}, expected true or false")
    return problems


def variant_entry(manifest: dict[str, Any], variant: str, bundle_dir: Path) -> dict[str, Any]:
    """The manifest's record of one variant: {"file", "approved", "reasons", ["scores", "drops"]}.
    `verify_bundle` has checked that its file is one of the hashed files."""
    variants: dict[str, Any] = manifest.get("variants", {})
    if variant not in variants:
        raise BundleError(f"{bundle_dir}: no {variant!r} variant; it has {', '.join(variants) or 'none'}")
    entry = variants[variant]
    if not isinstance(entry, dict) or not isinstance(entry.get("file"), str):
        raise BundleError(f"{bundle_dir / MANIFEST}: variants.{variant} has no 'file'; re-run `toolkit export`")
    return entry


def parity_passed(manifest: dict[str, Any]) -> bool:
    """Whether a bundle's fp32 graph passed its export-time parity check (the promotion gate's input).

    Parity is recorded per variant (`manifest["parity"][variant]["passed"]`); fp32 is the one that gates.
    """
    fp32 = manifest.get("parity", {}).get("fp32", {})
    return isinstance(fp32, dict) and fp32.get("passed") is True
