"""Shared fixtures: tiny randomly initialised models built at test time, catalog URLs, a real MLflow server
and an isolated workspace per test. Plain helpers live in tests/helpers.py."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from tests.helpers import TINY_OPEN_CLIP_CONFIG, small_disk
from toolkit.adapters.open_clip_adapter import OpenClipAdapter
from toolkit.adapters.weights import save_state_dict_file
from toolkit.catalog.db import recreate_database


@pytest.fixture
def tiny_config_path(tmp_path: Path) -> Path:
    path = tmp_path / "tiny-clip.json"
    path.write_text(json.dumps(TINY_OPEN_CLIP_CONFIG), encoding="utf-8")
    return path


@pytest.fixture
def tiny_open_clip_spec(tiny_config_path: Path) -> str:
    """An `open_clip:<config>@<weights>` spec with seeded random weights saved as safetensors."""
    torch.manual_seed(0)
    adapter = OpenClipAdapter.create(str(tiny_config_path), None)
    weights = tiny_config_path.parent / "tiny-clip.safetensors"
    save_state_dict_file(adapter.model.state_dict(), weights)
    return f"open_clip:{tiny_config_path}@{weights}"


def _catalog_urls() -> list[pytest.param]:
    params = [pytest.param("sqlite", id="sqlite")]
    if os.environ.get("TOOLKIT_TEST_PG_URL") or os.environ.get("CI"):
        params.append(pytest.param("postgres", id="postgres", marks=pytest.mark.postgres))
    return params


@pytest.fixture(params=_catalog_urls())
def catalog_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty catalog: a SQLite file, or a clean PostgreSQL database when one is configured.

    In CI (`CI` set) a missing TOOLKIT_TEST_PG_URL fails instead of silently skipping PostgreSQL.
    """
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'catalog.db'}"
    base = os.environ.get("TOOLKIT_TEST_PG_URL")
    if not base:
        pytest.fail("CI must test PostgreSQL: set TOOLKIT_TEST_PG_URL (.ci/run does)")
    return recreate_database(base, tmp_path.name)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory):
    """A real `mlflow server` process on localhost with a SQLite backend; yields its URI."""
    base = tmp_path_factory.mktemp("mlflow-server")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{base / 'mlflow.db'}",
         "--artifacts-destination", str(base / "artifacts"), "--workers", "1"],
        stdout=open(base / "server.log", "wb"), stderr=subprocess.STDOUT,  # noqa: SIM115
    )
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
                if response.status == 200:
                    break
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"mlflow server did not start: {(base / 'server.log').read_text()[-2000:]}")
        time.sleep(0.5)
    yield uri
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()


@pytest.fixture(autouse=True)
def isolated_workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own workspace (catalog, MLflow store, blobs); nothing leaks into the checkout."""
    workspace = tmp_path / "workspace"
    monkeypatch.setenv("TOOLKIT_WORKSPACE", str(workspace))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("TOOLKIT_DB_URL", raising=False)
    return workspace


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs: a folder on a disk that fills up (ENOSPC) after about a megabyte."""
    with small_disk(tmp_path / "small-disk", "1m") as folder:
        yield folder
