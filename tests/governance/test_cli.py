"""`toolkit review / register / promote` from the command line: bad input is refused by name, exit 3."""

from __future__ import annotations

import gzip
import json

import pytest

from tests.helpers import run_toolkit, write_png
from toolkit.catalog import open_store
from toolkit.core.errors import EXIT_BAD_INPUT
from toolkit.eval.evaluate import Failure
from toolkit.governance.review import record_failures, record_verdict


@pytest.fixture
def model_dir(tmp_path, tiny_open_clip_spec):
    from toolkit.adapters.loading import load_model
    from toolkit.adapters.outputs import write_model_folder

    folder = tmp_path / "model"
    write_model_folder(load_model(tiny_open_clip_spec), folder, {})
    return folder


@pytest.fixture
def db(tmp_path):
    return f"sqlite:///{tmp_path / 'catalog.db'}"


def _toolkit(*args: str):
    return run_toolkit([str(a) for a in args])


def _said(result) -> str:
    return " ".join(result.output.split())


def _registered_models() -> list[str]:
    from mlflow.tracking import MlflowClient

    from toolkit.core.config import resolve_tracking_uri

    return [m.name for m in MlflowClient(resolve_tracking_uri()).search_registered_models()]


def _open_item(db: str, image: str, positive: str = "a [red] cube", run: str = "run-1") -> int:
    store = open_store(db)
    (item,) = record_failures(store, run, "cand", [Failure("domain", "all", "acc", "1", image, positive,
                                                           "a [blue] cube", 0.1, 0.2, "swap_within")])
    store.close()
    return item


def test_review_list_prints_captions_literally(tmp_path, db):
    _open_item(db, str(tmp_path / "a.png"), positive="a [bold]red[/bold] cube")
    result = _toolkit("review", "list", "--db", db)
    assert result.exit_code == 0, result.output
    assert "a [bold]red[/bold] cube" in result.output and "a [blue] cube" in result.output


@pytest.mark.parametrize(("content", "named"), [
    (None, "does not exist"),
    (b"{", "not valid JSON"),
    (b"\xff\xfe{", "not valid JSON"),
    (b"[]", "object"),
    (b'{"MODEL": 5}', "MODEL"),
    (b'{"MODEL": {"domain": {"all": {"acc": "80"}}}}', "domain.all.acc"),
    (b'{"MODEL": {"domain": {"all": {}}}}', "domain.all.acc"),
    (b'{"MODEL": {"domain": []}}', "domain"),
])
def test_register_refuses_bad_eval_json_by_name(tmp_path, db, model_dir, content, named):
    path = tmp_path / "results.json"
    if content is not None:
        path.write_bytes(content.replace(b"MODEL", str(model_dir).encode()))
    result = _toolkit("register", model_dir, "--eval-json", path, "--db", db)
    assert result.exit_code == EXIT_BAD_INPUT, result.output
    said = _said(result)
    assert "results.json" in said and named.replace("MODEL", str(model_dir)) in said
    assert _registered_models() == []


def test_register_refuses_an_unknown_eval_run_and_accepts_a_clean_one(db, model_dir):
    from toolkit.tracking import Lineage, tracked_run

    result = _toolkit("register", model_dir, "--eval-run", "no-such-run", "--db", db)
    assert result.exit_code == EXIT_BAD_INPUT and "no-such-run" in _said(result)
    assert _registered_models() == []
    with tracked_run(Lineage(kind="eval")) as clean:  # evaluated, nothing failed
        pass
    result = _toolkit("register", model_dir, "--eval-run", clean.run_id, "--db", db, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["gate_metrics"]["unreviewed_share"] == 0.0


def test_register_refuses_broken_model_folders(tmp_path, db, model_dir):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "model.json").write_text("{}")
    result = _toolkit("register", empty, "--db", db)
    assert result.exit_code == EXIT_BAD_INPUT and "empty" in _said(result)
    for weights in model_dir.glob("*.safetensors"):
        weights.unlink()
    result = _toolkit("register", model_dir, "--db", db)
    assert result.exit_code == EXIT_BAD_INPUT and "weights" in _said(result)
    assert _registered_models() == []


def _bundle(folder, weights_sha256):
    """An intact bundle as far as `verify_bundle` checks (the graph itself is never loaded here)."""
    from toolkit.runtime.manifest import write_manifest

    (folder / "tokenizer").mkdir(parents=True)
    (folder / "text_fp32.onnx").write_bytes(b"graph")
    # open_clip's count of merges (the default): `verify_bundle` reads the lines the runtime would
    (folder / "tokenizer" / "bpe.txt.gz").write_bytes(gzip.compress(b"#header\n" + b"a b\n" * 48894))
    write_manifest(folder, {
        "weights_sha256": weights_sha256, "parity": {"fp32": {"passed": True}}, "embed_dim": 32,
        "context_length": 32, "eot_id": 49407, "trim_to_eot": True, "input_name": "input_ids",
        "tokenizer": {"bpe_file": "tokenizer/bpe.txt.gz"},
        "variants": {"fp32": {"file": "text_fp32.onnx", "approved": True}}})
    return folder


def test_register_refuses_a_bundle_of_other_weights(tmp_path, db, model_dir):
    from toolkit.adapters.outputs import weights_sha256

    own = weights_sha256(str(model_dir))
    other = _bundle(tmp_path / "other", "0" * 64)
    result = _toolkit("register", model_dir, "--bundle", other, "--db", db)
    assert result.exit_code == EXIT_BAD_INPUT
    assert "0" * 64 in _said(result) and own in _said(result)
    assert _registered_models() == []
    result = _toolkit("register", model_dir, "--bundle", _bundle(tmp_path / "own", own), "--db", db, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["gate_metrics"]["parity_passed"] == 1.0


@pytest.mark.parametrize(("content", "named"), [
    (b"[]", "object"), (b"5", "object"), (b'{"max_unreviewed_share": "0.5"}', "max_unreviewed_share"),
    (b'{"require_parity": "yes"}', "require_parity"), (b"\xff\xfe", "unreadable"),
])
def test_promote_refuses_bad_threshold_files(tmp_path, db, content, named):
    path = tmp_path / "gates.json"
    path.write_bytes(content)
    result = _toolkit("promote", "--thresholds", path, "--db", db)
    assert result.exit_code == EXIT_BAD_INPUT, result.output
    assert "gates.json" in _said(result) and named in _said(result)


def test_promote_scores_the_regression_set_and_refuses_a_missing_image(tmp_path, db, model_dir):
    image = tmp_path / "a.png"
    write_png(image, (40, 30), (200, 10, 10))
    registered = _toolkit("register", model_dir, "--db", db)
    assert registered.exit_code == 0, registered.output
    record_verdict(open_store(db), _open_item(db, str(image)), "model_error", reviewer="rita")
    result = _toolkit("promote", "--db", db, "--json", "--thresholds", _no_parity(tmp_path))
    assert "regression set (1 item)" in _said(result)
    gate = next(g for g in json.loads(result.stdout)["gates"] if g["name"] == "regression_acc")
    assert gate["candidate"] in (0.0, 100.0)
    image.unlink()
    result = _toolkit("promote", "--db", db)
    assert result.exit_code == EXIT_BAD_INPUT and "a.png" in _said(result)


def _no_parity(tmp_path):
    path = tmp_path / "no-parity.json"
    path.write_text(json.dumps({"require_parity": False, "max_unreviewed_share": 1.0}))
    return path


def test_rollback_then_promote_refuses_the_rolled_back_version(tmp_path, db, model_dir):
    thresholds = _no_parity(tmp_path)
    for _ in range(2):
        assert _toolkit("register", model_dir, "--db", db, "--eval-run", _clean_run()).exit_code == 0
        assert _toolkit("promote", "--db", db, "--thresholds", thresholds).exit_code == 0
    assert _toolkit("rollback", "--db", db).exit_code == 0
    again = _toolkit("promote", "--db", db, "--thresholds", thresholds, "--version", "2")
    assert again.exit_code == EXIT_BAD_INPUT and "rolled back" in _said(again)
    plain = _toolkit("promote", "--db", db, "--thresholds", thresholds)
    assert plain.exit_code == EXIT_BAD_INPUT and "no challenger" in _said(plain)


def _clean_run() -> str:
    from toolkit.tracking import Lineage, tracked_run

    with tracked_run(Lineage(kind="eval")) as run:
        pass
    return run.run_id


def test_review_sync_reports_missing_traces(tmp_path, db, monkeypatch):
    from toolkit.governance.review import log_review_traces
    from toolkit.tracking import Lineage, tracked_run

    with tracked_run(Lineage(kind="eval")) as run:
        item = _open_item(db, str(tmp_path / "a.png"), run=run.run_id)
        store = open_store(db)
        log_review_traces(store, [item])
        store.close()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'other-mlflow.db'}")  # lacks the traces
    result = _toolkit("review", "sync", "--db", db)
    assert result.exit_code == 0, result.output
    assert "1 review item(s) have no trace" in _said(result)
