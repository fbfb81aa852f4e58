"""`toolkit demo run` end to end on a small generated domain: every stage runs, and a re-run reuses them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from toolkit.demo.chain import KIND_TARGETS, WISE_ALPHAS, DemoSettings, run_demo, summarise
from toolkit.demo.generate import GenerateConfig
from toolkit.demo.kinds import KINDS


@pytest.mark.slow
def test_demo_chain_runs_and_reuses_its_steps(tmp_path: Path) -> None:
    config = tmp_path / "clic.toml"
    config.write_text('seed = 0\nbatch_size = 8\nmax_steps = 2\nlr = 1e-4\nmin_lr = 1e-6\nprogress = false\n')
    settings = DemoSettings(
        workspace=tmp_path / "ws", db_url=f"sqlite:///{tmp_path / 'demo.db'}", train_config=config,
        # seed 5: not the demo's seed 0, so no item of the demo's test sets is scored here
        generate=GenerateConfig(seed=5, pretrain_images=0, domain_images=80, eval_two_object_images=12,
                                zeroshot_images_per_class=1, validation_two_object_images=8,
                                validation_zeroshot_images_per_class=1, kind_items=6, validation_kind_items=4))
    import toolkit.demo.chain as chain

    scored_sets: list[Path] = []  # which held-out group each evaluation drew its sets from, in order
    real_held_out = chain.held_out_benchmarks

    def recording(held_out):  # type: ignore[no-untyped-def]
        scored_sets.append(held_out.root)
        return real_held_out(held_out)

    said: list[str] = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(chain, "held_out_benchmarks", recording)
        summary = run_demo(settings, say=said.append)
    # WiSE-FT's alpha is chosen on the validation sets; the test sets are scored once, afterwards.
    data = settings.workspace / "demo" / "data"
    assert scored_sets == [chain.paths_under(data).validation.root, chain.paths_under(data).test.root]
    assert set(summary["delta"]) == {"swap_att_acc", "swap_att_itt", "swap_att_tot", "retrieval_r5",
                                     "zeroshot_top1", "domain_acc", *(f"kind_{kind}_itt" for kind in KINDS)}
    # every kind scored on its own items, and a target checked for each kind that has one
    per_kind = json.loads((Path(summary["results_folder"]) / "results.json").read_text())["counts"]
    base_counts = per_kind[str(settings.workspace / "demo" / "base")]
    assert base_counts["sugarcrepe_pp_2"] == {"swap_att": 6, "replace_att": 6, "swap_obj": 6, "replace_rel": 6}
    assert base_counts["sugarcrepe_pp_3"] == {"swap_att": 6}
    assert {f"kind_{kind}_itt_gain>={target:g}" for kind, target in KIND_TARGETS.items()} <= set(summary["targets_met"])
    assert summary["delta"]["zeroshot_top1"] == pytest.approx(
        summary["candidate"]["zeroshot_top1"] - summary["base"]["zeroshot_top1"], abs=0.01)
    assert set(summary["delta_standard_error"]) == set(summary["delta"])
    candidate = Path(summary["results_folder"])
    assert (candidate / "summary.json").is_file() and (candidate / "results.json").is_file()
    # The artifact pairs every later model with the base on the same items.
    paired = json.loads((candidate / "results.json").read_text())["paired"]
    zeroshot = paired[summary["trained"]]["zeroshot"]["all"]["top1"]
    assert zeroshot["items"] == 80 and zeroshot["delta"] == pytest.approx(
        summary["trained_unblended"]["zeroshot_top1"] - summary["base"]["zeroshot_top1"], abs=0.01)
    assert any("CLIC training" in line for line in said)
    assert set(summary["seconds"]) == {"prepare", "train", "blend_on_validation", "evaluate_test"}
    assert all(seconds > 0 for seconds in summary["seconds"].values())
    # the half-tiles were made once, in the demo's workspace, where training looks for them
    from toolkit.adapters.loading import load_model
    from toolkit.data.tiles import find_tile_index

    size = load_model(str(settings.workspace / "demo" / "base")).image_norm.size
    snapshot = json.loads((candidate / "summary.json").read_text())["snapshot"]
    assert find_tile_index(settings.workspace, snapshot, size) is not None
    # WiSE-FT: every blend scored on the validation sets; the reported candidate is the chosen blend.
    wise = summary["wise_ft"]
    assert set(wise["validation"]) == {"base", *(f"{a:g}" for a in WISE_ALPHAS)}
    assert set(wise["validation_standard_errors"]) == {f"{a:g}" for a in WISE_ALPHAS}
    assert all(set(e) >= {"retrieval_r5", "zeroshot_top1"} and e["zeroshot_top1"] >= 0
               for e in wise["validation_standard_errors"].values())
    if wise["alpha"] is not None and wise["alpha"] != 1.0:
        assert summary["results_folder"].endswith(f"-wise{wise['alpha']:g}")

    again: list[str] = []
    second = run_demo(settings, say=again.append)
    assert any("reusing the trained candidate" in line for line in again)
    assert second["candidate"] == summary["candidate"]


def test_summary_checks_the_targets() -> None:
    def model(swap: float, r5: float, zero: float) -> dict[str, dict[str, dict[str, float]]]:
        return {"sugarcrepe": {"swap_att": {"acc": swap}}, "sugarcrepe_pp": {"swap_att": {"itt": 0.0, "tot": 0.0}},
                "retrieval": {"text_to_image": {"r5": r5}, "image_to_text": {"r5": r5}},
                "zeroshot": {"all": {"top1": zero}}, "domain": {"all": {"acc": 50.0}}}

    summary = summarise({"b": model(60, 50, 80), "c": model(76, 49.6, 79.2)}, "b", "c")
    assert summary["targets_met"] == {"swap_att_gain>=15": True, "retrieval_r5_drop<=0.5": True,
                                      "zeroshot_drop<=1": True}
    missed = summarise({"b": model(60, 50, 80), "c": model(70, 49, 78)}, "b", "c")["targets_met"]
    assert not any(missed.values())


def test_demo_data_are_regenerated_when_their_settings_change(tmp_path: Path) -> None:
    from toolkit.demo.chain import _data

    def settings(zeroshot_per_class: int) -> DemoSettings:
        return DemoSettings(workspace=tmp_path / "ws", db_url="sqlite://", generate=GenerateConfig(
            pretrain_images=0, domain_images=4, eval_two_object_images=2, zeroshot_images_per_class=zeroshot_per_class,
            validation_two_object_images=2, validation_zeroshot_images_per_class=1, kind_items=1,
            validation_kind_items=1))

    def zeroshot_images(paths: object) -> int:
        return len(json.loads(paths.test.zeroshot_labels.read_text())["images"])  # type: ignore[attr-defined]

    said: list[str] = []
    first = _data(settings(1), said.append)
    assert zeroshot_images(first) == 80
    kept = first.test.zeroshot_labels.stat().st_mtime_ns
    assert zeroshot_images(_data(settings(1), said.append)) == 80  # same settings: reused, not rewritten
    assert first.test.zeroshot_labels.stat().st_mtime_ns == kept
    assert zeroshot_images(_data(settings(2), said.append)) == 160  # an older, smaller set is never scored
    assert any("other settings" in line for line in said)
    (first.root / "generation.json").write_text("not json")  # a damaged record is not trusted either
    assert zeroshot_images(_data(settings(2), said.append)) == 160
    assert sum("generating the demo domain" in line for line in said) == 3


def test_kind_results_name_the_benchmarks_the_kinds_are_scored_as() -> None:
    from toolkit.demo.chain import KIND_RESULTS, held_out_benchmarks
    from toolkit.demo.generate import HeldOutPaths
    from toolkit.eval.names import benchmark_keys

    held_out = HeldOutPaths.under(Path("/held-out"))
    specs = held_out_benchmarks(held_out)
    keys = benchmark_keys([spec.split(":", 1)[0] for spec in specs])
    name_of = {spec.split(":", 1)[1]: key.name for spec, key in zip(specs, keys, strict=True)}
    assert {kind: benchmark for kind, (benchmark, _) in KIND_RESULTS.items()} == {
        kind: name_of[str(held_out.kinds / ("three_object" if kind == "swap_att_three" else "two_object"))]
        for kind in KINDS}


def test_summary_checks_each_kind_against_its_own_target() -> None:
    def model(gains: dict[str, float]) -> dict[str, object]:
        two = {kind: {"itt": 50.0 + gains.get(kind, 0.0)} for kind in ("swap_att", "replace_att", "swap_obj",
                                                                        "replace_rel")}
        return {"sugarcrepe": {"swap_att": {"acc": 50.0}}, "sugarcrepe_pp": {"swap_att": {"itt": 0.0, "tot": 0.0}},
                "retrieval": {"text_to_image": {"r5": 50.0}, "image_to_text": {"r5": 50.0}},
                "zeroshot": {"all": {"top1": 80.0}}, "sugarcrepe_pp_2": two,
                "sugarcrepe_pp_3": {"swap_att": {"itt": 50.0 + gains.get("swap_att_three", 0.0)}}}

    gains = {"swap_att": 20.0, "swap_obj": 14.9, "replace_rel": 30.0, "swap_att_three": 10.0}
    met = summarise({"b": model({}), "c": model(gains)}, "b", "c")["targets_met"]
    assert {name: ok for name, ok in met.items() if name.startswith("kind_")} == {
        "kind_swap_att_itt_gain>=20": True, "kind_swap_obj_itt_gain>=15": False,
        "kind_replace_rel_itt_gain>=15": True, "kind_swap_att_three_itt_gain>=10": True}


def test_pretrain_builds_the_alt_text_model_then_the_two_stage_base_from_it(tmp_path: Path) -> None:
    """`toolkit demo run --pretrain`'s base: both recipes run for real (tiny settings here), the second one
    started from the model the first one made in this workspace, each folder appearing only when whole."""
    import toolkit.demo.chain as chain
    from toolkit.adapters.loading import load_model
    from toolkit.demo.pretrain import PretrainConfig
    from toolkit.demo.two_stage import StageAConfig, StageBConfig, TwoStageConfig

    settings = DemoSettings(
        workspace=tmp_path / "ws", db_url="sqlite://", pretrain=True,
        generate=GenerateConfig(seed=5, image_size=96, pretrain_images=32, domain_images=4, eval_two_object_images=2,
                                zeroshot_images_per_class=1, validation_two_object_images=2,
                                validation_zeroshot_images_per_class=1, kind_items=1, validation_kind_items=1),
        alt_text_recipe=PretrainConfig(steps=4, batch_size=16, warmup_steps=1),
        two_stage_recipe=TwoStageConfig(scenes=48, image_size=64, patch_size=8, embed_dim=64,
                                        stage_a=StageAConfig(steps=3, batch_size=16, warmup_steps=1),
                                        stage_b=StageBConfig(steps=3, batch_size=16, warmup_steps=1)))
    said: list[str] = []
    data = chain._data(settings, said.append)
    base = chain._base(settings, data, said.append)
    alt_text = settings.workspace / "demo" / "base-alt-text"
    assert base == settings.workspace / "demo" / "base-pretrained"
    assert json.loads((alt_text / "pretrain.json").read_text())["images"] == 32
    recipe = json.loads((base / "pretrain.json").read_text())
    assert recipe["recipe"] == "two-stage" and recipe["config"]["init_from"] == str(alt_text)
    assert load_model(str(base)).image_norm.size == 64
    # the alt-text corpus keeps the committed model's 64 px; the rest of the domain is at image_size
    from PIL import Image as PILImage

    assert PILImage.open(data.pretrain_manifest.parent / "images" / "000000.png").size == (64, 64)
    assert PILImage.open(data.domain_manifest.parent / "images" / "000000.png").size == (96, 96)
    assert not any(path.name.endswith(".partial") for path in (settings.workspace / "demo").iterdir())
    assert [line.split(" (")[0] for line in said[-2:]] == ["pretraining the alt-text CLIP",
                                                           "pretraining the two-stage base from it"]


def test_training_that_computes_image_features_once_gets_no_tiles(tmp_path: Path) -> None:
    """Tiles would only add a pass over the images when training encodes each of them once anyway."""
    from toolkit.data.tiles import find_tile_index
    from toolkit.demo.chain import prepare

    config = tmp_path / "single.toml"
    config.write_text('concatenate = false\ngenerators = ["swap_within"]\nprecompute_image_features = true\n')
    tiny = GenerateConfig(seed=5, pretrain_images=0, domain_images=60, eval_two_object_images=2,
                          zeroshot_images_per_class=1, validation_two_object_images=2,
                          validation_zeroshot_images_per_class=1, kind_items=1, validation_kind_items=1)
    settings = DemoSettings(workspace=tmp_path / "ws", db_url=f"sqlite:///{tmp_path / 'demo.db'}",
                            train_config=config, generate=tiny)
    inputs = prepare(settings, say=lambda _: None)
    assert find_tile_index(settings.workspace, inputs.snapshot, 128) is None
    pixels = DemoSettings(workspace=tmp_path / "ws", db_url=settings.db_url, generate=tiny,
                          train_config=tmp_path / "pixels.toml")
    pixels.train_config.write_text('concatenate = false\ngenerators = ["swap_within"]\n')
    assert find_tile_index(settings.workspace, prepare(pixels, say=lambda _: None).snapshot, 128) is not None
