"""Helpers shared by the tests: the one module they import from (test modules never import each other).

Paths, `run_toolkit` (the command line in this process), tiny models built at test time, catalogs built
through the ORM, ingest corpora with every kind of bad row, benchmark folders in the public formats,
training helpers, and a fault-injection proxy for real servers. Nothing here is downloaded.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import io
import json
import os
import re
import struct
import subprocess
import sys
import threading
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import pytest
import torch
from click.testing import CliRunner, Result
from PIL import Image as PILImage
from sqlalchemy import func, select

from toolkit.catalog.db import Store, open_store
from toolkit.catalog.models import Caption, Image, IngestBatch, Reject, Sentence
from toolkit.catalog.snapshot import create_snapshot
from toolkit.core.config import IngestConfig
from toolkit.eval.benchmarks import SUGARCREPE_PP_SUBSETS, SUGARCREPE_SUBSETS
from toolkit.eval.evaluate import Failure
from toolkit.ingest import ingest_source, load_tagger
from toolkit.negatives.generators import TaggedSentence
from toolkit.train.recipe import TrainConfig

# --- Paths ---

REPO = Path(__file__).resolve().parents[1]
SUGARCREPE_SUBSET = REPO / "tests" / "fixtures" / "sugarcrepe" / "subset.json"
TINY_TRAIN_SCRIPT = REPO / "tests" / "train" / "tiny_run.py"


# --- The command line ---

def run_toolkit(args: Sequence[object], **invoke: Any) -> Result:
    """`toolkit ARGS` in this process through `toolkit.cli.main()`, the one place where errors become exit
    codes: a ToolkitError gives its code and one line on stderr; any other exception escapes main() and
    the result holds exit code 1 and that exception (`result.exc_info` is its traceback)."""
    from toolkit.cli import main

    class _Main:  # what CliRunner.invoke calls: `main(args=..., prog_name=...)`
        name = "toolkit"

        def main(self, args: Sequence[str], prog_name: str, **extra: Any) -> None:
            main(list(args))

    return CliRunner().invoke(_Main(), [str(arg) for arg in args], **invoke)  # type: ignore[arg-type]


def toolkit_env(workspace: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "TOOLKIT_WORKSPACE": str(workspace)}


# --- Tiny models built at test time ---

# A CLIP small enough to train in seconds on a CPU: 32 px images, 2 layers per tower.
TINY_OPEN_CLIP_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}


BOS = "<|startoftext|>"


EOS = "<|endoftext|>"


TINY_IMAGE_SIZE = 32


TINY_CONTEXT_LENGTH = 32


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable character table."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
        range(ord("®"), ord("ÿ") + 1)
    )
    chars = list(printable)
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in chars), strict=True))


def write_tiny_clip_tokenizer_files(folder: Path, num_merges: int = 2000) -> int:
    """Write vocab.json and merges.txt for a cut-down CLIP BPE; returns the vocabulary size."""
    import open_clip

    bpe_path = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    with gzip.open(bpe_path, "rt", encoding="utf-8") as handle:
        lines = handle.read().split("\n")
    merges = [line for line in lines[1 : 1 + num_merges] if line.strip()]
    symbols = list(_bytes_to_unicode().values())
    vocab_list = symbols + [s + "</w>" for s in symbols] + ["".join(m.split()) for m in merges] + [BOS, EOS]
    vocab = {token: index for index, token in enumerate(vocab_list)}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    return len(vocab)


def make_tiny_hf_clip(folder: Path, seed: int = 0, num_merges: int = 2000) -> Path:
    """A random CLIPModel (32 px images, 32-token context, 2 layers per tower) saved with its tokenizer."""
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    vocab_size = write_tiny_clip_tokenizer_files(folder, num_merges)
    tokenizer = CLIPTokenizer.from_pretrained(str(folder), local_files_only=True)
    tokenizer.model_max_length = TINY_CONTEXT_LENGTH
    tokenizer.save_pretrained(str(folder))
    config = CLIPConfig(
        text_config={
            "vocab_size": vocab_size, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 2, "max_position_embeddings": TINY_CONTEXT_LENGTH,
            "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config={
            "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
            "image_size": TINY_IMAGE_SIZE, "patch_size": 8,
        },
        projection_dim=16,
    )
    torch.manual_seed(seed)
    model = CLIPModel(config)
    model.save_pretrained(str(folder))
    return folder


# --- Catalogs built through the ORM ---

# (file, RGB colour, width, height, split, [(sentence, space-separated UPOS tags)])
CatalogEntry = tuple[str, tuple[int, int, int], int, int, str, list[tuple[str, str]]]


def add_images(store: Store, root: Path, catalog: list[CatalogEntry]) -> None:
    """Write each image as a solid PNG and store it with one caption whose sentences carry the given tags."""
    with store.session() as session:
        batch = IngestBatch(source_uri="test", source_kind="csv", source_sha256="0" * 64,
                            images_root=str(root), tagger="hand", actor="test", status="committed")
        session.add(batch)
        session.flush()
        for name, colour, width, height, split, sentences in catalog:
            PILImage.new("RGB", (width, height), colour).save(root / name)
            sha = hashlib.sha256(name.encode()).hexdigest()
            image = Image(sha256=sha, images_root=str(root), path=name, width=width, height=height,
                          format="PNG", num_bytes=(root / name).stat().st_size, split=split,
                          batch_id=batch.id)
            session.add(image)
            session.flush()
            text = " ".join(s for s, _ in sentences)
            caption = Caption(image_id=image.id, text=text, batch_id=batch.id,
                              text_sha256=hashlib.sha256(text.encode()).hexdigest())
            session.add(caption)
            session.flush()
            for position, (sentence, tags) in enumerate(sentences):
                tokens = [*sentence[:-1].split(), sentence[-1]]
                session.add(Sentence(caption_id=caption.id, position=position, text=sentence, tokens=tokens,
                                     pos=tags.split(), tagger="hand"))


def add_hashed_images(store: Store, root: Path, catalog: list[CatalogEntry]) -> None:
    """`add_images`, with each image's catalogued sha256 made its file's: training checks the files."""
    add_images(store, root, catalog)
    names = {entry[0] for entry in catalog}
    with store.session() as session:
        for image in session.scalars(select(Image).where(Image.images_root == str(root))):
            if image.path in names:
                image.sha256 = hashlib.sha256((root / image.path).read_bytes()).hexdigest()


# (file, width, height, [(sentence, UPOS tags)]): two wide and two tall images, so each can be paired.
TRAIN_CATALOG = [
    ("a.png", 40, 20, [("A man wearing a black hat.", "DET NOUN VERB DET ADJ NOUN PUNCT"),
                       ("He stands outside.", "PRON VERB ADV PUNCT")]),
    ("b.png", 60, 30, [("A water feature in a garden.", "DET NOUN NOUN ADP DET NOUN PUNCT"),
                       ("Plants grow nearby.", "NOUN VERB ADV PUNCT")]),
    ("c.png", 20, 40, [("A red cube left of a blue ball.", "DET ADJ NOUN ADV ADP DET ADJ NOUN PUNCT")]),
    ("d.png", 30, 50, [("A tall tower near a river.", "DET ADJ NOUN ADP DET NOUN PUNCT"),
                       ("Boats pass by.", "NOUN VERB ADV PUNCT")]),
]


def snapshot_train_catalog(url: str, root: Path,
                           entries: list[tuple[str, int, int, list[tuple[str, str]]]] = TRAIN_CATALOG) -> str:
    """Store the entries (hashed PNGs, all in train) and snapshot them; returns the snapshot's content hash."""
    store = open_store(url)
    add_hashed_images(store, root, [(name, (40 * i, 100, 200), width, height, "train", sentences)
                             for i, (name, width, height, sentences) in enumerate(entries)])
    snapshot, _ = create_snapshot(store, name="tiny")
    content_hash = snapshot.content_hash
    store.close()
    return content_hash


# --- Ingest corpora ---

def write_png(path: Path, size: tuple[int, int], colour: tuple[int, int, int]) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    PILImage.new("RGB", size, colour).save(buffer, format="PNG")
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
    PILImage.new("RGB", (32, 32)).save(root / "anim.gif", format="GIF")
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


NOISE_MANIFEST_ROWS = 900


def write_noise_manifest(base: Path) -> Path:
    rng = np.random.default_rng(0)
    root = base / "images"
    root.mkdir()
    lines = []
    for i in range(NOISE_MANIFEST_ROWS // 3):
        # Noise does not compress, so each decode takes real time and the kill lands mid-run.
        pixels = rng.integers(0, 256, size=(96, 128 if i % 2 else 72, 3), dtype=np.uint8)
        PILImage.fromarray(pixels).save(root / f"{i}.png")
        lines.append({"image": f"images/{i}.png", "caption": f"A red cube number {i}. It is left of a ball."})
        lines.append({"image": f"images/{i}.png", "caption": f"Another view of object {i}."})
        lines.append({"image": f"missing-{i}.png", "caption": "This row is rejected."})
    manifest = base / "m.jsonl"
    manifest.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    return manifest


def ingest_command(manifest: Path, db: str, workers: int = 1) -> list[str]:
    return [sys.executable, "-m", "toolkit", "ingest", str(manifest), "--db", db, "--commit-every", "15", "--json",
            "--workers", str(workers)]


def catalog_state(url: str) -> dict[str, object]:
    store = open_store(url)
    with store.session() as session:
        counts = {t.__tablename__: session.scalar(select(func.count()).select_from(t))
                  for t in (Image, Caption, Sentence, Reject)}
        # No half-written caption: every caption has its sentences, numbered from 0 without gaps.
        per_caption = session.execute(
            select(Sentence.caption_id, func.count(), func.max(Sentence.position)).group_by(Sentence.caption_id)).all()
        counts["captions_with_sentences"] = len(per_caption)
        counts["gapless"] = all(n == top + 1 for _, n, top in per_caption)
        counts["pairs"] = sorted(session.execute(
            select(Image.sha256, Caption.text).join(Caption, Caption.image_id == Image.id)).all())
    store.close()
    return counts


SCENE_COLOURS = {"red": (220, 20, 20), "blue": (20, 20, 220), "green": (20, 180, 20), "yellow": (230, 220, 30)}


SCENE_SHAPES = ["cube", "ball", "cone", "ring", "star"]


def write_scene_manifest(base: Path) -> Path:
    lines = []
    names = list(SCENE_COLOURS)
    for i in range(24):
        a, b = names[i % 4], names[(i + 1 + i // 4) % 4]
        s, t = SCENE_SHAPES[i % 5], SCENE_SHAPES[(i + 2) % 5]
        colour = tuple(min(255, c + i) for c in SCENE_COLOURS[a])  # distinct bytes: no two images de-duplicate
        write_png(base / f"{i}.png", (48, 32) if i % 2 else (32, 48), colour)
        lines.append({"image": f"{i}.png", "caption": f"A {a} {s} left of a {b} {t}. The {t} is small. "
                                                      f"A {b} {s} is behind them."})
    (base / "m.jsonl").write_text("\n".join(json.dumps(line) for line in lines))
    return base / "m.jsonl"


def sugarcrepe_captions() -> list[str]:
    """The committed SugarCrepe subset's positive captions (real COCO text, MIT)."""
    return [item["caption"] for item in json.loads(SUGARCREPE_SUBSET.read_text(encoding="utf-8"))]


def ingest_captions(url: str, base: Path, captions: list[str]) -> None:
    root = base / "images"
    lines = []
    for index, caption in enumerate(captions):
        write_png(root / f"{index}.png", (40, 32), (index % 256, (index // 256) % 256, 90))
        lines.append(json.dumps({"image": f"{index}.png", "caption": caption}))
    manifest = base / "manifest.jsonl"
    manifest.write_text("\n".join(lines) + "\n")
    store = open_store(url)
    ingest_source(store, manifest, IngestConfig(images_root=root), blob_dir=base / "blobs", tagger=load_tagger())
    store.close()


# --- Negatives ---

def tagged(text: str, tags: str) -> TaggedSentence:
    return TaggedSentence.of(text.split(), tags.split())


# --- Training ---

def tiny_train_config(**overrides: object) -> TrainConfig:
    values = {"batch_size": 4, "max_steps": 4, "lr": 1e-3, "min_lr": 1e-5, "progress": False, "seed": 7,
              **overrides}
    return TrainConfig.from_dict(values)


class RecordingTracker:
    def __init__(self) -> None:
        self.params: list[dict[str, object]] = []
        self.metrics: list[tuple[int, dict[str, float]]] = []
        self.artifacts: list[str] = []

    def log_params(self, params: dict[str, object]) -> None:
        self.params.append(params)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.metrics.append((step, metrics))

    def log_artifact(self, path: str) -> None:
        self.artifacts.append(path)


def run_tiny_training(spec: str, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(TINY_TRAIN_SCRIPT), "--spec", spec,
                           "--out", str(out), *extra], env=env, capture_output=True, text=True, timeout=300)


# --- Benchmark folders in the public formats (our own made-up items and 32 px PNGs) ---

BENCHMARK_COLOURS = {"red.png": (220, 20, 20), "blue.png": (20, 20, 220), "green.png": (20, 200, 40)}


def write_images(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, colour in BENCHMARK_COLOURS.items():
        image = PILImage.new("RGB", (40, 32), colour)
        # a white square, so images differ in layout as well as colour
        image.paste((255, 255, 255), (4, 4, 14, 14) if name != "blue.png" else (24, 16, 34, 26))
        image.save(folder / name)


SCPP_ITEMS = [
    {"id": 0, "filename": "red.png", "caption": "a red cube left of a blue ball",
     "caption2": "a blue ball is to the right of a red cube",
     "negative_caption": "a blue cube left of a red ball"},
    {"id": 1, "filename": "blue.png", "caption": "a dog chasing a cat",
     "caption2": "a cat being chased by a dog", "negative_caption": "a cat chasing a dog"},
    {"id": 2, "filename": "green.png", "caption": "a man riding a horse on a beach",
     "caption2": "on a beach a man rides a horse", "negative_caption": "a horse riding a man on a beach"},
    {"id": 3, "filename": "green.png", "caption": "two birds on a wire",
     "caption2": "a wire with two birds on it", "negative_caption": "a blue cube left of a red ball"},
    {"id": 4, "filename": "blue.png", "caption": "a cat being chased by a dog",
     "caption2": "A cat being chased by a dog.",
     "negative_caption": "a blue ball is to the right of a red cube"},
]


def scpp_subset_items(subset: str) -> list[dict[str, object]]:
    """Each subset leaves out a different item, so a mix-up between subsets changes the numbers."""
    left_out = SUGARCREPE_PP_SUBSETS.index(subset)
    return [item for k, item in enumerate(SCPP_ITEMS) if k != left_out]


SC_ITEMS = {
    "0": {"filename": "red.png", "caption": "a small red boat on a lake",
          "negative_caption": "a small red boat on a frozen lake"},
    "1": {"filename": "green.png", "caption": "a woman holding an umbrella",
          "negative_caption": "an umbrella holding a woman"},
    "2": {"filename": "blue.png", "caption": "a dog on a sofa", "negative_caption": "a dog on a wooden sofa"},
    "3": {"filename": "red.png", "caption": "a kite above a field", "negative_caption": "a field above a kite"},
    "4": {"filename": "green.png", "caption": "a green leaf", "negative_caption": "a green and yellow leaf"},
    "5": {"filename": "blue.png", "caption": "a boy throwing a ball", "negative_caption": "a ball throwing a boy"},
}


# Each subset holds different items (and counts), so subset and group accuracies differ: averaging the wrong
# subsets into add/replace/swap, or weighting by items, changes the numbers.
SC_SUBSET_KEYS = {
    "add_att": ["0", "1"], "add_obj": ["1", "3", "4"],
    "replace_att": ["0", "2", "3"], "replace_obj": ["0", "1", "2", "3"], "replace_rel": ["1", "2", "3", "4", "5"],
    "swap_att": ["0", "2"], "swap_obj": ["0", "1", "2", "3", "4", "5"],
}


def sc_subset_items(subset: str) -> dict[str, dict[str, str]]:
    return {key: SC_ITEMS[key] for key in SC_SUBSET_KEYS[subset]}


def write_sugarcrepe_pp(folder: Path) -> Path:
    write_images(folder / "images")
    for subset in SUGARCREPE_PP_SUBSETS:
        (folder / f"{subset}.json").write_text(json.dumps(scpp_subset_items(subset)), encoding="utf-8")
    return folder


def write_sugarcrepe(folder: Path) -> Path:
    write_images(folder / "images")
    for subset in SUGARCREPE_SUBSETS:
        (folder / f"{subset}.json").write_text(json.dumps(sc_subset_items(subset)), encoding="utf-8")
    return folder


def write_winoground(folder: Path) -> Path:
    write_images(folder / "images")
    examples = [
        {"id": 0, "caption_0": "a red square above blue", "caption_1": "a blue square above red",
         "image_0": "red", "image_1": "blue"},
        {"id": 1, "caption_0": "green grass under a white sky", "caption_1": "white grass under a green sky",
         "image_0": "green", "image_1": "red"},
        {"id": 2, "caption_0": "a wire with two birds on it", "caption_1": "a red cube left of a blue ball",
         "image_0": "green", "image_1": "red"},
        {"id": 3, "caption_0": "a cat being chased by a dog", "caption_1": "a red cube left of a blue ball",
         "image_0": "blue", "image_1": "red"},
    ]
    lines = [json.dumps(e) for e in examples]
    (folder / "examples.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def write_zeroshot(folder: Path) -> Path:
    write_images(folder)
    labels = {
        "classnames": ["red thing", "blue thing", "green thing"],
        "templates": ["a photo of a {}.", "a picture of the {}."],
        "images": [{"path": "red.png", "label": "red thing"}, {"path": "blue.png", "label": 1},
                   {"path": "green.png", "label": "green thing"}],
    }
    path = folder / "labels.json"
    path.write_text(json.dumps(labels), encoding="utf-8")
    return path


# --- Review ---

def review_failures(store, tmp_path) -> tuple[list[Failure], dict[str, int]]:
    with store.session() as session:
        caption_id = session.scalar(select(Caption.id))
    image = str(tmp_path / "a.png")
    return [
        Failure("domain", "all", "acc", "1", image, "A blue cube.", "A cube blue.", 0.1, 0.2, "swap_within"),
        Failure("domain", "all", "acc", "2", image, "A red ball left of a cube.", "A cube left of a red ball.",
                0.1, 0.3, "swap_across"),
        Failure("domain", "all", "acc", "3", image, "A small cube.", "A tiny cube.", 0.1, 0.4, "replace"),
    ], {"1": caption_id}


# --- A fault-injection HTTP proxy ---

_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host", "proxy-connection"}


@dataclass
class Rule:
    path: re.Pattern[str]
    fault: str
    method: str | None = None
    query: re.Pattern[str] | None = None
    nth: int | None = None  # only the nth matching request (0-based); None: every matching request
    seen: int = 0

    def applies(self, method: str, path: str, query: str) -> bool:
        if self.method and method != self.method:
            return False
        if not self.path.search(path) or (self.query is not None and not self.query.search(query)):
            return False
        self.seen += 1
        return self.nth is None or self.seen - 1 == self.nth


class FaultProxy:
    """A fault-injection HTTP proxy: forwards to a real server, except where a rule says otherwise.

        proxy = FaultProxy("http://127.0.0.1:5000").start()
        proxy.fail(r"/registered-models/alias", "403", method="GET", query=r"alias=champion")
        proxy.fail_nth(r"/api/2\\.0/mlflow/(registered-models|model-versions)/", 3, "hang")

    Faults: "403", "503" (any status code as a string, with an MLflow-style JSON error body), "hang" (accept
    the request and never answer, until the proxy stops), "drop" (close the connection without an answer). A
    faulted request never reaches the server, so the server's state is exactly what the client managed to do.
    """

    def __init__(self, upstream: str) -> None:
        target = urlsplit(upstream)
        self.upstream = (target.hostname or "127.0.0.1", target.port or 80)
        self.rules: list[Rule] = []
        self.requests: list[tuple[str, str, str]] = []  # (method, path, query) of everything seen
        self.faulted: list[tuple[str, str, str]] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None

    @property
    def uri(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def fail(self, path: str, fault: str, *, method: str | None = None, query: str | None = None) -> None:
        self.rules.append(Rule(re.compile(path), fault, method, re.compile(query) if query else None))

    def fail_nth(self, path: str, nth: int, fault: str) -> None:
        self.rules.append(Rule(re.compile(path), fault, nth=nth))

    def clear(self) -> None:
        with self._lock:
            self.rules.clear()
            self.requests.clear()
            self.faulted.clear()

    def _fault_for(self, method: str, path: str, query: str) -> str | None:
        with self._lock:
            self.requests.append((method, path, query))
            for rule in self.rules:
                if rule.applies(method, path, query):
                    self.faulted.append((method, path, query))
                    return rule.fault
        return None

    def start(self) -> FaultProxy:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"  # one request per connection: no keep-alive bookkeeping

            def log_message(self, *_: object) -> None:
                pass

            def _handle(self) -> None:
                parts = urlsplit(self.path)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                fault = proxy._fault_for(self.command, parts.path, parts.query)
                if fault == "hang":
                    proxy._stopping.wait(600)
                    return
                if fault == "drop":
                    self.close_connection = True
                    return
                if fault is not None:
                    payload = json.dumps({"error_code": "TEMPORARILY_UNAVAILABLE" if fault == "503"
                                          else "PERMISSION_DENIED", "message": f"injected fault {fault}"}).encode()
                    self._reply(int(fault), [("Content-Type", "application/json")], payload)
                    return
                connection = http.client.HTTPConnection(*proxy.upstream, timeout=120)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                    connection.request(self.command, self.path, body=body or None, headers=headers)
                    response = connection.getresponse()
                    self._reply(response.status, [(k, v) for k, v in response.getheaders()
                                                  if k.lower() not in _HOP_BY_HOP], response.read())
                finally:
                    connection.close()

            def _reply(self, status: int, headers: list[tuple[str, str]], payload: bytes) -> None:
                self.send_response(status)
                for key, value in headers:
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


def silent_listener() -> tuple[str, object]:
    """A socket that accepts connections and never answers (a hung server). Returns (uri, socket)."""
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    return f"http://127.0.0.1:{listener.getsockname()[1]}", listener



# --- A small disk ---

@contextmanager
def small_disk(folder: Path, size: str = "1m") -> Iterator[Path]:
    """A real tmpfs of `size` mounted on `folder` (writes past it fail with ENOSPC, as on a full disk).

    Needs the right to mount (root, as in CI); elsewhere the test is skipped, and in CI (`CI` set) it fails:
    a fault fixture that silently never runs would let the fault come back."""
    folder.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        reason = f"cannot mount a small tmpfs here: {mounted.stderr.strip()}"
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the disk-full tests as root: {reason}")
        pytest.skip(reason)
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=True)
