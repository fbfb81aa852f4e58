"""The bundle manifest and its integrity check. Pure Python (hashlib/json): the torch-free runtime uses it.

Every file in the bundle is listed in manifest.json with its SHA-256; manifest.json's own hash is in
manifest.sha256. A bundle is intact only if both match and no unlisted file is present, so one
changed byte anywhere is refused. (Integrity, not authenticity: sign manifest.sha256 for that.)
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

MANIFEST = "manifest.json"
MANIFEST_HASH = "manifest.sha256"
FORMAT_VERSION = 2  # 2: variants are objects {file, approved, ...} instead of file names


class BundleError(RuntimeError):
    """A bundle is missing, incomplete or altered; the message names the file at fault."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(bundle_dir: Path, manifest: dict[str, Any]) -> Path:
    """Hash every file already in `bundle_dir` into manifest['files'], write manifest.json + its hash."""
    files = sorted(
        p for p in bundle_dir.rglob("*") if p.is_file() and p.name not in (MANIFEST, MANIFEST_HASH)
    )
    manifest = {
        **manifest,
        "format_version": FORMAT_VERSION,
        "files": {p.relative_to(bundle_dir).as_posix(): sha256_file(p) for p in files},
    }
    path = bundle_dir / MANIFEST
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    (bundle_dir / MANIFEST_HASH).write_text(f"{sha256_file(path)}  {MANIFEST}\n", encoding="utf-8")
    return path


def verify_bundle(bundle_dir: Path) -> dict[str, Any]:
    """Return the manifest of an intact bundle; raise BundleError naming every file that is wrong."""
    manifest_path, hash_path = bundle_dir / MANIFEST, bundle_dir / MANIFEST_HASH
    for required in (manifest_path, hash_path):
        if not required.is_file():
            raise BundleError(
                f"{required} is missing; {bundle_dir} is not a complete bundle (re-run `toolkit export`)"
            )
    recorded = hash_path.read_text(encoding="utf-8", errors="replace").split()
    if not recorded or recorded[0] != sha256_file(manifest_path):
        raise BundleError(f"{manifest_path} does not match the hash in {hash_path}: the manifest was altered")
    try:
        manifest: dict[str, Any] = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise BundleError(f"{manifest_path} is not valid JSON: {err}") from err
    if manifest.get("format_version") != FORMAT_VERSION or not isinstance(manifest.get("files"), dict):
        raise BundleError(
            f"{manifest_path}: unsupported bundle format {manifest.get('format_version')!r}; "
            f"this toolkit reads format {FORMAT_VERSION}"
        )
    listed: dict[str, str] = manifest["files"]
    problems: list[str] = []
    for name, expected in sorted(listed.items()):
        path = bundle_dir / name
        if not path.is_file():
            problems.append(f"{path} is missing")
        elif sha256_file(path) != expected:
            problems.append(f"{path} was altered (SHA-256 differs from the manifest)")
    present = {p.relative_to(bundle_dir).as_posix() for p in bundle_dir.rglob("*") if p.is_file()}
    for extra in sorted(present - set(listed) - {MANIFEST, MANIFEST_HASH}):
        problems.append(f"{bundle_dir / extra} is not listed in the manifest")
    if problems:
        raise BundleError(f"bundle {bundle_dir} refused: " + "; ".join(problems))
    return manifest


def variant_entry(manifest: dict[str, Any], variant: str, bundle_dir: Path) -> dict[str, Any]:
    """The manifest's record of one variant: {"file", "approved", "reasons", ["scores", "drops"]}."""
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
