"""`toolkit register --eval-json DIR/results.json` accepts the file `toolkit eval --out DIR` writes (the README's
flow), as well as the `toolkit eval --json` stdout format."""

from __future__ import annotations

import json

from tests.helpers import run_toolkit
from toolkit.eval.evaluate import EvalReport
from toolkit.eval.report import write_artifacts
from toolkit.eval.summary import gate_metrics_from_results


def test_register_accepts_the_results_json_of_eval_out(tmp_path, model_dir):
    results = {"base": {"domain": {"all": {"acc": 55.0}}}, str(model_dir): {"domain": {"all": {"acc": 62.5}}}}
    write_artifacts(EvalReport(results=results, failures={}, counts={}), tmp_path / "eval1")
    assert set(json.loads((tmp_path / "eval1" / "results.json").read_text())) > {"results", "models"}
    db = f"sqlite:///{tmp_path / 'catalog.db'}"
    registered = run_toolkit(["register", str(model_dir), "--eval-json", str(tmp_path / "eval1" / "results.json"),
                              "--db", db, "--json"])
    assert registered.exit_code == 0, registered.output
    expected = gate_metrics_from_results(results[str(model_dir)])
    assert json.loads(registered.stdout)["gate_metrics"] == expected
    assert expected  # the gate metric was found, not an empty dict
