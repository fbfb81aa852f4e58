"""Benchmark results are keyed by (kind, name): a second benchmark of one kind feeds the gates on every path.

The seam this guards: `toolkit eval` names a repeated kind `domain_2`, and the gates once read the kind as
the text before ':', so register (from the eval JSON) left it out while export approval counted it.
"""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers import sc_subset_items, write_sugarcrepe
from toolkit.eval.benchmarks import SUGARCREPE_SUBSETS
from toolkit.eval.names import BenchmarkKey, benchmark_keys, key_of
from toolkit.eval.summary import gate_metrics_from_eval_json, gate_metrics_from_results


def test_a_second_benchmark_of_one_kind_counts_on_the_register_path(tmp_path: Path) -> None:
    results = {"domain": {"all": {"acc": 80.0}}, "domain_2": {"all": {"acc": 20.0}}}
    path = tmp_path / "eval.json"
    path.write_text(json.dumps({"run": results}), encoding="utf-8")
    assert gate_metrics_from_eval_json(path, "run") == {"composition": 50.0}
    assert gate_metrics_from_results(results) == {"composition": 50.0}


def test_keys_name_repeated_kinds_and_read_back_exactly() -> None:
    kinds = ["domain", "sugarcrepe", "domain", "sugarcrepe_pp", "domain", "sugarcrepe_pp"]
    keys = benchmark_keys(kinds)
    assert [k.name for k in keys] == ["domain", "sugarcrepe", "domain_2", "sugarcrepe_pp", "domain_3",
                                      "sugarcrepe_pp_2"]
    assert [key_of(k.name) for k in keys] == keys
    assert key_of("sugarcrepe_pp") == BenchmarkKey("sugarcrepe_pp", "sugarcrepe_pp")  # not sugarcrepe + "_pp"
    for never_made in ("domain_1", "domain_", "domain:latest:test", "coco", "domain_02"):
        assert key_of(never_made) is None, never_made


def test_approval_and_register_compute_the_same_gates_from_one_evaluation(tiny_open_clip_spec: str,
                                                                         tmp_path: Path) -> None:
    from toolkit.adapters.loading import load_model
    from toolkit.eval.benchmarks import BenchmarkSpec, load_benchmark
    from toolkit.eval.evaluate import Encoder, EvalConfig, evaluate
    from toolkit.export.approval import ApprovalPlan, approval_scores

    first = write_sugarcrepe(tmp_path / "sc1")
    second = write_sugarcrepe(tmp_path / "sc2")
    for subset in SUGARCREPE_SUBSETS:  # a different, smaller item set: its scores differ from the first's
        items = dict(list(sc_subset_items(subset).items())[:1])
        (second / f"{subset}.json").write_text(json.dumps(items), encoding="utf-8")
    benchmarks = (load_benchmark(BenchmarkSpec("sugarcrepe", str(first))),
                  load_benchmark(BenchmarkSpec("sugarcrepe", str(second))))

    results = evaluate([tiny_open_clip_spec], list(benchmarks)).results[tiny_open_clip_spec]
    assert set(results) == {"sugarcrepe", "sugarcrepe_2"}
    path = tmp_path / "eval.json"
    path.write_text(json.dumps({"model": results}), encoding="utf-8")
    registered = gate_metrics_from_eval_json(path, "model")

    plan = ApprovalPlan(benchmarks, (f"sugarcrepe:{first}", f"sugarcrepe:{second}"))
    approved = approval_scores(Encoder(load_model(tiny_open_clip_spec), EvalConfig()), plan)

    entries = [results[name][group]["acc"] for name in ("sugarcrepe", "sugarcrepe_2")
               for group in ("add", "replace", "swap") if group in results[name]]
    assert registered == approved == {"composition": sum(entries) / len(entries)}
