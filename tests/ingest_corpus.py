"""Builders for ingest test corpora: valid rows mixed with every kind of bad row we know of."""

from __future__ import annotations

import io
import json
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image


def write_png(path: Path, size: tuple[int, int], colour: tuple[int, int, int]) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="PNG")
    path.write_bytes(buffer.getvalue())
    return buffer.getvalue()


def png_header_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims huge dimensions (a decompression bomb's calling card)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


@dataclass
class Corpus:
    root: Path
    manifest: Path
    valid_captions: int  # distinct (image, caption) pairs that must be stored
    valid_images: int  # distinct image contents that must be stored
    expected_rejects: dict[str, str] = field(default_factory=dict)  # row ref -> reason


def build_bad_row_corpus(base: Path) -> Corpus:
    """A JSONL manifest: 24 valid rows (2 of them duplicates) interleaved with 23 kinds of bad row."""
    root = base / "images"
    outside = base / "outside"
    write_png(outside / "secret.png", (32, 32), (1, 2, 3))
    lines: list[bytes] = []
    expected: dict[str, str] = {}
    valid_pairs: set[tuple[str, str]] = set()
    valid_images: set[bytes] = set()

    def add(obj: object | bytes, reason: str | None = None) -> None:
        raw = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
        lines.append(raw)
        if reason:
            expected[f"line {len(lines)}"] = reason

    def good(index: int, caption: str, wide: bool = True) -> None:
        name = f"ok/{index}.png"
        data = write_png(root / name, (48, 32) if wide else (32, 48), (index * 9 % 256, 80, 160))
        valid_images.add(data)
        valid_pairs.add((name, caption))
        add({"image": name, "caption": caption})

    bad_rows: list[tuple[object | bytes, str]] = []
    # Path problems.
    bad_rows.append(({"image": "", "caption": "an empty path"}, "image_path_empty"))
    bad_rows.append(({"image": "/etc/hostname", "caption": "absolute path"}, "image_path_absolute"))
    bad_rows.append(({"image": "ok/../../outside/secret.png", "caption": "dot dot"}, "image_path_traversal"))
    root.mkdir(parents=True, exist_ok=True)
    (root / "link.png").symlink_to(outside / "secret.png")
    bad_rows.append(({"image": "link.png", "caption": "symlink out of the root"}, "image_path_symlink_escape"))
    bad_rows.append(({"image": "missing.png", "caption": "no such file"}, "image_missing"))
    (root / "a_folder.png").mkdir(parents=True, exist_ok=True)
    bad_rows.append(({"image": "a_folder.png", "caption": "a directory"}, "image_not_a_file"))
    bad_rows.append(({"image": 42, "caption": "path is a number"}, "image_path_wrong_type"))
    # Image content problems.
    (root / "empty.png").write_bytes(b"")
    bad_rows.append(({"image": "empty.png", "caption": "zero bytes"}, "image_empty_file"))
    (root / "text.png").write_bytes(b"this is not an image at all\n" * 10)
    bad_rows.append(({"image": "text.png", "caption": "not an image"}, "image_unreadable"))
    full = write_png(root / "whole.png", (64, 64), (10, 200, 30))
    (root / "truncated.png").write_bytes(full[: len(full) // 2])
    bad_rows.append(({"image": "truncated.png", "caption": "cut in half"}, "image_truncated"))
    (root / "bomb.png").write_bytes(png_header_claiming(100_000, 100_000))
    bad_rows.append(({"image": "bomb.png", "caption": "huge claimed size"}, "image_decompression_bomb"))
    write_png(root / "tiny.png", (4, 4), (0, 0, 0))
    bad_rows.append(({"image": "tiny.png", "caption": "four pixels"}, "image_too_small"))
    Image.new("RGB", (32, 32)).save(root / "anim.gif", format="GIF")
    bad_rows.append(({"image": "anim.gif", "caption": "a gif"}, "image_unsupported_format"))
    # Caption problems.
    write_png(root / "c.png", (40, 40), (5, 5, 5))
    bad_rows.append(({"image": "c.png", "caption": "   \t  "}, "caption_empty"))
    bad_rows.append(({"image": "c.png", "caption": "... !!! ?"}, "caption_no_words"))
    bad_rows.append(({"image": "c.png", "caption": "word " * 600}, "caption_too_long"))
    bad_rows.append(({"image": "c.png", "caption": 12345}, "caption_wrong_type"))
    bad_rows.append(({"image": "c.png", "caption": "bell\x07 inside"}, "caption_control_chars"))
    bad_rows.append(({"image": "c.png", "sentences": []}, "caption_wrong_type"))
    bad_rows.append(({"image": "c.png", "note": "no caption key"}, "caption_missing"))
    # Row problems.
    bad_rows.append((b'{"image": "c.png", "caption": "unterminated', "row_malformed_json"))
    bad_rows.append((b'["image", "c.png"]', "row_not_object"))
    bad_rows.append(({"img": "c.png", "text": "wrong keys"}, "row_missing_image_key"))
    bad_rows.append((b'{"image": "c.png", "caption": "caf\xe9 latin-1"}', "row_not_utf8"))

    for index in range(24):
        good(index, f"A red cube number {index} left of a blue ball. The ball is shiny.", wide=index % 3 != 0)
        if index < len(bad_rows):
            add(*bad_rows[index])
    # Duplicates: the same caption on the same image, and identical bytes at another path.
    add({"image": "ok/3.png", "caption": "A red cube number 3 left of a blue ball.  The ball is shiny."})
    (root / "copy").mkdir(exist_ok=True)
    (root / "copy" / "3.png").write_bytes((root / "ok" / "3.png").read_bytes())
    add({"image": "copy/3.png", "caption": "A second caption for the copied image."})
    valid_pairs.add(("ok/3.png", "A second caption for the copied image."))
    manifest = base / "manifest.jsonl"
    manifest.write_bytes(b"\n".join(lines) + b"\n")
    return Corpus(root, manifest, len(valid_pairs), len(valid_images), expected)
