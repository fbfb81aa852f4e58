"""End to end with the tiny random open_clip model: the pipeline's numbers equal a direct computation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.eval_fixtures import (
    SC_ITEMS,
    SCPP_ITEMS,
    scpp_subset_items,
    write_sugarcrepe,
    write_sugarcrepe_pp,
    write_winoground,
    write_zeroshot,
)
from toolkit.adapters.base import ClipAdapter
from toolkit.adapters.loading import load_model
from toolkit.benchmarks import (
    SUGARCREPE_PP_SUBSETS,
    load_sugarcrepe,
    load_sugarcrepe_pp,
    load_winoground,
    load_zeroshot,
)
from toolkit.evaluate import EvalConfig, evaluate


class Direct:
    """One item at a time, no batching, no caching: the reference the pipeline must match."""

    def __init__(self, spec: str) -> None:
        self.adapter: ClipAdapter = load_model(spec)
        self.adapter.model.eval()
        self.transform = self.adapter.image_transform()

    @torch.no_grad()
    def image(self, path: Path) -> torch.Tensor:
        pixels = self.transform(Image.open(path).convert("RGB"))[None]
        return self.adapter.encode_image(pixels, normalize=True)[0].double()

    @torch.no_grad()
    def text(self, text: str) -> torch.Tensor:
        return self.adapter.encode_text(self.adapter.tokenize([text]), normalize=True)[0].double()

    def sim(self, a: torch.Tensor, b: torch.Tensor) -> float:
        return float(a @ b)


def _margin_ok(*pairs: tuple[float, float]) -> None:
    # The comparison must not hinge on float noise between batched and single-item encoding.
    for a, b in pairs:
        assert abs(a - b) > 1e-5


def test_sugarcrepe_pp_end_to_end_matches_direct_computation(tmp_path: Path,
                                                             tiny_open_clip_spec: str) -> None:
    folder = write_sugarcrepe_pp(tmp_path / "scpp")
    direct = Direct(tiny_open_clip_spec)
    itt: dict[str, bool] = {}
    tot: dict[str, bool] = {}
    for item in SCPP_ITEMS:
        i = direct.image(folder / "images" / item["filename"])
        p1, p2, n = (direct.text(item[k]) for k in ("caption", "caption2", "negative_caption"))
        s = direct.sim
        _margin_ok((s(i, p1), s(i, n)), (s(i, p2), s(i, n)), (s(p1, p2), s(p1, n)), (s(p1, p2), s(p2, n)))
        itt[item["id"]] = s(i, p1) > s(i, n) and s(i, p2) > s(i, n)
        tot[item["id"]] = s(p1, p2) > s(p1, n) and s(p1, p2) > s(p2, n)
    # The fixture is only a real check if the model gets some items right and some wrong.
    assert 0 < sum(itt.values()) < len(itt) and 0 < sum(tot.values()) < len(tot)
    report = evaluate([tiny_open_clip_spec], [load_sugarcrepe_pp(folder)], EvalConfig(batch_size=2))
    result = report.results[tiny_open_clip_spec]["sugarcrepe_pp"]
    assert set(result) == {*SUGARCREPE_PP_SUBSETS, "average"}
    for subset in SUGARCREPE_PP_SUBSETS:
        ids = [item["id"] for item in scpp_subset_items(subset)]
        assert result[subset] == pytest.approx({"itt": 100 * np.mean([itt[k] for k in ids]),
                                                "tot": 100 * np.mean([tot[k] for k in ids])})
    mean_itt = np.mean([result[s]["itt"] for s in SUGARCREPE_PP_SUBSETS])
    assert result["average"]["itt"] == pytest.approx(mean_itt)
    # Every wrong item is listed for review, with the negative as the confuser.
    failures = [f for f in report.failures[tiny_open_clip_spec]
                if f.subset == "swap_att" and f.metric == "itt"]
    swap_att_ids = [item["id"] for item in scpp_subset_items("swap_att")]
    assert sorted(f.item_id for f in failures) == [str(k) for k in swap_att_ids if not itt[k]]
    for failure in failures:
        item = SCPP_ITEMS[int(failure.item_id)]
        assert failure.confuser == item["negative_caption"]
        assert failure.positive in (item["caption"], item["caption2"])
        assert failure.positive_score <= failure.confuser_score + 1e-6
        assert Path(failure.image).name == item["filename"]


def test_sugarcrepe_accuracy_and_group_averages(tmp_path: Path, tiny_open_clip_spec: str) -> None:
    folder = write_sugarcrepe(tmp_path / "sc")
    direct = Direct(tiny_open_clip_spec)
    correct = []
    for item in SC_ITEMS.values():
        i = direct.image(folder / "images" / item["filename"])
        pos = direct.sim(i, direct.text(item["caption"]))
        neg = direct.sim(i, direct.text(item["negative_caption"]))
        _margin_ok((pos, neg))
        correct.append(pos > neg)
    report = evaluate([tiny_open_clip_spec], [load_sugarcrepe(folder)])
    result = report.results[tiny_open_clip_spec]["sugarcrepe"]
    for subset in ("add_att", "replace_rel", "swap_obj", "add", "replace", "swap"):
        assert result[subset] == {"acc": pytest.approx(100 * np.mean(correct))}
    assert report.counts[tiny_open_clip_spec]["sugarcrepe"]["add_obj"] == len(SC_ITEMS)


def test_winoground_and_zeroshot_match_direct_computation(tmp_path: Path, tiny_open_clip_spec: str) -> None:
    wino = load_winoground(write_winoground(tmp_path / "wino"))
    zero = load_zeroshot(write_zeroshot(tmp_path / "zs"))
    direct = Direct(tiny_open_clip_spec)
    text_ok, image_ok = [], []
    for ex in wino.items:
        i0, i1 = direct.image(ex.image_0), direct.image(ex.image_1)
        c0, c1 = direct.text(ex.caption_0), direct.text(ex.caption_1)
        s = direct.sim
        text_ok.append(s(c0, i0) > s(c1, i0) and s(c1, i1) > s(c0, i1))
        image_ok.append(s(c0, i0) > s(c0, i1) and s(c1, i1) > s(c1, i0))
    classes = torch.stack([
        torch.nn.functional.normalize(
            torch.stack([direct.text(t.replace("{}", c)) for t in zero.templates]).mean(0), dim=0)
        for c in zero.classnames])
    predicted = [int(torch.argmax(classes @ direct.image(p))) for p in zero.images]
    report = evaluate([tiny_open_clip_spec], [wino, zero])
    result = report.results[tiny_open_clip_spec]
    group = [t and i for t, i in zip(text_ok, image_ok, strict=True)]
    assert 0 < sum(group) < sum(text_ok) < len(text_ok)  # the fixture tells the three scores apart
    assert result["winoground"]["all"] == pytest.approx(
        {"text": 100 * np.mean(text_ok), "image": 100 * np.mean(image_ok), "group": 100 * np.mean(group)})
    assert result["zeroshot"]["all"]["top1"] == pytest.approx(
        100 * np.mean([p == label for p, label in zip(predicted, zero.labels, strict=True)]))


def test_two_models_side_by_side_with_artifacts(tmp_path: Path, tiny_open_clip_spec: str,
                                                tiny_config_path: Path) -> None:
    from toolkit.adapters.open_clip_adapter import OpenClipAdapter
    from toolkit.adapters.weights import save_state_dict_file
    from toolkit.eval_report import results_table, write_artifacts

    torch.manual_seed(1)
    other = tmp_path / "other.safetensors"
    save_state_dict_file(OpenClipAdapter.create(str(tiny_config_path), None).model.state_dict(), other)
    second = f"open_clip:{tiny_config_path}@{other}"
    folder = write_sugarcrepe_pp(tmp_path / "scpp")
    report = evaluate([tiny_open_clip_spec, second], [load_sugarcrepe_pp(folder)])
    assert list(report.results) == [tiny_open_clip_spec, second]
    written = write_artifacts(report, tmp_path / "out")
    assert [p.name for p in written] == ["results.json", "failures.jsonl", "sugarcrepe_pp.png"]
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["results"] == report.results
    lines = (tmp_path / "out" / "failures.jsonl").read_text().splitlines()
    assert len(lines) == sum(len(f) for f in report.failures.values())
    with Image.open(tmp_path / "out" / "sugarcrepe_pp.png") as plot:
        assert plot.size[0] > 100
    table = results_table(report.results)
    assert len(table.columns) == 5 and table.row_count == 12  # 6 subsets × (itt, tot)
    # With the pairing, the second model's cells carry its change from the first and that change's error.
    paired = saved["paired"][second]["sugarcrepe_pp"]["swap_obj"]["itt"]
    columns = results_table(report.results, saved["paired"]).columns
    row = list(zip(columns[1].cells, columns[2].cells, strict=True)).index(("swap_obj", "itt"))
    value = report.results[second]["sugarcrepe_pp"]["swap_obj"]["itt"]
    cell = str(list(columns[4].cells)[row]).replace("[bold]", "").replace("[/]", "")  # the best is in bold
    assert cell == f"{value:.2f} ({paired['delta']:+.2f} ± {paired['standard_error']:.2f})"
    before = report.results[tiny_open_clip_spec]["sugarcrepe_pp"]["swap_obj"]["itt"]
    assert paired["delta"] == pytest.approx(value - before)
    assert "±" not in list(columns[3].cells)[row]  # the first model is what the others are paired with


def test_unreadable_image_is_named(tmp_path: Path, tiny_open_clip_spec: str) -> None:
    from toolkit.benchmarks import BenchmarkError

    folder = write_sugarcrepe_pp(tmp_path / "scpp")
    (folder / "images" / "blue.png").write_bytes(b"not a png")
    with pytest.raises(BenchmarkError, match=r"blue\.png cannot be read"):
        evaluate([tiny_open_clip_spec], [load_sugarcrepe_pp(folder)])


def test_log_to_mlflow_writes_metrics_to_the_active_run(tmp_path: Path, tiny_open_clip_spec: str) -> None:
    import mlflow

    from toolkit.eval_report import log_to_mlflow, write_artifacts

    folder = write_sugarcrepe(tmp_path / "sc")
    report = evaluate([tiny_open_clip_spec], [load_sugarcrepe(folder)])
    out = tmp_path / "out"
    write_artifacts(report, out)
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    with pytest.raises(RuntimeError, match="active MLflow run"):
        log_to_mlflow(report, tiny_open_clip_spec, out)
    experiment = mlflow.create_experiment("eval-test", artifact_location=(tmp_path / "artifacts").as_uri())
    with mlflow.start_run(experiment_id=experiment) as run:
        log_to_mlflow(report, tiny_open_clip_spec, out)
    logged = mlflow.get_run(run.info.run_id).data.metrics
    assert logged["eval/sugarcrepe/swap/acc"] == pytest.approx(
        report.results[tiny_open_clip_spec]["sugarcrepe"]["swap"]["acc"])
    assert len(logged) == 10  # 7 subsets + 3 group averages
    assert (tmp_path / "artifacts" / run.info.run_id / "artifacts" / "eval" / "results.json").is_file()
