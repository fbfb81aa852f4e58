"""Untrusted bundle input is bounded: a re-signed bundle (manifest.sha256 rewritten to match, as an attacker
with write access would) holding a decompression bomb, a deeply nested or huge-integer manifest, or absurd
numeric fields is refused by `toolkit verify` (exit 5, one line), and the runtime tokenizer does not
allocate more than twice a normal load for a bomb even when `verify` is skipped.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO, run_toolkit

MERGES = 48894  # open_clip's count, the tokenizer's default
NORMAL_MERGES = b"#version: 0.2\n" + b"".join(f"a{i} b{i}\n".encode() for i in range(MERGES))
BOMB_BYTES = 300 << 20  # 300 MB of output from a few hundred kB on disk


def _bomb() -> bytes:
    """Valid merges, then 300 MB of short lines: gzip compresses them about 1000:1."""
    out = gzip.compress(NORMAL_MERGES, compresslevel=1)
    zeros = gzip.compress(b"x y\n" * (4 << 20), compresslevel=9)
    return out + zeros * (BOMB_BYTES // (16 << 20))  # concatenated gzip members read as one stream


def _one_line_bomb() -> bytes:
    """Valid merges, then 300 MB in a single line."""
    zeros = gzip.compress(b"0" * (16 << 20), compresslevel=9)
    return gzip.compress(NORMAL_MERGES, compresslevel=1) + zeros * (BOMB_BYTES // (16 << 20))


def _sign(folder: Path, manifest_text: str) -> None:
    (folder / "manifest.json").write_text(manifest_text, encoding="utf-8")
    digest = hashlib.sha256((folder / "manifest.json").read_bytes()).hexdigest()
    (folder / "manifest.sha256").write_text(f"{digest}  manifest.json\n", encoding="utf-8")


def _bundle(folder: Path, merges_gz: bytes, **fields: object) -> Path:
    """A bundle as `verify` sees it (the graph is never loaded by verify), re-signed after any change."""
    (folder / "tokenizer").mkdir(parents=True)
    (folder / "text_fp32.onnx").write_bytes(b"graph")
    (folder / "tokenizer" / "bpe.txt.gz").write_bytes(merges_gz)
    files = {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
             for p in folder.rglob("*") if p.is_file()}
    manifest = {"format_version": 2, "files": files, "embed_dim": 32, "context_length": 77, "eot_id": 49407,
                "trim_to_eot": True, "input_name": "input_ids",
                "tokenizer": {"bpe_file": "tokenizer/bpe.txt.gz", "context_length": 77},
                "variants": {"fp32": {"file": "text_fp32.onnx", "approved": True}}, **fields}
    _sign(folder, json.dumps(manifest))
    return folder


def _verify(bundle: Path) -> tuple[int, str]:
    result = run_toolkit(["verify", str(bundle)])
    return result.exit_code, " ".join(result.output.split())


def test_a_normal_bundle_passes_verify(tmp_path):
    code, said = _verify(_bundle(tmp_path / "b", gzip.compress(NORMAL_MERGES)))
    assert code == 0, said


@pytest.mark.parametrize(("make", "named"), [(_bomb, "decompresses to more than"), (_one_line_bomb, "longer than")])
def test_a_decompression_bomb_is_refused_by_verify(tmp_path, make, named):
    code, said = _verify(_bundle(tmp_path / "b", make()))
    assert code == 5, said
    assert "bpe.txt.gz" in said and named in said


@pytest.mark.parametrize(("fields", "named"), [
    ({"context_length": 10**9}, "context_length"),
    ({"eot_id": 10**12}, "eot_id"),
    ({"eot_id": 60000}, "eot_id"),  # plausible-looking, but past the vocabulary the merges make
    ({"embed_dim": 10**8}, "embed_dim"),
    ({"tokenizer": {"bpe_file": "tokenizer/bpe.txt.gz", "num_merges": 10**9}}, "num_merges"),
    ({"tokenizer": {"bpe_file": "tokenizer/bpe.txt.gz", "num_merges": 10}, "eot_id": 523}, None),  # fewer: fine
    ({"tokenizer": {"bpe_file": "tokenizer/bpe.txt.gz", "num_merges": MERGES + 5}}, "merge lines"),
    ({"tokenizer": {"bpe_file": "tokenizer/bpe.txt.gz", "context_length": 500}}, "context_length"),
])
def test_absurd_fields_are_refused_by_verify(tmp_path, fields, named):
    code, said = _verify(_bundle(tmp_path / "b", gzip.compress(NORMAL_MERGES), **fields))
    if named is None:
        assert code == 0, said
    else:
        assert code == 5, said
        assert named in said and "Traceback" not in said


@pytest.mark.parametrize(("make", "named"), [
    (lambda text: text[:-1] + ', "x": ' + "[" * 100_000 + "]" * 100_000 + "}", "nests"),
    (lambda text: text.replace('"embed_dim": 32', '"embed_dim": ' + "9" * 100_000), "digits"),
    (lambda text: text.replace('"embed_dim": 32', '"embed_dim": NaN'), "NaN"),
    (lambda text: text[:-1] + ', "pad": "' + "x" * (2 << 20) + '"}', "bytes"),
])
def test_hostile_manifest_json_is_refused_by_verify(tmp_path, make, named):
    bundle = _bundle(tmp_path / "b", gzip.compress(NORMAL_MERGES))
    _sign(bundle, make((bundle / "manifest.json").read_text(encoding="utf-8")))
    code, said = _verify(bundle)
    assert code == 5, said[-2000:]
    assert "manifest.json" in said and named in said


_PEAK = """
import resource, sys
from pathlib import Path
from toolkit.runtime.tokenizer import ClipBpeTokenizer, TokenizerSettings
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    ClipBpeTokenizer(TokenizerSettings(bpe_file="tokenizer/bpe.txt.gz", context_length=77), Path(sys.argv[1]))
    outcome = "loaded"
except (RuntimeError, ValueError) as err:
    outcome = "refused"
print(outcome, before, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def _peak_kib(bundle: Path) -> tuple[str, int]:
    """(outcome, growth of peak RSS in KiB) of building the runtime tokenizer in a fresh process."""
    done = subprocess.run([sys.executable, "-c", _PEAK, str(bundle)], capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr[-2000:]
    outcome, before, after = done.stdout.split()
    return outcome, int(after) - int(before)


@pytest.mark.parametrize("make", [_bomb, _one_line_bomb])
def test_the_runtime_reads_a_bomb_in_bounded_memory_even_without_verify(tmp_path, make):
    outcome, normal = _peak_kib(_bundle(tmp_path / "normal", gzip.compress(NORMAL_MERGES)))
    assert outcome == "loaded"
    _, bomb = _peak_kib(_bundle(tmp_path / "bomb", make()))
    assert bomb <= 2 * normal, f"a bomb grew the peak RSS by {bomb} KiB, a normal load by {normal} KiB"
