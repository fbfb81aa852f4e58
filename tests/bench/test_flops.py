"""The analytic FLOP count behind the GPU benchmark's MFU (bench/flops.py), checked by hand."""

from __future__ import annotations

import sys

from tests.helpers import REPO

sys.path.insert(0, str(REPO / "bench"))

from flops import open_clip_sample_flops, text_forward_flops, vision_forward_flops

VIT_B_32 = {"embed_dim": 512,
            "vision_cfg": {"image_size": 224, "layers": 12, "width": 768, "patch_size": 32},
            "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 512, "heads": 8, "layers": 12}}


def test_vit_b_32_by_hand() -> None:
    # Text: 12 × (24·77·512² + 4·77²·512) + 2·512·512
    assert text_forward_flops(12, 512, 77, 512) == 12 * (484_442_112 + 12_142_592) + 524_288 == 5_959_540_736
    # Vision: patch embedding 2·49·(3·32²)·768, then 12 × (24·50·768² + 4·50²·768), then 2·768·512
    assert vision_forward_flops(12, 768, 224, 32, 512) == (231_211_008 + 12 * (707_788_800 + 7_680_000)
                                                           + 786_432) == 8_817_623_040
    flops = open_clip_sample_flops(VIT_B_32)
    assert flops.clic == 8_817_623_040 + 15 * 5_959_540_736  # one image, five texts trained (fwd + 2× bwd)
    assert flops.plain == 8_817_623_040 + 3 * 5_959_540_736
    # method.md's anchor: 2,705 samples/s compiled on an H200 is quoted as 265 TFLOP/s.
    assert round(2705 * flops.clic / 1e12) == 266
