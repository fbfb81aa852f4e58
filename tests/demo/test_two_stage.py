"""The two-stage demo base (toolkit.demo.two_stage): parse targets, captions, and a tiny seeded run."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pytest
import torch

from toolkit.adapters.loading import load_model
from toolkit.demo import scenes
from toolkit.demo.kinds import frames_in
from toolkit.demo.scenes import Scene, SceneObject
from toolkit.demo.two_stage import (
    GRID,
    ParseHeads,
    ParseWeights,
    StageAConfig,
    StageBConfig,
    TwoStageConfig,
    base_scene,
    build_two_stage_model,
    parse_targets,
    pretrain_two_stage,
    render_scenes,
    scene_sentence,
    shuffled_words,
    stage_b_captions,
)


def _obj(colour: str, shape: str, x: float, y: float) -> SceneObject:
    return SceneObject(colour, shape, "large", x, y, 0.15, scenes.COLOURS[colour])


def test_parse_targets_put_each_object_in_its_grid_cell() -> None:
    scene = Scene((_obj("red", "circle", 0.1, 0.9), _obj("blue", "star", 0.8, 0.2)), 40)
    targets = parse_targets(scene)
    bottom_left, top_right = (GRID - 1) * GRID + 0, 0 * GRID + (GRID - 1)
    assert [i for i, c in enumerate(targets.colour) if c] == [top_right, bottom_left]
    assert targets.colour[bottom_left] == 1 + list(scenes.COLOURS).index("red")
    assert targets.shape[top_right] == 1 + scenes.SHAPES.index("star")
    # the kinds present: red circle and blue star, and nothing else
    n_shapes = len(scenes.SHAPES)
    assert targets.kinds == sorted([list(scenes.COLOURS).index("red") * n_shapes + scenes.SHAPES.index("circle"),
                                    list(scenes.COLOURS).index("blue") * n_shapes + scenes.SHAPES.index("star")])
    # mirrored left to right, the cells move: the targets carry position, not only content
    mirrored = Scene(tuple(SceneObject(o.colour, o.shape, o.size, 1 - o.x, o.y, o.radius, o.rgb)
                           for o in scene.objects), 40)
    assert parse_targets(mirrored).colour != targets.colour


def test_shuffled_words_keep_the_words_and_lose_the_order() -> None:
    sentence = "a red circle to the left of a blue square."
    shuffled = [shuffled_words(sentence, random.Random(seed)) for seed in range(20)]
    assert all(Counter(s.rstrip(".").split()) == Counter(sentence.rstrip(".").split()) for s in shuffled)
    assert any(s != sentence for s in shuffled)


def test_stage_b_captions_never_bind_and_never_use_a_test_frame() -> None:
    captions = stage_b_captions(seed=0, count=400, shuffled_share=0.5)
    assert [index for index, _ in captions] == list(range(400))
    for index, caption in captions:
        scene, rng = base_scene(0, index)
        assert not frames_in(caption), caption
        words = Counter(caption.rstrip(".").split())
        in_order = scene_sentence(scene, rng)
        # either the scene's sentence in some order, or alt text naming at most one object
        assert words == Counter(in_order.rstrip(".").split()) or \
            sum(obj.shape in words or obj.colour in words for obj in scene.objects) <= 1 or \
            len(scene.objects) == 1


def test_stage_a_sentences_use_training_frames_only() -> None:
    for index in range(300):
        scene, rng = base_scene(0, index)
        assert not frames_in(scene_sentence(scene, rng))


def test_unit_heads_read_the_embedding_through_unit_directions() -> None:
    torch.manual_seed(0)
    heads = ParseHeads(8, unit_rows=True)
    optimiser = torch.optim.SGD(heads.parameters(), lr=10.0)
    features = torch.nn.functional.normalize(torch.randn(4, 8), dim=-1)
    cells = GRID * GRID
    loss = heads.loss("single", features, torch.zeros(4, cells, dtype=torch.long),
                      torch.zeros(4, cells, dtype=torch.long), torch.zeros(4, len(scenes.COLOURS) * len(scenes.SHAPES)))
    loss.backward()
    optimiser.step()  # a large step: free rows would change length, these cannot
    for linear in (heads.colour["single"], heads.shape["top"], heads.kinds["bottom"]):
        assert torch.allclose(linear.weight.norm(dim=1), torch.ones(linear.out_features), atol=1e-6)
    free = ParseHeads(8)
    assert not torch.allclose(free.colour["single"].weight.norm(dim=1), torch.ones(free.colour["single"].out_features))


def test_object_shape_loss_reads_only_the_occupied_cells() -> None:
    torch.manual_seed(0)
    heads = ParseHeads(8)
    features = torch.randn(3, 8)
    cells = GRID * GRID
    shape = torch.zeros(3, cells, dtype=torch.long)
    shape[0, 5], shape[1, 0], shape[1, 15], shape[2, 9] = 3, 8, 1, 5  # four objects among 48 cells
    colour = (shape > 0).long() * 2
    kinds = torch.zeros(3, len(scenes.COLOURS) * len(scenes.SHAPES))
    plain = heads.loss("top", features, colour, shape, kinds)
    weighted = heads.loss("top", features, colour, shape, kinds, ParseWeights(object_shape=2.0))
    logits = heads.shape["top"](features).view(3 * cells, -1)
    occupied = [5, cells, cells + 15, 2 * cells + 9]
    by_hand = torch.nn.functional.cross_entropy(logits[occupied], torch.tensor([3, 8, 1, 5]))
    torch.testing.assert_close(weighted - plain, 2.0 * by_hand)

    with_presence = ParseHeads(8, shape_presence=True)
    with_presence.load_state_dict(heads.state_dict(), strict=False)  # same cell and kind heads
    assert with_presence.shapes is not None
    presence = with_presence.loss("top", features, colour, shape, kinds, ParseWeights(shape_presence=0.5))
    present = torch.zeros(3, len(scenes.SHAPES))
    present[0, 2] = present[1, 7] = present[1, 0] = present[2, 4] = 1.0  # shapes 3; 8 and 1; 5 (1-based)
    by_hand = torch.nn.functional.binary_cross_entropy_with_logits(with_presence.shapes["top"](features), present)
    torch.testing.assert_close(presence - plain, 0.5 * by_hand)
    with pytest.raises(ValueError, match="shape_presence=True"):
        heads.loss("top", features, colour, shape, kinds, ParseWeights(shape_presence=1.0))


def test_alt_texts_name_one_object_of_their_scene_in_training_frames() -> None:
    data = render_scenes(seed=0, count=60, image_size=16)
    assert len(data.alt_texts) == 60
    for index, caption in enumerate(data.alt_texts):
        scene, _ = base_scene(0, index)
        assert not frames_in(caption), caption
        words = set(caption.rstrip(".").split())
        assert scene.objects[0].shape in words or scene.objects[0].colour in words, caption


def test_transfer_keeps_the_alt_text_image_tower_but_its_positions() -> None:
    from toolkit.demo.pretrain import ALT_TEXT_BASE

    adapter = build_two_stage_model(TwoStageConfig())
    bundled = load_model(str(ALT_TEXT_BASE)).model.visual.state_dict()  # type: ignore[attr-defined]
    own = adapter.model.visual.state_dict()
    assert torch.equal(own["transformer.resblocks.2.mlp.c_fc.weight"],
                       bundled["transformer.resblocks.2.mlp.c_fc.weight"])
    # 16 px patches of a 128 px image from 8 px patches of a 64 px one: the kernel resized, and on an image
    # upsampled 2x it answers about as the old kernel did on the original
    assert own["conv1.weight"].shape == (64, 3, 16, 16)
    image = torch.rand(1, 3, 8, 8)
    old = torch.nn.functional.conv2d(image, bundled["conv1.weight"])
    new = torch.nn.functional.conv2d(torch.nn.functional.interpolate(image, scale_factor=2, mode="bilinear",
                                                                     align_corners=False), own["conv1.weight"])
    assert torch.nn.functional.cosine_similarity(old.flatten(), new.flatten(), dim=0) > 0.9
    assert not torch.equal(own["positional_embedding"], bundled["positional_embedding"])
    assert adapter.config["vision_cfg"]["pool_type"] == "avg"


TINY = TwoStageConfig(scenes=96, threads=1, image_size=64, patch_size=8, embed_dim=64,
                      stage_a=StageAConfig(steps=12, batch_size=16, warmup_steps=2),
                      stage_b=StageBConfig(steps=12, batch_size=32, warmup_steps=2))


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, object]]:
    out = tmp_path_factory.mktemp("two-stage") / "base"
    return out, pretrain_two_stage(out, TINY)


def test_alt_text_share_decides_which_caption_a_single_image_gets() -> None:
    from dataclasses import replace

    import toolkit.demo.two_stage as two_stage

    data = render_scenes(seed=0, count=40, image_size=64)
    small = replace(TINY.stage_a, steps=2, batch_size=8, pair_share=0.5, unit_heads=True)
    real = two_stage.encode_text_trimmed
    fed: list[torch.Tensor] = []

    def recording(model: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
        fed.append(tokens)
        return real(model, tokens)

    for share, expected in ((1.0, data.alt_texts), (0.0, data.sentences)):
        adapter = build_two_stage_model(replace(TINY, stage_a=small))
        fed.clear()
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(two_stage, "encode_text_trimmed", recording)
            two_stage.stage_a(adapter, data, replace(small, alt_text_share=share), seed=0)
        allowed = {tuple(row[row != 0].tolist()) for row in adapter.tokenize(expected)}
        singles = [tuple(row[row != 0].tolist()) for tokens in fed for row in tokens[:4]]  # 4 singles, then pairs
        assert len(singles) == 8 and all(row in allowed for row in singles), share


def test_a_tiny_run_saves_a_loadable_position_aware_model(tiny_base: tuple[Path, dict[str, object]]) -> None:
    out, summary = tiny_base
    adapter = load_model(str(out))
    assert adapter.config["vision_cfg"]["pos_embed_type"] == "sin_cos_2d"  # type: ignore[attr-defined]
    assert summary["recipe"] == "two-stage" and (out / "pretrain.json").is_file()
    features = adapter.encode_text(adapter.tokenize(["a red circle above a blue square."]))
    assert features.shape == (1, TINY.embed_dim)


def test_stage_b_leaves_the_image_tower_as_stage_a_made_it(tmp_path: Path) -> None:
    import toolkit.demo.two_stage as two_stage

    seen: dict[str, dict[str, torch.Tensor]] = {}
    real_stage_b = two_stage.stage_b

    def recording(adapter, *args, **kwargs):  # type: ignore[no-untyped-def]
        seen["before"] = {k: v.clone() for k, v in adapter.model.visual.state_dict().items()}
        seen["text_before"] = {"token": adapter.model.token_embedding.weight.clone()}
        losses = real_stage_b(adapter, *args, **kwargs)
        seen["after"] = adapter.model.visual.state_dict()
        seen["text_after"] = {"token": adapter.model.token_embedding.weight}
        return losses

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(two_stage, "stage_b", recording)
        pretrain_two_stage(tmp_path / "m", TINY)
    assert all(torch.equal(seen["before"][k], seen["after"][k]) for k in seen["before"])
    assert not torch.equal(seen["text_before"]["token"], seen["text_after"]["token"])  # a fresh text tower


def test_same_config_same_weights(tiny_base: tuple[Path, dict[str, object]], tmp_path: Path) -> None:
    out, _ = tiny_base
    pretrain_two_stage(tmp_path / "again", TINY)
    assert (tmp_path / "again" / "model.safetensors").read_bytes() == (out / "model.safetensors").read_bytes()


def test_the_committed_two_stage_model_is_the_recipe_at_its_defaults() -> None:
    import json
    from dataclasses import asdict

    from toolkit.demo.pretrain import TWO_STAGE_BASE

    recorded = json.loads((TWO_STAGE_BASE / "pretrain.json").read_text())["config"]
    defaults = json.loads(json.dumps(asdict(TwoStageConfig())))
    # an absolute path on the machine that made it (bench/demo_base_two_stage.py, which runs the same function)
    recorded.pop("init_from"), defaults.pop("init_from")
    assert recorded == defaults
    adapter = load_model(str(TWO_STAGE_BASE))
    assert adapter.image_norm.size == 128
    assert adapter.config["vision_cfg"]["pool_type"] == "avg"  # type: ignore[attr-defined]
