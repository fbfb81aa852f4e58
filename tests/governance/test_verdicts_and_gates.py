"""Review verdicts act on the data without deleting anything; gates refuse regressions, audited."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from tests.helpers import review_failures, write_png
from toolkit.catalog.models import AuditEvent, Caption, Sentence
from toolkit.catalog.review_models import excluded_negative_keys
from toolkit.eval.evaluate import Failure
from toolkit.governance.gates import GateThresholds, ThresholdsError, evaluate_gates
from toolkit.governance.review import (
    ReviewError,
    log_review_traces,
    record_failures,
    record_verdict,
    regression_set,
    review_progress,
    sync_verdicts_from_mlflow,
)


def test_verdicts_change_data_without_deleting(catalog, tmp_path):
    ids = record_failures(catalog, "run-1", "cand", *review_failures(catalog, tmp_path))
    assert record_failures(catalog, "run-1", "cand", *review_failures(catalog, tmp_path)) == ids  # idempotent
    record_verdict(catalog, ids[0], "caption_wrong", reviewer="rita", corrected_caption="A red cube. It is small.")
    record_verdict(catalog, ids[1], "model_error", reviewer="rita")
    record_verdict(catalog, ids[2], "negative_true", reviewer="rita", note="tiny and small are synonyms")
    with catalog.session() as session:
        captions = {c.text: c for c in session.scalars(select(Caption))}
        assert captions["A blue cube. It is small."].status == "superseded"
        new = captions["A red cube. It is small."]
        assert new.status == "active" and new.supersedes_id == captions["A blue cube. It is small."].id
        tagged = list(session.scalars(
            select(Sentence).where(Sentence.caption_id == new.id).order_by(Sentence.position)))
        assert [s.text for s in tagged] == ["A red cube.", "It is small."] and tagged[0].pos[1] == "ADJ"
        actions = [e.action for e in session.scalars(select(AuditEvent))]
    assert actions.count("review.verdict") == 3
    assert excluded_negative_keys(catalog) == {"a tiny cube"}
    assert regression_set(catalog) == [{"image_path": str(tmp_path / "a.png"), "positive": "A red ball left of a cube.",
                                        "confuser": "A cube left of a red ball.", "benchmark": "domain",
                                        "confuser_kind": "text", "review_item": ids[1]}]
    assert review_progress(catalog, "run-1") == {
        "items": 3, "reviewed": 3, "open": 0, "unreviewed_share": 0.0,
        "verdicts": {"caption_wrong": 1, "model_error": 1, "negative_true": 1}}


def test_excluded_negative_is_never_generated_again(catalog, tmp_path):
    from toolkit.negatives.generators import TaggedSentence, hard_negative_swap_within

    ids = record_failures(catalog, "run-1", "cand", *review_failures(catalog, tmp_path))
    sentence = TaggedSentence(["a", "red", "cube", "and", "a", "blue", "ball"],
                              ["DET", "ADJ", "NOUN", "CCONJ", "DET", "ADJ", "NOUN"])
    import random

    produced = hard_negative_swap_within(sentence, random.Random(0))
    assert produced is not None
    failure = Failure("domain", "all", "acc", "9", str(tmp_path / "a.png"), sentence.text, produced.text, 0.1, 0.2)
    (item,) = record_failures(catalog, "run-2", "cand", [failure])
    record_verdict(catalog, item, "negative_true", reviewer="rita")
    excluded = excluded_negative_keys(catalog)
    for seed in range(20):
        again = hard_negative_swap_within(sentence, random.Random(seed), excluded=excluded)
        assert again is None or again.text != produced.text
    assert ids


def test_bad_verdicts_are_refused(catalog, tmp_path):
    (item, *_) = record_failures(catalog, "run-1", "cand", *review_failures(catalog, tmp_path))
    with pytest.raises(ReviewError, match="unknown verdict"):
        record_verdict(catalog, item, "looks_fine")
    with pytest.raises(ReviewError, match="corrected caption"):
        record_verdict(catalog, item, "caption_wrong")
    with pytest.raises(ReviewError, match="does not exist"):
        record_verdict(catalog, 999, "ambiguous")


def test_verdicts_entered_in_mlflow_are_synced(catalog, tmp_path, monkeypatch):
    import mlflow
    from mlflow.entities import AssessmentSource

    from toolkit.tracking import Lineage, tracked_run

    monkeypatch.setenv("TOOLKIT_WORKSPACE", str(tmp_path / "ws"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with tracked_run(Lineage(kind="eval")) as run:
        ids = record_failures(catalog, run.run_id, "cand", *review_failures(catalog, tmp_path))
        assert log_review_traces(catalog, ids) == 3
    traces = mlflow.search_traces(locations=[mlflow.get_run(run.run_id).info.experiment_id], run_id=run.run_id,
                                  return_type="list")
    assert len(traces) == 3
    by_item = {t.data.spans[0].attributes["toolkit.review_item"]: t.info.trace_id for t in traces}
    human = AssessmentSource(source_type="HUMAN", source_id="rita@example.com")
    mlflow.log_feedback(trace_id=by_item[ids[1]], name="verdict", value="model_error", source=human)
    mlflow.log_feedback(trace_id=by_item[ids[0]], name="corrected_caption", value="A red cube.", source=human)
    mlflow.log_feedback(trace_id=by_item[ids[0]], name="verdict", value="caption_wrong", source=human)
    mlflow.log_feedback(trace_id=by_item[ids[2]], name="verdict", value="bogus", source=human)
    first = sync_verdicts_from_mlflow(catalog, run.run_id)
    assert (first.recorded, first.missing_traces) == (2, 0)
    assert len(first.invalid) == 1 and "bogus" in first.invalid[0] and f"item {ids[2]}" in first.invalid[0]
    again = sync_verdicts_from_mlflow(catalog, run.run_id)  # idempotent: the bad feedback is reported once
    assert (again.recorded, again.invalid, again.missing_traces) == (0, (), 0)
    progress = review_progress(catalog, run.run_id)
    assert progress["reviewed"] == 2 and progress["open"] == 1
    with catalog.session() as session:
        assert session.scalar(select(Caption.text).where(Caption.status == "active")) == "A red cube."
        invalid = [e.details for e in session.scalars(select(AuditEvent).where(
            AuditEvent.action == "review.invalid_feedback"))]
    assert len(invalid) == 1 and invalid[0]["assessment_id"]


def test_sync_against_a_store_without_the_traces_says_so(catalog, tmp_path, monkeypatch):
    from toolkit.tracking import Lineage, tracked_run

    monkeypatch.setenv("TOOLKIT_WORKSPACE", str(tmp_path / "ws"))
    with tracked_run(Lineage(kind="eval")) as run:
        ids = record_failures(catalog, run.run_id, "cand", *review_failures(catalog, tmp_path))
        log_review_traces(catalog, ids)
    # Another, empty tracking store (mlflow.set_tracking_uri also exports MLFLOW_TRACKING_URI).
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'other-mlflow.db'}")
    result = sync_verdicts_from_mlflow(catalog)
    assert (result.recorded, result.invalid, result.missing_traces) == (0, (), 3)


def test_gates_compare_against_the_champion():
    champion = {"composition": 70.0, "retrieval_r5": 80.0, "zeroshot_top1": 80.0, "parity_passed": 1.0}
    better = {"composition": 85.0, "retrieval_r5": 79.6, "zeroshot_top1": 79.1, "parity_passed": 1.0,
              "unreviewed_share": 0.1}
    assert evaluate_gates(better, champion, GateThresholds()).passed
    worse_retrieval = {**better, "retrieval_r5": 79.4}
    report = evaluate_gates(worse_retrieval, champion, GateThresholds())
    assert [g.name for g in report.failed()] == ["retrieval_r5"]
    assert not evaluate_gates({**better, "parity_passed": 0.0}, champion, GateThresholds()).passed
    assert not evaluate_gates({**better, "unreviewed_share": 0.5}, champion, GateThresholds()).passed
    assert not evaluate_gates(better, champion, GateThresholds(composition_margin=20.0)).passed
    assert not evaluate_gates({**better, "zeroshot_top1": 78.9}, champion, GateThresholds()).passed
    assert evaluate_gates(better, None, GateThresholds()).passed  # first champion
    unknown_share = {k: v for k, v in better.items() if k != "unreviewed_share"}
    report = evaluate_gates(unknown_share, champion, GateThresholds())
    assert [g.name for g in report.failed()] == ["unreviewed_share"]
    assert "no value" in report.failed()[0].rule


def test_a_regression_set_makes_the_regression_score_required():
    candidate = {"composition": 85.0, "retrieval_r5": 80.0, "zeroshot_top1": 80.0, "parity_passed": 1.0,
                 "unreviewed_share": 0.0}
    # No champion, no value: nothing to compare, unless a regression set exists.
    assert evaluate_gates(candidate, None, GateThresholds()).passed
    report = evaluate_gates(candidate, None, GateThresholds(), required=frozenset({"regression_acc"}))
    assert [g.name for g in report.failed()] == ["regression_acc"] and "no value" in report.failed()[0].rule
    assert evaluate_gates({**candidate, "regression_acc": 0.0}, None, GateThresholds(),
                          required=frozenset({"regression_acc"})).passed


@pytest.mark.parametrize("content", [b"[]", b"5", b'{"max_unreviewed_share": "0.5"}', b'{"require_parity": "yes"}',
                                     b'{"zeroshot_tolerance": NaN}', b'{"require_parity": 1}', b"\xff\xfe{"])
def test_bad_threshold_files_are_refused_by_name(tmp_path, content):
    path = tmp_path / "gates.json"
    path.write_bytes(content)
    with pytest.raises(ThresholdsError, match=r"gates\.json"):
        GateThresholds.from_file(path)


def test_threshold_files_accept_numbers_and_booleans(tmp_path):
    path = tmp_path / "gates.json"
    path.write_text(json.dumps({"max_unreviewed_share": 1, "require_parity": False}))
    assert GateThresholds.from_file(path) == GateThresholds(max_unreviewed_share=1.0, require_parity=False)


def test_refusal_is_audited_and_champion_unchanged_then_rollback(catalog, tmp_path, monkeypatch, model_dir):
    from mlflow.tracking import MlflowClient

    from toolkit.governance.registry import RegistryError, aliases, promote, register_candidate, rollback

    monkeypatch.setenv("TOOLKIT_WORKSPACE", str(tmp_path / "ws"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    good = {"composition": 70.0, "retrieval_r5": 80.0, "zeroshot_top1": 80.0, "parity_passed": 1.0,
            "unreviewed_share": 0.0}
    v1 = register_candidate(model_dir, "clic-text", good)
    assert promote(catalog, "clic-text", v1, GateThresholds()).promoted
    v2 = register_candidate(model_dir, "clic-text", {**good, "composition": 90.0, "retrieval_r5": 60.0})
    assert aliases("clic-text") == {"challenger": v2, "champion": v1}
    refused = promote(catalog, "clic-text", v2, GateThresholds())
    assert not refused.promoted and [g.name for g in refused.report.failed()] == ["retrieval_r5"]
    assert aliases("clic-text")["champion"] == v1
    with catalog.session() as session:
        events = [(e.action, e.subject, e.details) for e in session.scalars(select(AuditEvent).order_by(AuditEvent.id))
                  if e.action.startswith("registry.")]
    assert [e[:2] for e in events] == [("registry.promote", f"clic-text/{v1}"), ("registry.refuse", f"clic-text/{v2}")]
    assert events[1][2]["passed"] is False and events[1][2]["champion_before"] == v1
    tags = MlflowClient().get_model_version("clic-text", v2).tags
    assert any(k.startswith("toolkit.refusal.") for k in tags)

    v3 = register_candidate(model_dir, "clic-text", {**good, "composition": 90.0})
    assert promote(catalog, "clic-text", v3, GateThresholds()).promoted
    assert aliases("clic-text")["champion"] == v3
    assert rollback(catalog, "clic-text") == (v3, v1)
    assert aliases("clic-text") == {"challenger": None, "champion": v1}  # v3 is no longer a candidate
    assert "toolkit.rolled_back" in MlflowClient().get_model_version("clic-text", v3).tags
    with pytest.raises(RegistryError, match=r"rolled back.*register it again"):
        promote(catalog, "clic-text", v3, GateThresholds())
    assert aliases("clic-text")["champion"] == v1


def test_register_refuses_broken_model_folders(tmp_path, model_dir):
    from toolkit.governance.registry import RegistryError, register_candidate

    empty_card = tmp_path / "empty-card"
    empty_card.mkdir()
    (empty_card / "model.json").write_text("{}")
    with pytest.raises(RegistryError, match="empty-card"):
        register_candidate(empty_card, "clic-text", {})
    (model_dir / json.loads((model_dir / "model.json").read_text())["weights"]).unlink()
    with pytest.raises(RegistryError, match="weights"):
        register_candidate(model_dir, "clic-text", {})


def test_unreviewed_share_needs_a_known_evaluation_run(catalog, tmp_path):
    from toolkit.governance.registry import RegistryError, unreviewed_share_of_run
    from toolkit.tracking import Lineage, tracked_run

    with pytest.raises(RegistryError, match="no-such-run"):
        unreviewed_share_of_run(catalog, "no-such-run")
    with tracked_run(Lineage(kind="eval")) as clean:  # a real evaluation without failures
        pass
    assert unreviewed_share_of_run(catalog, clean.run_id) == 0.0
    record_failures(catalog, "run-1", "cand", *review_failures(catalog, tmp_path))  # items alone identify the run
    assert unreviewed_share_of_run(catalog, "run-1") == 1.0


def test_regression_set_follows_the_latest_verdict_without_duplicates(catalog, tmp_path):
    ids = record_failures(catalog, "run-1", "cand", *review_failures(catalog, tmp_path))
    failures, caption_ids = review_failures(catalog, tmp_path)
    same_item_again = record_failures(catalog, "run-2", "cand", failures[1:2], caption_ids)
    record_verdict(catalog, ids[1], "model_error", reviewer="rita")
    record_verdict(catalog, ids[1], "model_error", reviewer="sam")
    record_verdict(catalog, same_item_again[0], "model_error", reviewer="sam")
    record_verdict(catalog, ids[2], "model_error", reviewer="rita")
    assert [r["positive"] for r in regression_set(catalog)] == ["A red ball left of a cube.", "A small cube."]
    record_verdict(catalog, ids[2], "ambiguous", reviewer="sam")  # the later verdict wins; nothing is deleted
    assert [r["positive"] for r in regression_set(catalog)] == ["A red ball left of a cube."]
    record_verdict(catalog, ids[2], "model_error", reviewer="rita")
    assert len(regression_set(catalog)) == 2


def _regression_items(image: str, other_image: str) -> list[dict]:
    # Each pair asks the same question both ways round: exactly one of the two is right, whatever the model.
    return [
        {"image_path": image, "positive": "a red cube", "confuser": "a blue ball", "confuser_kind": "text"},
        {"image_path": image, "positive": "a blue ball", "confuser": "a red cube", "confuser_kind": "text"},
        {"image_path": image, "positive": "a red cube", "confuser": other_image, "confuser_kind": "image"},
        {"image_path": other_image, "positive": "a red cube", "confuser": image, "confuser_kind": "image"},
        {"image_path": image, "positive": "a red cube", "confuser": "a red cube", "confuser_kind": "text"},  # tie
    ]


def test_regression_accuracy_scores_both_directions_and_counts_ties_wrong(tmp_path, model_dir):
    from toolkit.governance.regression import RegressionSetError, regression_accuracy, regression_benchmark

    write_png(tmp_path / "b.png", (40, 30), (10, 10, 200))
    write_png(tmp_path / "a.png", (40, 30), (200, 10, 10))
    items = _regression_items(str(tmp_path / "a.png"), str(tmp_path / "b.png"))
    assert regression_accuracy(str(model_dir), regression_benchmark(items)) == pytest.approx(40.0)
    missing = [{**items[0], "image_path": str(tmp_path / "gone.png"), "review_item": 7}]
    with pytest.raises(RegressionSetError, match=r"review item 7.*gone\.png"):
        regression_benchmark(missing)
    with pytest.raises(RegressionSetError, match=r"nope\.png"):
        regression_benchmark([{**items[2], "confuser": str(tmp_path / "nope.png")}])


def test_promote_scores_the_regression_set_on_the_registered_model(catalog, tmp_path, monkeypatch, model_dir):
    from toolkit.governance.registry import promote, register_candidate
    from toolkit.governance.regression import regression_scorer

    monkeypatch.setenv("TOOLKIT_WORKSPACE", str(tmp_path / "ws"))
    assert regression_scorer(catalog) is None  # no reviewed model errors yet: nothing to score
    good = {"composition": 70.0, "retrieval_r5": 80.0, "zeroshot_top1": 80.0, "parity_passed": 1.0,
            "unreviewed_share": 0.0}
    version = register_candidate(model_dir, "clic-text", good)
    ids = record_failures(catalog, "run-1", "cand", *review_failures(catalog, tmp_path))
    record_verdict(catalog, ids[1], "model_error", reviewer="rita")
    # A regression set exists: a promotion that does not score it is refused.
    unscored = promote(catalog, "clic-text", version, GateThresholds())
    assert [g.name for g in unscored.report.failed()] == ["regression_acc"]
    scorer = regression_scorer(catalog)
    assert scorer is not None
    promoted = promote(catalog, "clic-text", version, GateThresholds(), regression_accuracy=scorer)
    gate = next(g for g in promoted.report.gates if g.name == "regression_acc")
    assert promoted.promoted and gate.candidate in (0.0, 100.0)


def test_gate_metrics_from_eval_results():
    from toolkit.eval.summary import gate_metrics_from_results

    results = {"domain": {"swap": {"acc": 80.0}, "all": {"acc": 75.0}},
               "sugarcrepe_pp": {"average": {"itt": 65.0, "tot": 60.0}},
               "retrieval": {"text_to_image": {"r1": 30.0, "r5": 70.0}, "image_to_text": {"r5": 80.0}},
               "zeroshot": {"all": {"top1": 55.0}}}
    assert gate_metrics_from_results(results) == {"composition": 70.0, "retrieval_r5": 75.0, "zeroshot_top1": 55.0}


def test_wise_ft_alpha_is_the_best_composition_that_keeps_retrieval_and_zero_shot():
    from toolkit.governance.gates import choose_blend

    base = {"composition": 50.0, "retrieval_r5": 40.0, "zeroshot_top1": 60.0}
    blends = {
        0.25: {"composition": 55.0, "retrieval_r5": 41.0, "zeroshot_top1": 60.0},
        0.5: {"composition": 62.0, "retrieval_r5": 40.0, "zeroshot_top1": 59.0},  # exactly at the tolerance
        0.75: {"composition": 70.0, "retrieval_r5": 42.0, "zeroshot_top1": 58.5},  # forgets too much
        1.0: {"composition": 75.0, "retrieval_r5": 39.0, "zeroshot_top1": 55.0},
    }
    assert choose_blend(base, blends) == 0.5
    assert choose_blend(base, blends, GateThresholds(zeroshot_tolerance=2.0)) == 0.75
    tie = {0.5: blends[0.5], 0.25: {**blends[0.5]}}
    assert choose_blend(base, tie) == 0.25
    worse = {a: {**m, "composition": 49.0} for a, m in blends.items()}
    assert choose_blend(base, worse) is None


def test_gate_standard_errors_come_from_the_pairing_and_bound_averaged_gates():
    from toolkit.eval.summary import gate_standard_errors

    results = {"retrieval": {"text_to_image": {"r5": 70.0}, "image_to_text": {"r5": 80.0}},
               "zeroshot": {"all": {"top1": 55.0}},
               "sugarcrepe_pp": {"swap_att": {"itt": 60.0}, "average": {"itt": 60.0}}}
    paired = {"retrieval": {"text_to_image": {"r5": {"standard_error": 1.0}},
                            "image_to_text": {"r5": {"standard_error": 3.0}}},
              "zeroshot": {"all": {"top1": {"standard_error": 0.7}}},
              "sugarcrepe_pp": {"swap_att": {"itt": {"standard_error": 2.0}}}}
    # Retrieval averages two directions: the mean of their errors. The SugarCrepe++ average has no item
    # pairing of its own, so composition gets no standard error rather than a wrong one.
    assert gate_standard_errors(results, paired) == {"retrieval_r5": 2.0, "zeroshot_top1": 0.7}
    del paired["retrieval"]["image_to_text"]
    assert gate_standard_errors(results, paired) == {"zeroshot_top1": 0.7}


def test_wise_ft_alpha_clears_the_forgetting_tolerances_by_its_standard_errors():
    from toolkit.governance.gates import choose_blend

    base = {"composition": 50.0, "retrieval_r5": 40.0, "zeroshot_top1": 60.0}
    blends = {0.7: {"composition": 60.0, "retrieval_r5": 45.0, "zeroshot_top1": 60.0},
              0.8: {"composition": 66.0, "retrieval_r5": 45.0, "zeroshot_top1": 59.3}}
    errors = {0.7: {"retrieval_r5": 2.0, "zeroshot_top1": 0.6}, 0.8: {"retrieval_r5": 2.0, "zeroshot_top1": 0.7}}
    assert choose_blend(base, blends, standard_errors=errors) == 0.8  # no confidence asked: a point gate
    # 59.3 - 0.7 = 58.6 < 60 - 1: 0.8 is within tolerance only by its noise.
    assert choose_blend(base, blends, standard_errors=errors, confidence_z=1.0) == 0.7
    assert choose_blend(base, blends, standard_errors=errors, confidence_z=2.0) is None  # 60 - 1.2 < 59
    # A blend whose forgetting gates have no standard error cannot show it clears them.
    assert choose_blend(base, blends, standard_errors={0.8: errors[0.8]}, confidence_z=1.0) is None
    # Composition is what the blend maximises, not a tolerance: its noise does not move the choice.
    assert choose_blend(base, blends, standard_errors={a: {**e, "composition": 50.0} for a, e in errors.items()},
                        confidence_z=1.0) == 0.7
    with pytest.raises(ValueError, match="confidence_z"):
        choose_blend(base, blends, confidence_z=-1.0)
