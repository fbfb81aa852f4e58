"""Against a dead tracking server (nothing listens) every command that tracks exits 3 within 30 s, and
against a silent one (accepts, never answers) within 60 s, with one line naming the server.

Measured as the wall time of the whole `python -m toolkit` process, start-up included.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

from tests.helpers import REPO

COMMANDS = {
    "promote": ["promote"],
    "rollback": ["rollback"],
    "register": ["register", "{tmp}"],
    "train": ["train", "--base", "open_clip:ViT-B-32@none", "--out", "{tmp}/run"],
    "eval": ["eval", "--model", "open_clip:ViT-B-32@none", "--benchmark", "domain:latest:test"],
    "export": ["export", "--model", "{tmp}", "--out", "{tmp}/bundle"],
    "review sync": ["review", "sync"],
}


@pytest.fixture(scope="module")
def silent_uri():
    """A listener that completes TCP handshakes (the kernel's backlog) and never reads or answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(128)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"


def _dead_uri() -> str:
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens there
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize(("server", "limit_s"), [("dead", 30), ("silent", 60)])
def test_an_unreachable_tracking_server_fails_fast(tmp_path, silent_uri, command, server, limit_s):
    uri = _dead_uri() if server == "dead" else silent_uri
    env = {**os.environ, "PYTHONPATH": str(REPO), "MLFLOW_TRACKING_URI": uri,
           "TOOLKIT_WORKSPACE": str(tmp_path / "ws"), "COLUMNS": "200"}
    for name in ("MLFLOW_HTTP_REQUEST_TIMEOUT", "MLFLOW_HTTP_REQUEST_MAX_RETRIES"):
        env.pop(name, None)  # the toolkit's own bounds, not a test's
    args = [a.replace("{tmp}", str(tmp_path)) for a in COMMANDS[command]]
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "toolkit", *args], env=env, capture_output=True, text=True,
                          timeout=limit_s + 120)
    took = time.monotonic() - started
    print(f"{command} against a {server} server: exit {done.returncode} after {took:.1f} s")
    said = " ".join(done.stderr.split())
    assert done.returncode == 3, said[-2000:]
    assert "tracking server" in said and uri.split("//")[1] in said, said[-2000:]
    assert "Traceback" not in done.stderr
    assert took < limit_s, f"{command} against a {server} server took {took:.1f} s"


@pytest.mark.parametrize("command", ["train", "eval", "export"])
def test_no_track_needs_no_tracking_server(tmp_path, command):
    """`--no-track` never contacts the tracking server: the command goes on to its own work (here it stops
    at the model, which does not exist) instead of refusing the dead server."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "MLFLOW_TRACKING_URI": _dead_uri(),
           "TOOLKIT_WORKSPACE": str(tmp_path / "ws"), "COLUMNS": "200"}
    args = [a.replace("{tmp}", str(tmp_path)) for a in COMMANDS[command]]
    done = subprocess.run([sys.executable, "-m", "toolkit", *args, "--no-track"], env=env, capture_output=True,
                          text=True, timeout=120)
    said = " ".join(done.stderr.split())
    assert "tracking server" not in said and "Traceback" not in said, said[-2000:]
    assert done.returncode == 3, said[-2000:]
