"""Crash safety: SIGKILL part way through an ingest, re-run, and get exactly a clean run's state."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage
from sqlalchemy import func, select

from toolkit.catalog import open_store
from toolkit.catalog.models import Caption, Image, Reject, Sentence

REPO = Path(__file__).resolve().parents[1]
ROWS = 900


def _make_manifest(base: Path) -> Path:
    rng = np.random.default_rng(0)
    root = base / "images"
    root.mkdir()
    lines = []
    for i in range(ROWS // 3):
        # Noise does not compress, so each decode takes real time and the kill lands mid-run.
        pixels = rng.integers(0, 256, size=(96, 128 if i % 2 else 72, 3), dtype=np.uint8)
        PILImage.fromarray(pixels).save(root / f"{i}.png")
        lines.append({"image": f"images/{i}.png", "caption": f"A red cube number {i}. It is left of a ball."})
        lines.append({"image": f"images/{i}.png", "caption": f"Another view of object {i}."})
        lines.append({"image": f"missing-{i}.png", "caption": "This row is rejected."})
    manifest = base / "m.jsonl"
    manifest.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    return manifest


def _ingest_cmd(manifest: Path, db: str, workers: int = 1) -> list[str]:
    return [sys.executable, "-m", "toolkit", "ingest", str(manifest), "--db", db, "--commit-every", "15", "--json",
            "--workers", str(workers)]


def _env(workspace: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "TOOLKIT_WORKSPACE": str(workspace)}


def _state(url: str) -> dict[str, object]:
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


@pytest.mark.parametrize("workers", [1, 2])
def _processes() -> dict[int, int]:
    """Live (not zombie) process id -> parent id."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            pid, rest = stat.read_text().split(" ", 1)
        except OSError:
            continue
        state, parent = rest.rsplit(")", 1)[1].split()[:2]
        if state != "Z":
            found[int(pid)] = int(parent)
    return found


def _children(parent: int) -> set[int]:
    return {pid for pid, owner in _processes().items() if owner == parent}


@pytest.mark.parametrize("workers", [1, 2])
def test_sigkill_then_rerun_equals_clean_run(catalog_url, tmp_path, workers):
    manifest = _make_manifest(tmp_path)
    clean_url = f"sqlite:///{tmp_path / 'clean.db'}"
    subprocess.run(_ingest_cmd(manifest, clean_url), env=_env(tmp_path / "ws"), check=True, capture_output=True)
    clean = _state(clean_url)
    assert clean["captions"] == 2 * ROWS // 3 and clean["rejects"] == ROWS // 3

    open_store(catalog_url).close()  # migrate first so polling can read the tables
    victim = subprocess.Popen(_ingest_cmd(manifest, catalog_url, workers), env=_env(tmp_path / "ws"),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    store = open_store(catalog_url)
    deadline = time.monotonic() + 120
    partial = 0
    while time.monotonic() < deadline and victim.poll() is None:
        with store.session() as session:
            partial = session.scalar(select(func.count()).select_from(Caption)) or 0
        if partial >= 60:
            helpers = _children(victim.pid)
            victim.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    victim.wait()
    store.close()
    assert victim.returncode == -signal.SIGKILL, "the ingest finished before it could be killed"
    deadline = time.monotonic() + 30
    while helpers & _processes().keys() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not helpers & _processes().keys(), "worker processes outlived the killed ingest"
    killed = _state(catalog_url)
    assert 0 < killed["captions"] < clean["captions"], "the kill did not land mid-run"
    assert killed["gapless"] and killed["captions_with_sentences"] == killed["captions"]

    subprocess.run(_ingest_cmd(manifest, catalog_url, workers), env=_env(tmp_path / "ws"), check=True,
                   capture_output=True)
    assert _state(catalog_url) == clean
