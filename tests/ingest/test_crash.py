"""Crash safety: SIGKILL part way through an ingest, re-run, and get exactly a clean run's state."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from tests.helpers import NOISE_MANIFEST_ROWS, catalog_state, ingest_command, toolkit_env, write_noise_manifest
from toolkit.catalog import open_store
from toolkit.catalog.models import Caption


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
    manifest = write_noise_manifest(tmp_path)
    clean_url = f"sqlite:///{tmp_path / 'clean.db'}"
    subprocess.run(ingest_command(manifest, clean_url), env=toolkit_env(tmp_path / "ws"), check=True,
                   capture_output=True)
    clean = catalog_state(clean_url)
    assert clean["captions"] == 2 * NOISE_MANIFEST_ROWS // 3 and clean["rejects"] == NOISE_MANIFEST_ROWS // 3

    open_store(catalog_url).close()  # migrate first so polling can read the tables
    victim = subprocess.Popen(ingest_command(manifest, catalog_url, workers), env=toolkit_env(tmp_path / "ws"),
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
    killed = catalog_state(catalog_url)
    assert 0 < killed["captions"] < clean["captions"], "the kill did not land mid-run"
    assert killed["gapless"] and killed["captions_with_sentences"] == killed["captions"]

    subprocess.run(ingest_command(manifest, catalog_url, workers), env=toolkit_env(tmp_path / "ws"), check=True,
                   capture_output=True)
    assert catalog_state(catalog_url) == clean
