"""A demo base in two stages (issue #19): an image tower that knows which colour sits on which shape and
where each object stands, beside a text tower that reads captions as a bag of words, as in real CLIP.
Committed as `toolkit/demo/base-two-stage`, the demo's base (toolkit.demo.pretrain.DEMO_BASE); CLIC gains on
it from 12,000 domain images and 4,000 steps (bench/results/demo-clic-diagnosis.md; probes in
bench/results/probe-image-tower-two-stage.md).

Why two stages: pretrained on alt text naming one object (`toolkit.demo.pretrain`), the image tower encodes
binding on single images but no spatial relation, so no text-side training can teach relations (probe:
bench/results/probe-image-tower.md). Real CLIP's image tower carries more composition than its text tower uses.

Stage A (image tower): both towers learn together on whole-scene captions, half of the images as CLIC pairs
(two scenes stacked top/bottom, squeezed into half-tiles by the training data path's own functions), with a
parsing loss beside the contrastive one: linear heads on the normalised image embedding name, for each cell of
a GRID x GRID grid over each scene (the whole image, or each half of a pair), the colour and the shape of the
object centred there, and which colour-shape kinds the scene holds. The heads are dropped afterwards; they only
make the embedding keep what the probes ask. The tower reads positions as fixed 2-D sin-cos codes and pools by
averaging its patch tokens: with learned positions and class-token pooling, the same loss left relations at
chance (58.9 / 57.0 left-of / above on the probes), with these it learns them.

Stage B (text tower): the image tower frozen, a fresh text tower learns from single-object alt text and
word-shuffled scene captions, so it cannot use word order: two-object captions read as a bag of words.

Every random draw is seeded; the same config and thread count give the same weights.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from toolkit.adapters.open_clip_adapter import OpenClipAdapter, _build, encode_text_trimmed, trim_padding
from toolkit.core.images import aspect_class
from toolkit.data.tiles import half_tile_sizes
from toolkit.demo import scenes
from toolkit.demo.pretrain import (
    ALT_TEXT_BASE,
    DEMO_MODEL_CONFIG,
    DEMO_MODEL_NAME,
    _param_groups,
    image_uint8,
    normalise,
    optimiser_step,
    save_demo_model,
    warmup_cosine,
)
from toolkit.demo.probe import half_tile
from toolkit.demo.scenes import Scene

GRID = 4
# Vision settings that make the tower position-aware (open_clip VisionTransformer options).
POSITION_AWARE_VISION: dict[str, Any] = {"pos_embed_type": "sin_cos_2d", "pool_type": "avg"}
COLOUR_NAMES: tuple[str, ...] = tuple(scenes.COLOURS)
VIEWS: tuple[str, ...] = ("single", "top", "bottom")  # a whole image, or a half of a CLIC pair (wide aspect)


def two_stage_model_config(embed_dim: int = 64, image_size: int = 64, patch_size: int = 8) -> dict[str, Any]:
    config: dict[str, Any] = json.loads(json.dumps(DEMO_MODEL_CONFIG))
    config["embed_dim"] = embed_dim
    config["vision_cfg"].update(POSITION_AWARE_VISION, image_size=image_size, patch_size=patch_size)
    return config


@dataclass(frozen=True)
class StageAConfig:
    # 7,000 steps: at 5,000 the relations in pairs stood at 83 / 88, at 7,000 every probe passes 85 in pairs
    # (bench/results/demo-shape-diagnosis.md §6, probe-image-tower-two-stage.md)
    steps: int = 7000
    batch_size: int = 128
    lr: float = 1e-3
    head_lr: float = 1e-2  # the heads read a unit-norm embedding whose position part starts tiny: at 1e-3 none learn
    head_scale: float = 30.0  # logits = head(scale * embedding)
    # Heads with unit-length rows (a cosine classifier at head_scale): the parsed facts must then take a real
    # share of the unit embedding, where free heads grow their weights to read directions too faint for the
    # text tower's dot product (class_gap: bench/results/demo-clic-diagnosis.md).
    unit_heads: bool = False
    # Share of the single images captioned by alt text naming one object, as the alt-text model was trained:
    # matching "a red circle" against scenes that hold red things and circles apart keeps colour-shape
    # conjunctions large in the embedding. The rest, and every pair, get the whole-scene sentence.
    alt_text_share: float = 0.0
    # The per-cell loss (where each colour and shape is) three times as heavy as at first keeps relations
    # beside the presence and kinds losses, which alone trade them away (demo-shape-diagnosis.md §5).
    parse_weight: float = 3.0
    # Weight of a second shape loss on the occupied cells alone. In the per-cell loss most cells are empty, so
    # an object's shape in a squeezed pair half gets a small share of the gradient: the committed tower tells
    # two shapes apart at 65 % in pairs (probe control_shape), while the same tower fine-tuned on shapes alone
    # reads one of 8 shapes at 93 % (bench/results/demo-shape-diagnosis.md). 0 leaves the loss as it was.
    object_shape_weight: float = 0.0
    # Weight of a loss on which shapes each view holds (a head of its own, position-free: the question the
    # shape probe asks), and a multiplier on the loss on which colour-shape kinds it holds (binding's).
    # At parse_weight 3 these are presence 4 and kinds x10 of the per-cell loss's first weight.
    shape_presence_weight: float = 1.333
    kinds_weight: float = 3.333
    pair_share: float = 0.5
    warmup_steps: int = 100
    weight_decay: float = 0.1


@dataclass(frozen=True)
class StageBConfig:
    steps: int = 2000
    batch_size: int = 256
    lr: float = 2e-3
    warmup_steps: int = 50
    weight_decay: float = 0.1
    shuffled_share: float = 0.5  # the rest is single-object alt text


@dataclass(frozen=True)
class TwoStageConfig:
    seed: int = 0
    threads: int = 1
    scenes: int = 20000
    # 128 px in 16 px patches: the same 8 x 8 tokens as the alt-text model's 64 / 8, with the detail that
    # tells shapes apart in the squeezed halves of CLIC pairs (probes: bench/results/demo-base-two-stage.jsonl)
    image_size: int = 128
    patch_size: int = 16
    embed_dim: int = 128
    # Start the image tower from the alt-text model's weights (all but positions, which become fixed codes):
    # it already tells colours and shapes apart, which a random start does not learn to bind here.
    # None trains it from a seeded random start.
    init_from: str | None = str(ALT_TEXT_BASE)
    stage_a: StageAConfig = field(default_factory=StageAConfig)
    stage_b: StageBConfig = field(default_factory=StageBConfig)


# ---- scenes, captions and parse targets (pure) -------------------------------------------------------

def base_scene(seed: int, index: int) -> tuple[Scene, random.Random]:
    """1-3 objects, from a stream of its own (never a domain, evaluation, probe or kind-set scene)."""
    rng = scenes.scene_rng(seed, "pretrain-two-stage", index)
    return scenes.sample_scene(rng, rng.choices((1, 2, 3), weights=(0.3, 0.4, 0.3))[0]), rng


def scene_sentence(scene: Scene, rng: random.Random) -> str:
    """One training-frame sentence for the whole scene: its one object, or its first two and their relation."""
    if len(scene.objects) == 1:
        return scenes.with_article(scene.objects[0].noun_phrase) + "."
    return scenes.composition_sentence(scene.objects[0], scene.objects[1], rng)


def shuffled_words(sentence: str, rng: random.Random) -> str:
    """The sentence's words in a random order: what a bag-of-words reader sees of it."""
    words = sentence.rstrip(".").split()
    rng.shuffle(words)
    return " ".join(words) + "."


@dataclass(frozen=True)
class ParseTargets:
    colour: list[int]  # GRID*GRID cells, row-major: 0 = no object centred there, else 1 + colour index
    shape: list[int]  # likewise, 1 + shape index
    kinds: list[int]  # the colour-shape kinds present, as indices into colour x shape


def parse_targets(scene: Scene) -> ParseTargets:
    colour = [0] * (GRID * GRID)
    shape = [0] * (GRID * GRID)
    kinds = []
    for obj in scene.objects:
        cell = min(GRID - 1, int(obj.y * GRID)) * GRID + min(GRID - 1, int(obj.x * GRID))
        colour[cell] = 1 + COLOUR_NAMES.index(obj.colour)
        shape[cell] = 1 + scenes.SHAPES.index(obj.shape)
        kinds.append(COLOUR_NAMES.index(obj.colour) * len(scenes.SHAPES) + scenes.SHAPES.index(obj.shape))
    return ParseTargets(colour, shape, sorted(set(kinds)))


# ---- tensors -----------------------------------------------------------------------------------------

class _UnitRows(torch.nn.Module):
    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight / weight.norm(dim=1, keepdim=True).clamp_min(1e-12)


@dataclass(frozen=True)
class ParseWeights:
    kinds: float = 1.0
    object_shape: float = 0.0
    shape_presence: float = 0.0


class ParseHeads(torch.nn.Module):
    """Per view: cell colours, cell shapes and the kinds present, read linearly off the image embedding;
    with `unit_rows`, every class reads the embedding through a unit-length direction; with `shape_presence`,
    also which shapes the view holds."""

    def __init__(self, embed_dim: int, unit_rows: bool = False, shape_presence: bool = False) -> None:
        super().__init__()
        cells = GRID * GRID
        self.colour = torch.nn.ModuleDict({v: torch.nn.Linear(embed_dim, cells * (1 + len(COLOUR_NAMES)))
                                           for v in VIEWS})
        self.shape = torch.nn.ModuleDict({v: torch.nn.Linear(embed_dim, cells * (1 + len(scenes.SHAPES)))
                                          for v in VIEWS})
        self.kinds = torch.nn.ModuleDict({v: torch.nn.Linear(embed_dim, len(COLOUR_NAMES) * len(scenes.SHAPES))
                                          for v in VIEWS})
        # made last and only when asked, so recipes without it draw the same initial weights as before
        self.shapes = torch.nn.ModuleDict({v: torch.nn.Linear(embed_dim, len(scenes.SHAPES)) for v in VIEWS}) \
            if shape_presence else None
        if unit_rows:
            for module in self.modules():
                if isinstance(module, torch.nn.Linear):
                    torch.nn.utils.parametrize.register_parametrization(module, "weight", _UnitRows())

    def loss(self, view: str, features: torch.Tensor, colour: torch.Tensor, shape: torch.Tensor,
             kinds: torch.Tensor, weights: ParseWeights = ParseWeights()) -> torch.Tensor:
        cells = GRID * GRID
        colour_logits = self.colour[view](features).view(len(features) * cells, -1)
        shape_logits = self.shape[view](features).view(len(features) * cells, -1)
        fn = torch.nn.functional
        loss = (fn.cross_entropy(colour_logits, colour.view(-1)) + fn.cross_entropy(shape_logits, shape.view(-1))
                + weights.kinds * fn.binary_cross_entropy_with_logits(self.kinds[view](features), kinds))
        if weights.object_shape:
            occupied = shape.view(-1) > 0  # every scene has an object, so never empty
            loss = loss + weights.object_shape * fn.cross_entropy(shape_logits[occupied], shape.view(-1)[occupied])
        if weights.shape_presence:
            if self.shapes is None:
                raise ValueError("a shape-presence weight needs heads made with shape_presence=True")
            present = fn.one_hot(shape, 1 + len(scenes.SHAPES))[..., 1:].amax(dim=1).float()
            loss = loss + weights.shape_presence * fn.binary_cross_entropy_with_logits(self.shapes[view](features),
                                                                                      present)
        return loss


@dataclass
class SceneTensors:
    single: torch.Tensor  # uint8 [N, 3, S, S]
    top: torch.Tensor  # uint8 half-tiles as the top of a pair
    bottom: torch.Tensor  # ... and as the bottom
    colour: torch.Tensor  # long [N, GRID*GRID]
    shape: torch.Tensor
    kinds: torch.Tensor  # float [N, colours*shapes] multi-hot
    sentences: list[str]
    alt_texts: list[str]  # alt text naming one object of the scene, from a stream of its own


def render_scenes(seed: int, count: int, image_size: int) -> SceneTensors:
    top_hw, bottom_hw = half_tile_sizes(aspect_class(image_size, image_size), image_size)
    singles, tops, bottoms, sentences, alt_texts = [], [], [], [], []
    colour = torch.zeros(count, GRID * GRID, dtype=torch.long)
    shape = torch.zeros(count, GRID * GRID, dtype=torch.long)
    kinds = torch.zeros(count, len(COLOUR_NAMES) * len(scenes.SHAPES))
    for i in range(count):
        scene, rng = base_scene(seed, i)
        image = scenes.render(scene, image_size)
        singles.append(image_uint8(image))
        tops.append(image_uint8(half_tile(image, *top_hw)))
        bottoms.append(image_uint8(half_tile(image, *bottom_hw)))
        targets = parse_targets(scene)
        colour[i] = torch.tensor(targets.colour)
        shape[i] = torch.tensor(targets.shape)
        kinds[i, targets.kinds] = 1.0
        sentences.append(scene_sentence(scene, rng))
        alt_texts.append(scenes.alt_text_caption(scene, scenes.scene_rng(seed, "pretrain-two-stage-alt", i)))
    return SceneTensors(torch.stack(singles), torch.stack(tops), torch.stack(bottoms), colour, shape, kinds,
                        sentences, alt_texts)


def build_two_stage_model(config: TwoStageConfig) -> OpenClipAdapter:
    """A seeded position-aware model; with `init_from`, every image-tower weight that fits is copied over."""
    torch.manual_seed(config.seed)
    model_config = two_stage_model_config(config.embed_dim, config.image_size, config.patch_size)
    adapter = OpenClipAdapter(DEMO_MODEL_NAME, model_config, _build(DEMO_MODEL_NAME, model_config))
    if config.init_from is not None:
        from toolkit.adapters.loading import load_model

        source_visual: torch.nn.Module = load_model(config.init_from).model.visual  # type: ignore[assignment]
        visual: torch.nn.Module = adapter.model.visual  # type: ignore[assignment]
        own = visual.state_dict()
        copied = {name: tensor for name, tensor in source_visual.state_dict().items()
                  if name in own and own[name].shape == tensor.shape and name != "positional_embedding"}
        kernel = source_visual.state_dict()["conv1.weight"]
        if "conv1.weight" not in copied and kernel.shape[:2] == own["conv1.weight"].shape[:2]:
            # A larger patch over a proportionally larger image: the kernel resized and scaled by the area
            # ratio responds to the upsampled image as the old one did to the original.
            size = own["conv1.weight"].shape[-2:]
            resized = torch.nn.functional.interpolate(kernel, size=size, mode="bilinear", align_corners=False)
            copied["conv1.weight"] = resized * (kernel.shape[-1] * kernel.shape[-2]) / (size[0] * size[1])
        visual.load_state_dict(copied, strict=False)
    return adapter


def _draw(count: int, batch: int, generator: torch.Generator) -> torch.Tensor:
    """`batch` indices into `count` rows, with replacement."""
    return torch.randint(count, (batch,), generator=generator)


def stage_a(adapter: OpenClipAdapter, data: SceneTensors, config: StageAConfig, seed: int,
            on_step: Callable[[str, int, float], None] | None = None) -> list[float]:
    """Both towers, contrastive + parsing loss, on single images and CLIC pairs."""
    from open_clip.loss import ClipLoss

    model = adapter.model
    model.train()
    heads = ParseHeads(int(adapter.config["embed_dim"]), config.unit_heads, config.shape_presence_weight > 0)
    optimiser = torch.optim.AdamW(
        [*_param_groups(model.named_parameters(), config.weight_decay),
         {"params": list(heads.parameters()), "weight_decay": 0.0, "head": True}],
        lr=config.lr, betas=(0.9, 0.98), eps=1e-6)
    generator = torch.Generator().manual_seed(seed)
    tokens = adapter.tokenize(data.sentences)
    alt_tokens = adapter.tokenize(data.alt_texts) if config.alt_text_share > 0 else None
    loss_fn = ClipLoss()
    weight = ParseWeights(config.kinds_weight, config.object_shape_weight, config.shape_presence_weight)
    count = len(data.sentences)
    n_pairs = round(config.batch_size * config.pair_share)
    n_single = config.batch_size - n_pairs
    losses = []
    for step in range(config.steps):
        for group in optimiser.param_groups:
            peak = config.head_lr if group.get("head") else config.lr
            group["lr"] = warmup_cosine(step, config.steps, config.warmup_steps, peak)
        single = _draw(count, n_single, generator)
        first = _draw(count, n_pairs, generator)
        second = _draw(count, n_pairs, generator)
        pairs = torch.cat([data.top[first], data.bottom[second]], dim=2)
        images = normalise(torch.cat([data.single[single], pairs]), adapter)
        features = adapter.encode_image(images)
        # a pair's caption is its two scenes' sentences, top first, as CLIC joins them
        pair_captions = [f"{data.sentences[i]} {data.sentences[j]}"
                         for i, j in zip(first.tolist(), second.tolist(), strict=True)]
        single_tokens = tokens[single]
        if alt_tokens is not None:  # no draw otherwise: recipes without alt text keep their random stream
            alt = torch.rand(n_single, generator=generator) < config.alt_text_share
            single_tokens = torch.where(alt[:, None], alt_tokens[single], single_tokens)
        text = torch.cat([single_tokens, adapter.tokenize(pair_captions)]) if pair_captions else single_tokens
        text_features = encode_text_trimmed(model, trim_padding(text))
        loss = loss_fn(features, text_features, adapter.logit_scale.exp())
        scaled = features * config.head_scale
        parse = heads.loss("single", scaled[:n_single], data.colour[single], data.shape[single], data.kinds[single],
                           weight)
        if n_pairs:
            parse = parse + heads.loss("top", scaled[n_single:], data.colour[first], data.shape[first],
                                       data.kinds[first], weight)
            parse = parse + heads.loss("bottom", scaled[n_single:], data.colour[second], data.shape[second],
                                       data.kinds[second], weight)
        losses.append(optimiser_step(optimiser, loss + config.parse_weight * parse, adapter))
        if on_step is not None:
            on_step("A", step, losses[-1])
    model.eval()
    return losses


def _fresh_text_tower(adapter: OpenClipAdapter, seed: int) -> None:
    """Replace every text-side weight with a seeded fresh initialisation of the same architecture."""
    torch.manual_seed(seed + 1)
    fresh = _build(DEMO_MODEL_NAME, adapter.config)
    own = adapter.model.state_dict()
    text = {name: tensor for name, tensor in fresh.state_dict().items() if not name.startswith("visual.")}
    own.update(text)
    adapter.model.load_state_dict(own)


def stage_b_captions(seed: int, count: int, shuffled_share: float) -> list[tuple[int, str]]:
    """(scene index, caption): alt text naming one object, or the scene's sentence with its words shuffled."""
    out = []
    for i in range(count):
        scene, rng = base_scene(seed, i)
        sentence = scene_sentence(scene, rng)
        caption_rng = scenes.scene_rng(seed, "pretrain-two-stage-text", i)
        if caption_rng.random() < shuffled_share:
            out.append((i, shuffled_words(sentence, caption_rng)))
        else:
            # alt text names the scene's first object; any object may be first
            out.append((i, scenes.alt_text_caption(scene, caption_rng)))
    return out


def stage_b(adapter: OpenClipAdapter, data: SceneTensors, config: StageBConfig, seed: int,
            on_step: Callable[[str, int, float], None] | None = None) -> list[float]:
    """A fresh text tower against the frozen image tower's embeddings (computed once)."""
    from open_clip.loss import ClipLoss

    model = adapter.model
    _fresh_text_tower(adapter, seed)
    with torch.inference_mode():
        image_features = torch.cat([adapter.encode_image(normalise(data.single[i:i + 512], adapter))
                                    for i in range(0, len(data.single), 512)])
    image_features = image_features.clone()
    captions = stage_b_captions(seed, len(data.sentences), config.shuffled_share)
    tokens = adapter.tokenize([caption for _, caption in captions])
    scene_of = torch.tensor([index for index, _ in captions])
    text_side = [(name, p) for name, p in model.named_parameters() if not name.startswith("visual.")]
    for name, param in model.named_parameters():
        param.requires_grad_(not name.startswith("visual."))
    optimiser = torch.optim.AdamW(_param_groups(text_side, config.weight_decay), lr=config.lr, betas=(0.9, 0.98),
                                  eps=1e-6)
    generator = torch.Generator().manual_seed(seed + 2)
    loss_fn = ClipLoss()
    model.train()
    losses = []
    for step in range(config.steps):
        for group in optimiser.param_groups:
            group["lr"] = warmup_cosine(step, config.steps, config.warmup_steps, config.lr)
        batch = _draw(len(captions), config.batch_size, generator)
        text_features = encode_text_trimmed(model, trim_padding(tokens[batch]))
        losses.append(optimiser_step(
            optimiser, loss_fn(image_features[scene_of[batch]], text_features, adapter.logit_scale.exp()), adapter))
        if on_step is not None:
            on_step("B", step, losses[-1])
    for param in model.parameters():
        param.requires_grad_(True)
    model.eval()
    return losses


def pretrain_two_stage(out: Path, config: TwoStageConfig = TwoStageConfig(),
                       on_step: Callable[[str, int, float], None] | None = None) -> dict[str, Any]:
    """Both stages; saves a folder `load_model` reads (model.json + model.safetensors) plus pretrain.json."""
    torch.set_num_threads(config.threads)
    started = time.perf_counter()
    data = render_scenes(config.seed, config.scenes, config.image_size)
    render_s = time.perf_counter() - started
    adapter = build_two_stage_model(config)
    started = time.perf_counter()
    losses_a = stage_a(adapter, data, config.stage_a, config.seed, on_step)
    stage_a_s = time.perf_counter() - started
    started = time.perf_counter()
    losses_b = stage_b(adapter, data, config.stage_b, config.seed, on_step)
    stage_b_s = time.perf_counter() - started
    save_demo_model(adapter, out, adapter.config)
    summary = {"recipe": "two-stage", "config": asdict(config), "render_seconds": round(render_s, 2),
               "stage_a_seconds": round(stage_a_s, 2), "stage_b_seconds": round(stage_b_s, 2),
               "stage_a_loss_every_50_steps": _every(losses_a, 50),
               "stage_b_loss_every_50_steps": _every(losses_b, 50)}
    (out / "pretrain.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


def _every(values: Sequence[float], k: int) -> list[float]:
    return [round(v, 4) for v in values[::k]]
