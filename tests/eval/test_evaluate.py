"""End to end with the tiny random open_clip model: the pipeline's numbers equal a direct computation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.helpers import (
    SC_ITEMS,
    SC_SUBSET_KEYS,
    SCPP_ITEMS,
    run_toolkit,
    sc_subset_items,
    scpp_subset_items,
    write_sugarcrepe,
    write_sugarcrepe_pp,
    write_winoground,
    write_zeroshot,
)
from toolkit.adapters.base import ClipAdapter
from toolkit.adapters.loading import load_model
from toolkit.eval.benchmarks import (
    SUGARCREPE_PP_SUBSETS,
    SUGARCREPE_SUBSETS,
    load_sugarcrepe,
    load_sugarcrepe_pp,
    load_winoground,
    load_zeroshot,
)
from toolkit.eval.evaluate import EvalConfig, evaluate


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
    correct: dict[str, bool] = {}
    for key, item in SC_ITEMS.items():
        i = direct.image(folder / "images" / item["filename"])
        pos = direct.sim(i, direct.text(item["caption"]))
        neg = direct.sim(i, direct.text(item["negative_caption"]))
        _margin_ok((pos, neg))
        correct[key] = pos > neg
    by_hand = {subset: 100 * np.mean([correct[k] for k in sc_subset_items(subset)])
               for subset in SUGARCREPE_SUBSETS}
    groups = {"add": ("add_att", "add_obj"), "replace": ("replace_att", "replace_obj", "replace_rel"),
              "swap": ("swap_att", "swap_obj")}
    # A group is the mean of its subsets' accuracies, not a mean over their items.
    by_hand |= {group: np.mean([by_hand[s] for s in members]) for group, members in groups.items()}
    # The fixture only tells a mix-up apart if the groups differ from each other and from a mean over items.
    assert len({round(by_hand[g], 6) for g in groups}) == 3
    for group, members in groups.items():
        over_items = [correct[k] for s in members for k in sc_subset_items(s)]
        assert by_hand[group] != pytest.approx(100 * np.mean(over_items))
    report = evaluate([tiny_open_clip_spec], [load_sugarcrepe(folder)])
    result = report.results[tiny_open_clip_spec]["sugarcrepe"]
    assert result == {name: {"acc": pytest.approx(value)} for name, value in by_hand.items()}
    assert report.counts[tiny_open_clip_spec]["sugarcrepe"] == {s: len(SC_SUBSET_KEYS[s]) for s in SUGARCREPE_SUBSETS}


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
    from toolkit.eval.report import results_table, write_artifacts

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
    from toolkit.eval.benchmarks import BenchmarkError

    folder = write_sugarcrepe_pp(tmp_path / "scpp")
    (folder / "images" / "blue.png").write_bytes(b"not a png")
    with pytest.raises(BenchmarkError, match=r"blue\.png cannot be read"):
        evaluate([tiny_open_clip_spec], [load_sugarcrepe_pp(folder)])


def test_log_to_mlflow_writes_metrics_to_the_active_run(tmp_path: Path, tiny_open_clip_spec: str) -> None:
    import mlflow

    from toolkit.eval.report import log_to_mlflow, write_artifacts

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


def _huge_png(path: Path, side: int = 20000) -> None:
    """A PNG whose header claims side × side pixels: what PIL refuses as a decompression bomb on open."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0"))
                     + chunk(b"IEND", b""))


def test_huge_image_is_named(tmp_path: Path, tiny_open_clip_spec: str) -> None:
    from toolkit.eval.benchmarks import BenchmarkError

    folder = write_sugarcrepe_pp(tmp_path / "scpp")
    _huge_png(folder / "images" / "blue.png")
    with pytest.raises(BenchmarkError, match=r"blue\.png is too large to decode \(Image size \(400000000 pixels\)"):
        evaluate([tiny_open_clip_spec], [load_sugarcrepe_pp(folder)])


@pytest.fixture
def toolkit_app():  # type: ignore[no-untyped-def]
    from toolkit.cli import app

    return app


def _eval(app, *benchmarks: str, extra: tuple[str, ...] = ()):  # type: ignore[no-untyped-def]

    args = ["eval", "--model", "open_clip:none", "--no-track"]
    for spec in benchmarks:
        args += ["--benchmark", spec]
    result = run_toolkit([*args, *extra])
    return result.exit_code, " ".join(result.stderr.replace("│", " ").split())  # rich wraps and boxes


def _latin1(path: Path, text: str) -> None:
    path.write_bytes(text.replace("a red", "a r\u00e9d").encode("latin-1"))


def test_eval_refuses_files_that_are_not_utf8(tmp_path: Path, toolkit_app) -> None:  # type: ignore[no-untyped-def]
    wino = write_winoground(tmp_path / "wino")
    _latin1(wino / "examples.jsonl", (wino / "examples.jsonl").read_text(encoding="utf-8"))
    code, err = _eval(toolkit_app, f"winoground:{wino}")
    assert code == 3 and "examples.jsonl is not UTF-8 text" in err and "byte 27" in err, err
    manifest = tmp_path / "m.jsonl"
    _latin1(manifest, json.dumps({"image": "wino/images/red.png", "caption": "a red thing"}))
    code, err = _eval(toolkit_app, f"retrieval:{manifest}")
    assert code == 3 and "m.jsonl is not UTF-8 text" in err, err
    scpp = write_sugarcrepe_pp(tmp_path / "scpp")
    _latin1(scpp / "swap_att.json", (scpp / "swap_att.json").read_text(encoding="utf-8"))
    code, err = _eval(toolkit_app, f"sugarcrepe_pp:{scpp}")
    assert code == 3 and "swap_att.json is not UTF-8 text" in err, err


def test_eval_refuses_unreadable_benchmark_files(tmp_path: Path, toolkit_app,  # type: ignore[no-untyped-def]
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    scpp = write_sugarcrepe_pp(tmp_path / "scpp")
    labels = write_zeroshot(tmp_path / "zs")
    # Tests run as root, whom chmod does not stop: a permission error is simulated at the read.
    unreadable = {scpp / "replace_obj.json", labels}
    read_text = Path.read_text

    def denied(self: Path, *args: object, **kwargs: object) -> str:
        if self in unreadable:
            raise PermissionError(13, "Permission denied", str(self))
        return read_text(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "read_text", denied)
    code, err = _eval(toolkit_app, f"sugarcrepe_pp:{scpp}")
    assert code == 3 and "replace_obj.json cannot be read (Permission denied)" in err, err
    code, err = _eval(toolkit_app, f"zeroshot:{labels}")
    assert code == 3 and "labels.json cannot be read (Permission denied)" in err, err
    monkeypatch.undo()
    # A folder where a file belongs is named as such, not skipped and not called missing.
    (scpp / "replace_obj.json").unlink()
    (scpp / "replace_obj.json").mkdir()
    code, err = _eval(toolkit_app, f"sugarcrepe_pp:{scpp}")
    assert code == 3 and "replace_obj.json is a folder, not a file" in err, err
    labels.unlink()
    labels.mkdir()
    code, err = _eval(toolkit_app, f"zeroshot:{labels}")
    assert code == 3 and "labels.json is a folder, not a file" in err, err


def test_eval_checks_out_before_loading_models(tmp_path: Path, toolkit_app,  # type: ignore[no-untyped-def]
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import toolkit.adapters.loading

    def no_model(spec: str) -> None:
        raise AssertionError("a bad --out must be refused before any model loads")

    monkeypatch.setattr(toolkit.adapters.loading, "load_model", no_model)
    scpp = write_sugarcrepe_pp(tmp_path / "scpp")
    taken = tmp_path / "results.txt"
    taken.write_text("not a folder", encoding="utf-8")
    for out in (taken, taken / "eval"):
        code, err = _eval(toolkit_app, f"sugarcrepe_pp:{scpp}", extra=("--out", str(out)))
        assert code == 2 and "--out" in err and f"{taken} is a file, not a folder" in err, err


@pytest.mark.parametrize(("field", "value", "expected"), [
    ("caption", 3, r"text field 'caption' is a number \(3\), not text"),
    ("caption", None, r"text field 'caption' is null, not text"),
    ("caption", ["a", "b"], r"text field 'caption' is a list, not text"),
    ("caption", " ", r"missing or empty text field 'caption'"),
])
def test_text_fields_of_the_wrong_type_say_what_they_are(tmp_path: Path, field: str, value: object,
                                                         expected: str) -> None:
    from toolkit.eval.benchmarks import BenchmarkError

    folder = write_sugarcrepe_pp(tmp_path)
    items = scpp_subset_items("swap_obj")
    items[1] = {**items[1], field: value}
    (folder / "swap_obj.json").write_text(json.dumps(items), encoding="utf-8")
    with pytest.raises(BenchmarkError, match=r"swap_obj\.json item 1: " + expected):
        load_sugarcrepe_pp(folder)


def test_records_that_are_not_objects_are_named(tmp_path: Path) -> None:
    from toolkit.eval.benchmarks import BenchmarkError

    wino = write_winoground(tmp_path / "wino")
    with (wino / "examples.jsonl").open("a", encoding="utf-8") as handle:
        handle.write('[4, "a caption", "another caption", "red", "blue"]\n')
    with pytest.raises(BenchmarkError, match=r"examples\.jsonl line 5: expected a JSON object .*, got a list"):
        load_winoground(wino)
    scpp = write_sugarcrepe_pp(tmp_path / "scpp")
    (scpp / "swap_att.json").write_text(json.dumps([SCPP_ITEMS[0], "an item"]), encoding="utf-8")
    with pytest.raises(BenchmarkError, match=r"swap_att\.json item 1: expected a JSON object .*, got a string"):
        load_sugarcrepe_pp(scpp)


@pytest.mark.parametrize(("classnames", "expected"), [
    (["red thing", None, "green thing"], r"classnames\[1\] is null; each class name must be a non-empty string"),
    (["red thing", 3, "green thing"], r"classnames\[1\] is a number \(3\); each class name"),
    (["red thing", "", "green thing"], r"classnames\[1\] is empty; each class name"),
    (["red thing", "red thing", "green thing"], r"'classnames' has duplicates: 'red thing'"),
])
def test_zeroshot_classnames_must_be_distinct_strings(tmp_path: Path, classnames: list[object],
                                                      expected: str) -> None:
    from toolkit.eval.benchmarks import BenchmarkError

    labels = write_zeroshot(tmp_path)
    data = json.loads(labels.read_text(encoding="utf-8"))
    data["classnames"] = classnames
    data["images"] = [{"path": "red.png", "label": 0}]
    labels.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(BenchmarkError, match=r"labels\.json: " + expected):
        load_zeroshot(labels)
