"""Pretrain the demo's alt-text CLIP on the alt-text corpus: both towers, plain symmetric contrastive loss.
(`toolkit.demo.two_stage` starts the demo's base from this model.)

Recipe in brief:
- Architecture: `DEMO_MODEL_CONFIG`, an open_clip custom model config: a 3-layer ViT (width 64) on
  the 64 px PNGs as they are, in 8 px patches (8x8 of them: enough detail to tell the shapes apart),
  a 2-layer text transformer (width 32),
  context 32, open_clip's SimpleTokenizer vocabulary. 1.8 M parameters, 7 MB as fp32 safetensors.
- Data: `<data>/pretrain/manifest.jsonl`, decoded once into memory (64 px PNGs are ~12 KB each as tensors).
- Loss: open_clip's `ClipLoss` (image→text and text→image cross-entropy, averaged).
- Optimiser: AdamW, linear warm-up then cosine decay; `logit_scale` clamped at ln(100) after each step.
- Seeded: the same data, config and thread count give the same weights.

The alt-text captions name one object of the scene (any of them), so the image tower learns every object with
its colour and shape, while the text tower, which only ever reads one object, learns no binding: two-object
captions read as a bag of words, as in real CLIP.
Output: a folder `load_model(<folder>)` reads (model.json + model.safetensors) plus `pretrain.json`.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from toolkit.adapters.open_clip_adapter import OpenClipAdapter, _build, encode_text_trimmed, trim_padding
from toolkit.core.images import load_rgb
from toolkit.demo.generate import DemoDataError

DEMO_MODEL_NAME = "demo-clip-tiny"
DEMO_MODEL_CONFIG: dict[str, Any] = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "layers": 3, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}
MAX_LOGIT_SCALE = math.log(100.0)
# The committed alt-text model: `pretrain` with `PretrainConfig()` on `generate_demo_data` with
# `GenerateConfig()`, 1 torch thread. A folder `load_model` reads (model.json + model.safetensors) plus
# pretrain.json. Both towers learned from captions naming one object: a bag-of-words text tower, and an image
# tower that knows binding on single images but no relation (bench/results/probe-image-tower.md).
ALT_TEXT_BASE = Path(__file__).parent / "base"
# The demo's base (issue #19): `toolkit.demo.two_stage` with `TwoStageConfig()`, its image tower started from
# ALT_TEXT_BASE. Like real CLIP, its image tower knows binding and relations, its text tower does not.
TWO_STAGE_BASE = Path(__file__).parent / "base-two-stage"
DEMO_BASE = TWO_STAGE_BASE


@dataclass(frozen=True)
class PretrainConfig:
    steps: int = 6000
    batch_size: int = 128
    lr: float = 1.5e-3
    min_lr: float = 1e-5
    warmup_steps: int = 50
    weight_decay: float = 0.1
    seed: int = 0
    threads: int = 1  # the committed base was made with one torch thread (bit-exact reproduction needs it)
    max_images: int | None = None  # use only the first N manifest rows (smoke tests)
    model_config: dict[str, Any] = field(default_factory=lambda: json.loads(json.dumps(DEMO_MODEL_CONFIG)))


def copy_bundled_base(out: Path, source: Path = DEMO_BASE) -> Path:
    """Copy a committed model (default: the demo's base) to `out` (a new folder), so a pipeline can skip
    pretraining."""

    if not (source / "model.json").is_file():
        raise DemoDataError(f"the bundled model is missing from {source}; reinstall the toolkit or run "
                            "`toolkit demo pretrain` to rebuild it")
    if out.exists() and any(out.iterdir()):
        raise DemoDataError(f"{out} is not empty; pass a new folder for the base model")
    shutil.copytree(source, out, dirs_exist_ok=True)
    return out


def read_manifest(path: Path, limit: int | None = None) -> list[dict[str, str]]:
    """Rows of a JSONL manifest with `image` and `caption`; errors name the line at fault."""
    if not path.is_file():
        raise DemoDataError(f"manifest {path} does not exist; run `toolkit demo generate` first")
    rows: list[dict[str, str]] = []
    with path.open(encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            if limit is not None and len(rows) >= limit:
                break
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise DemoDataError(f"{path}:{line_no}: not valid JSON ({err})") from err
            if not isinstance(row, dict) or not isinstance(row.get("image"), str) \
                    or not isinstance(row.get("caption"), str):
                raise DemoDataError(f"{path}:{line_no}: expected an object with string keys 'image' and "
                                    "'caption'")
            rows.append({"image": row["image"], "caption": row["caption"]})
    if not rows:
        raise DemoDataError(f"manifest {path} has no rows")
    return rows


def image_uint8(image: Image.Image) -> torch.Tensor:
    """An RGB PIL image -> uint8 [3, H, W] (a copy: the tensor owns its bytes)."""
    return torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1)


def load_images_uint8(folder: Path, relative_paths: list[str], size: int) -> torch.Tensor:
    """PNG files -> uint8 [N, 3, size, size]; kept as bytes so 20k images cost ~250 MB, not 1 GB."""
    batch = np.empty((len(relative_paths), size, size, 3), dtype=np.uint8)
    for i, rel in enumerate(relative_paths):
        rgb = load_rgb(folder / rel)
        if rgb.size != (size, size):
            rgb = rgb.resize((size, size), Image.Resampling.BICUBIC)
        batch[i] = np.asarray(rgb)
    return torch.from_numpy(batch).permute(0, 3, 1, 2).contiguous()


def normalise(images_uint8: torch.Tensor, adapter: OpenClipAdapter) -> torch.Tensor:
    norm = adapter.image_norm
    mean = torch.tensor(norm.mean).view(1, 3, 1, 1)
    std = torch.tensor(norm.std).view(1, 3, 1, 1)
    return (images_uint8.float() / 255.0 - mean) / std


def warmup_cosine(step: int, steps: int, warmup: int, peak: float, floor: float = 0.0) -> float:
    """Linear warm-up to `peak` over `warmup` steps, then cosine decay to `floor` at `steps`."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return floor + 0.5 * (peak - floor) * (1 + math.cos(math.pi * progress))


def lr_at(step: int, config: PretrainConfig) -> float:
    return warmup_cosine(step, config.steps, config.warmup_steps, config.lr, config.min_lr)


def _param_groups(named_parameters: Iterable[tuple[str, torch.nn.Parameter]],
                  weight_decay: float) -> list[dict[str, Any]]:
    """No decay on gains, biases, embeddings' scale-free params and the temperature (1-D tensors)."""
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for name, param in named_parameters:
        (no_decay if param.ndim < 2 or "logit_scale" in name else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def optimiser_step(optimiser: torch.optim.Optimizer, loss: torch.Tensor, adapter: OpenClipAdapter) -> float:
    """One step on `loss`, then the temperature clamped at ln(100); returns the loss."""
    optimiser.zero_grad(set_to_none=True)
    loss.backward()  # type: ignore[no-untyped-call]
    optimiser.step()
    with torch.no_grad():
        adapter.logit_scale.clamp_(0, MAX_LOGIT_SCALE)
    return float(loss.detach())


def save_demo_model(adapter: OpenClipAdapter, out: Path, model_config: dict[str, Any]) -> None:
    """The folder `load_model` reads: weights, model.json and the open_clip config beside them."""
    out.mkdir(parents=True, exist_ok=True)
    card = adapter.save(out)
    (out / "model.json").write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    (out / f"{DEMO_MODEL_NAME}.json").write_text(json.dumps(model_config, indent=2) + "\n", encoding="utf-8")


def build_demo_model(config: PretrainConfig) -> OpenClipAdapter:
    torch.manual_seed(config.seed)
    return OpenClipAdapter(DEMO_MODEL_NAME, config.model_config, _build(DEMO_MODEL_NAME, config.model_config))


def pretrain(
    data: Path,
    out: Path,
    config: PretrainConfig = PretrainConfig(),
    on_step: Callable[[int, float], None] | None = None,
) -> dict[str, Any]:
    """Pretrain on `<data>/pretrain/manifest.jsonl` and save to `out`; returns the run summary."""
    torch.set_num_threads(config.threads)
    manifest = data / "pretrain" / "manifest.jsonl"
    rows = read_manifest(manifest, config.max_images)
    adapter = build_demo_model(config)
    started = time.perf_counter()
    images = load_images_uint8(manifest.parent, [r["image"] for r in rows], adapter.image_norm.size)
    tokens = adapter.tokenize([r["caption"] for r in rows])
    load_s = time.perf_counter() - started

    from open_clip.loss import ClipLoss

    model = adapter.model
    model.train()
    loss_fn = ClipLoss()
    optimiser = torch.optim.AdamW(_param_groups(model.named_parameters(), config.weight_decay), lr=config.lr,
                                  betas=(0.9, 0.98), eps=1e-6)
    order = torch.Generator().manual_seed(config.seed)
    losses: list[float] = []
    started = time.perf_counter()
    for step in range(config.steps):
        for group in optimiser.param_groups:
            group["lr"] = lr_at(step, config)
        batch = torch.randint(len(rows), (min(config.batch_size, len(rows)),), generator=order)
        image_features = adapter.encode_image(normalise(images[batch], adapter))
        text_features = encode_text_trimmed(model, trim_padding(tokens[batch]))
        losses.append(optimiser_step(optimiser, loss_fn(image_features, text_features, adapter.logit_scale.exp()),
                                     adapter))
        if on_step is not None:
            on_step(step, losses[-1])
    train_s = time.perf_counter() - started
    model.eval()

    save_demo_model(adapter, out, config.model_config)
    summary = {"config": asdict(config), "images": len(rows), "load_seconds": round(load_s, 2),
               "train_seconds": round(train_s, 2), "first_loss": losses[0], "final_loss": losses[-1],
               "loss_every_10_steps": losses[::10]}
    (out / "pretrain.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary
