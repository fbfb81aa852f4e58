"""Tracking URIs MLflow cannot use: one line naming the URI and exit 3, never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import run_toolkit


@pytest.mark.parametrize("uri", ["http://127.0.0.1:notaport", "postgresql://alice:S3cretPW@127.0.0.1:notaport/mlflow"])
def test_a_port_that_is_not_a_number_is_bad_input(uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """On main: `http.client.InvalidURL: nonnumeric port: 'notaport'`, and for the database form
    `ValueError: invalid literal for int() with base 10: 'notaport'` (exit 1, traceback)."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    result = run_toolkit(["rollback"])
    assert result.exit_code == 3, result.exc_info
    assert "notaport" in result.output and "S3cretPW" not in result.output


@pytest.mark.parametrize("form", ["./mlruns", "file:./mlruns"])
def test_an_mlflow_file_store_is_bad_input(form: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On main: `mlflow.exceptions.MlflowException: The filesystem tracking backend (e.g., './mlruns') is in
    maintenance mode ...` (exit 1, traceback)."""
    (tmp_path / "mlruns" / "0").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", form)
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    result = run_toolkit(["rollback"])
    assert result.exit_code == 3, result.exc_info
    assert "file store" in result.output and "migrate-filestore" in result.output
