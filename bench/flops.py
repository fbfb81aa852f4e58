"""Analytic FLOPs of a CLIC training step, for MFU. Pure Python; counts matrix multiplies only (2 FLOPs
per multiply-add); layer norms, softmax, GELU, the loss and the optimizer are left out (< 1%).

Per transformer layer and sequence of n tokens, width d, MLP ratio 4:
    qkv 3·n·d² + out-proj n·d² + MLP 2·n·4d² = 12·n·d² multiply-adds   -> 24·n·d² FLOPs
    attention scores QKᵀ n²·d + weighted values AV n²·d               ->  4·n²·d FLOPs
Text tower, forward, per text: layers·(24·n·d² + 4·n²·d) + 2·d·e (projection of the <eot> token), with
    n = the context length (77: open_clip runs every padded position; the causal mask is counted as
    full attention, the usual "model FLOPs" convention). Trained: forward + backward = 3 × forward.
Vision tower, forward only (frozen, no_grad): patch embedding 2·p·(3·P²)·d, then layers over n = p + 1
    tokens (p = (S/P)² patches + the class token), then 2·d·e for the projection.
CLIC sample = 1 concatenated image + 5 texts [p1|p2|p3|p4|n]:  V + 5 · 3 · T
Plain sample = 1 image + 1 text:                               V + 3 · T
MFU = (FLOPs per step / step time) / peak; H100 and H200 SXM dense bf16 peak = 989 TFLOP/s.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

PEAK_BF16_TFLOPS = {"h100": 989.0, "h200": 989.0}


@dataclass(frozen=True)
class TowerShape:
    layers: int
    width: int
    tokens: int
    mlp_ratio: float = 4.0


def transformer_forward_flops(shape: TowerShape) -> float:
    n, d = shape.tokens, shape.width
    per_layer = 2 * (4 + 2 * shape.mlp_ratio) * n * d * d + 4 * n * n * d
    return shape.layers * per_layer


def text_forward_flops(layers: int, width: int, context: int, embed_dim: int, mlp_ratio: float = 4.0) -> float:
    return transformer_forward_flops(TowerShape(layers, width, context, mlp_ratio)) + 2 * width * embed_dim


def vision_forward_flops(layers: int, width: int, image_size: int, patch_size: int, embed_dim: int,
                         mlp_ratio: float = 4.0) -> float:
    patches = (image_size // patch_size) ** 2
    embed = 2 * patches * 3 * patch_size * patch_size * width
    return (embed + transformer_forward_flops(TowerShape(layers, width, patches + 1, mlp_ratio))
            + 2 * width * embed_dim)


@dataclass(frozen=True)
class SampleFlops:
    vision_forward: float
    text_forward: float

    @property
    def clic(self) -> float:
        return self.vision_forward + 5 * 3 * self.text_forward

    @property
    def plain(self) -> float:
        return self.vision_forward + 3 * self.text_forward


def open_clip_sample_flops(config: dict[str, Any]) -> SampleFlops:
    """From an open_clip model config (embed_dim, vision_cfg, text_cfg) as open_clip.get_model_config gives."""
    vision, text = config["vision_cfg"], config["text_cfg"]
    image_size = vision["image_size"] if isinstance(vision["image_size"], int) else vision["image_size"][0]
    embed = config["embed_dim"]
    return SampleFlops(
        vision_forward_flops(vision["layers"], vision["width"], image_size, vision["patch_size"], embed,
                             vision.get("mlp_ratio", 4.0)),
        text_forward_flops(text["layers"], text["width"], text.get("context_length", 77), embed,
                           text.get("mlp_ratio", 4.0)))
