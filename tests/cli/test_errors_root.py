"""One error root: a ToolkitError is one line and its exit code, anything else is a bug (exit 1, traceback).

Every command goes through `toolkit.cli.main()`; nothing maps ValueError or OSError to "bad input" any more.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO, run_toolkit, snapshot_train_catalog
from toolkit.core.errors import EXIT_BAD_INPUT, EXIT_BUG, InputError, Refused, StrictRefusal, ToolkitError, UsageError


def _main_in_a_fresh_process(args: list[str], before: str = "") -> subprocess.CompletedProcess[str]:
    """`toolkit ARGS` through the real `main()`, with `before` run first (to inject a fault)."""
    code = "\n".join(["import sys", before, "from toolkit.cli import main",
                      f"sys.argv = ['toolkit', *{args!r}]", "main()"])
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "500"})


def test_an_unexpected_exception_is_a_bug_with_its_traceback(tmp_path: Path) -> None:
    # A ValueError deep in the library used to read as "bad input" (exit 3) on `register`; it is a bug.
    (tmp_path / "model").mkdir()
    inject = ("import toolkit.eval.summary as summary\n"
              "def broken(*args, **kwargs):\n"
              "    raise ValueError('injected internal fault')\n"
              "summary.gate_metrics_from_eval_json = broken")
    done = _main_in_a_fresh_process(["register", str(tmp_path / "model"), "--eval-json", str(tmp_path / "e.json"),
                                     "--db", f"sqlite:///{tmp_path / 'c.db'}"], before=inject)
    assert done.returncode == EXIT_BUG, done.stderr
    assert "Traceback (most recent call last)" in done.stderr
    assert "ValueError: injected internal fault" in done.stderr


def test_an_unexpected_exception_in_process_keeps_the_exception(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import toolkit.export.rollout as rollout

    def broken(path: Path) -> list[str]:
        raise OSError("injected disk fault")

    monkeypatch.setattr(rollout, "read_queries", broken)
    result = run_toolkit(["rollout", "shadow", "--champion", tmp_path, "--challenger", tmp_path,
                          "--queries", tmp_path / "q.txt", "--index", tmp_path / "i.npy"])
    assert result.exit_code == EXIT_BUG
    assert isinstance(result.exception, OSError) and "injected disk fault" in str(result.exception)


def test_a_user_error_is_its_exit_code_and_one_clear_line(tmp_path: Path) -> None:
    not_a_bundle = tmp_path / "bundle.txt"
    not_a_bundle.write_text("x", encoding="utf-8")
    done = _main_in_a_fresh_process(["verify", str(not_a_bundle)])
    assert done.returncode == EXIT_BAD_INPUT, done.stderr
    assert done.stderr.strip().splitlines() == [f"error: {not_a_bundle} is not a folder"]
    assert "Traceback" not in done.stderr


def test_a_refusal_from_the_library_is_exit_5_and_one_line(tmp_path: Path) -> None:
    (tmp_path / "bundle").mkdir()  # a folder, but no manifest: verification refuses
    result = run_toolkit(["verify", tmp_path / "bundle"])
    assert result.exit_code == Refused.exit_code == 5, result.output
    assert result.stderr.startswith("error: ") and len(result.stderr.strip().splitlines()) == 1
    assert isinstance(result.exception, SystemExit)


def test_every_user_facing_error_class_has_one_root() -> None:
    from toolkit.adapters.base import ModelLoadError
    from toolkit.adapters.outputs import OutputExistsError
    from toolkit.catalog.db import StoreError
    from toolkit.catalog.snapshot import SnapshotError
    from toolkit.core.text import CaptionError
    from toolkit.data.samples import TrainingDataError
    from toolkit.data.tiles import FileChangedError, TileError
    from toolkit.demo.generate import DemoDataError
    from toolkit.eval.benchmarks import BenchmarkError
    from toolkit.eval.summary import EvalResultsError
    from toolkit.export.bundle import ParityError
    from toolkit.export.onnx_text import ExportError
    from toolkit.export.rollout import RolloutError
    from toolkit.governance.gates import ThresholdsError
    from toolkit.governance.registry import RegistryError
    from toolkit.governance.regression import RegressionSetError
    from toolkit.governance.review import ReviewError
    from toolkit.ingest.pipeline import StrictIngestError, WorkspaceError
    from toolkit.ingest.rows import SourceError
    from toolkit.ingest.tagging import TaggerError
    from toolkit.runtime.encoder import ProviderError
    from toolkit.runtime.manifest import BundleError
    from toolkit.train.anchors import AnchorError
    from toolkit.train.checkpoint import ResumeError
    from toolkit.train.config import ConfigError
    from toolkit.train.interpolate import InterpolationError
    from toolkit.train.recipe import TrainingDivergedError

    bad_input = [ModelLoadError, OutputExistsError, StoreError, SnapshotError, CaptionError, TrainingDataError,
                 FileChangedError, TileError, DemoDataError, BenchmarkError, EvalResultsError, ExportError,
                 RolloutError, ThresholdsError, RegistryError, RegressionSetError, ReviewError, WorkspaceError,
                 SourceError, TaggerError, ProviderError, AnchorError, ResumeError, ConfigError,
                 InterpolationError, TrainingDivergedError]
    for kind in bad_input:
        assert issubclass(kind, InputError), kind
    for kind in (ParityError, BundleError):
        assert issubclass(kind, Refused), kind
    assert issubclass(StrictIngestError, StrictRefusal)
    assert UsageError.exit_code == 2 and issubclass(UsageError, ToolkitError)


def test_lora_without_peft_fails_before_the_mlflow_run_opens(tiny_open_clip_spec: str, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow.tracking import MlflowClient

    from toolkit.core.config import resolve_tracking_uri
    from toolkit.core.errors import MissingComponentError
    from toolkit.train.config import LoraSettings, TrainConfig
    from toolkit.train.job import train_on_snapshot

    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    (tmp_path / "images").mkdir()
    snapshot_train_catalog(url, tmp_path / "images")
    monkeypatch.setitem(sys.modules, "peft", None)  # as on an install without the lora extra
    config = TrainConfig(max_steps=1, batch_size=2, progress=False, lora=LoraSettings(rank=2))
    with pytest.raises(MissingComponentError, match="peft"):
        train_on_snapshot(tiny_open_clip_spec, "tiny", tmp_path / "out", config, url, track=True)
    client = MlflowClient(resolve_tracking_uri())
    experiments = [e.experiment_id for e in client.search_experiments()]
    assert not experiments or client.search_runs(experiments) == []
    assert not (tmp_path / "out").exists()
