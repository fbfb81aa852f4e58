"""No password from any URL form reaches a test-run artefact: stdout, stderr, files in the workspace,
MLflow params, tags and dataset sources, or the catalog's audit log.

URL forms: `user:password@`, percent-encoded `user:pa%21ss@`, `?password=`, `?sslpassword=`, `?token=`, and
the same in MLFLOW_TRACKING_URI. Checked on the commands' own error paths and on a whole
ingest -> snapshot -> train run that logs to a real `mlflow server`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from sqlalchemy import select

from tests.helpers import REPO, write_scene_manifest

SECRET = "S3cret!PW"
ENCODED = "S3cret%21PW"  # how it reads inside a URL
LEAKS = (SECRET, ENCODED, "S3cret")


def _assert_clean(text: str, where: str) -> None:
    for leak in LEAKS:
        assert leak not in text, f"{leak!r} leaked into {where}: ...{text[max(0, text.find(leak) - 200):][:400]}"


def _toolkit(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "toolkit", *args], env=env, capture_output=True, text=True,
                          timeout=600)


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "COLUMNS": "200", **extra}


@pytest.mark.parametrize("url", [
    f"postgresql+psycopg://alice:{ENCODED}@127.0.0.1:1/catalog",
    f"postgresql+psycopg://alice@127.0.0.1:1/catalog?password={ENCODED}",
    f"postgresql+psycopg://alice@127.0.0.1:1/catalog?sslmode=disable&password={ENCODED}&connect_timeout=2",
    f"postgresql://alice@127.0.0.1:1/catalog?sslpassword={ENCODED}&password={ENCODED}",
    f"postgres+psycopg://alice:{ENCODED}@127.0.0.1:1/catalog",  # an unknown scheme: the error quotes the URL
    f"sqlite://alice:{ENCODED}@/catalog.db",  # SQLite refuses credentials: the error quotes the URL
    f"postgresql+psycopg://alice:{ENCODED}@127.0.0.1:notaport/catalog",
])
@pytest.mark.parametrize("how", ["option", "env"])
def test_a_catalog_url_password_is_never_printed(tmp_path, url, how):
    env = _env(TOOLKIT_WORKSPACE=str(tmp_path / "ws"))
    args = ["data", "stats"]
    if how == "option":
        args += ["--db", url]
    else:
        env["TOOLKIT_DB_URL"] = url
    done = _toolkit(env, *args)
    assert done.returncode != 0
    _assert_clean(done.stdout, "stdout")
    _assert_clean(done.stderr, "stderr")
    assert "alice" in done.stdout + done.stderr or "catalog" in done.stdout + done.stderr  # the URL is named


@pytest.mark.parametrize("uri", [f"http://alice:{ENCODED}@127.0.0.1:1", f"http://127.0.0.1:1/?token={ENCODED}"])
def test_a_tracking_uri_password_is_never_printed(tmp_path, uri):
    env = _env(TOOLKIT_WORKSPACE=str(tmp_path / "ws"), MLFLOW_TRACKING_URI=uri)
    done = _toolkit(env, "promote")
    assert done.returncode == 3, done.stderr[-2000:]
    _assert_clean(done.stdout + done.stderr, "promote's output")
    assert "127.0.0.1:1" in done.stdout + done.stderr


@pytest.mark.slow
def test_a_training_run_stores_no_password_anywhere(mlflow_server, tiny_open_clip_spec, tmp_path):
    """The catalog URL goes into the MLflow tag `toolkit.catalog` and the dataset source: redacted there."""
    workspace = tmp_path / "ws"
    db = f"sqlite:///{tmp_path / 'catalog.db'}?password={ENCODED}&token={ENCODED}"
    env = _env(TOOLKIT_WORKSPACE=str(workspace), MLFLOW_TRACKING_URI=mlflow_server, TOOLKIT_DB_URL=db)
    manifest = write_scene_manifest(tmp_path)
    run_dir = tmp_path / "run"
    outputs = []
    for args in (["ingest", str(manifest)], ["data", "snapshot"], ["data", "stats"],
                 ["train", "--base", tiny_open_clip_spec, "--out", str(run_dir), "--max-steps", "1",
                  "--batch-size", "4"]):
        done = _toolkit(env, *args)
        assert done.returncode == 0, f"toolkit {' '.join(args)}:\n{done.stderr[-3000:]}"
        outputs.append(done)
    for done in outputs:
        _assert_clean(done.stdout, f"stdout of {done.args[3:5]}")
        _assert_clean(done.stderr, f"stderr of {done.args[3:5]}")

    from mlflow.tracking import MlflowClient

    run_id = json.loads((run_dir / "model.json").read_text())["mlflow_run_id"]
    run = MlflowClient(mlflow_server).get_run(run_id)
    assert "toolkit.catalog" in run.data.tags  # the catalog is still named, only its secret is masked
    _assert_clean(json.dumps(run.data.tags), "MLflow tags")
    _assert_clean(json.dumps(run.data.params), "MLflow params")
    sources = [d.dataset.source for d in run.inputs.dataset_inputs]
    assert sources
    _assert_clean(json.dumps(sources), "MLflow dataset sources")
    for path in [*workspace.rglob("*"), *run_dir.rglob("*")]:
        if path.is_file() and path.stat().st_size < 5_000_000:
            _assert_clean(path.read_bytes().decode("utf-8", "replace"), str(path))

    from toolkit.catalog import open_store
    from toolkit.catalog.models import AuditEvent

    with open_store(db).session() as session:
        audit = [json.dumps(row) for row in session.scalars(select(AuditEvent.details))]
    _assert_clean("\n".join(audit), "the audit log")
