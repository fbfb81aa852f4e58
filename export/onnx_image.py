"""Optional: the frozen image encoder as ONNX, float32 pixels [batch, 3, size, size] (already normalised
with the model's own mean/std, recorded in the manifest) -> L2-normalised float32 [batch, dim].

The image tower never changes under CLIC, so most deployments keep their existing image index; this
export serves those that embed new images next to the text encoder. fp32 only.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from toolkit.adapters.base import ClipAdapter
from toolkit.export.onnx_text import DEFAULT_OPSET, ExportError, save_onnx
from toolkit.export.parity import FP32_MIN_COSINE, compare_embeddings

IMAGE_FILE = "image_encoder.fp32.onnx"
IMAGE_INPUT = "pixel_values"
IMAGE_OUTPUT = "image_embeds"


class ImageEncoder(nn.Module):
    def __init__(self, adapter: ClipAdapter) -> None:
        super().__init__()
        self.model = adapter.model  # registered, so .eval() reaches it
        self._adapter = adapter

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self._adapter.encode_image(pixel_values, normalize=True)


def export_image_encoder(adapter: ClipAdapter, out_dir: Path, opset: int = DEFAULT_OPSET) -> dict[str, Any]:
    """Write image_encoder.fp32.onnx into `out_dir`, check parity on seeded random pixels, and return
    the manifest section describing it."""
    import onnxruntime as ort

    norm = adapter.image_norm
    module = ImageEncoder(adapter).eval()
    example = torch.randn(2, 3, norm.size, norm.size, generator=torch.Generator().manual_seed(0))
    path = out_dir / IMAGE_FILE
    save_onnx(module, example, path, IMAGE_INPUT, IMAGE_OUTPUT, {0: torch.export.Dim("batch", min=1)}, opset)
    pixels = torch.randn(5, 3, norm.size, norm.size, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        reference = adapter.encode_image(pixels, normalize=True).float().numpy()
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {IMAGE_INPUT: pixels.numpy()})
    parity = compare_embeddings("fp32", reference, np.asarray(got, dtype=np.float32), tokens_identical=True)
    if parity.min_cosine < FP32_MIN_COSINE:
        raise ExportError(
            f"image encoder ONNX parity failed: min cosine {parity.min_cosine:.6f} "
            f"(need >= {FP32_MIN_COSINE})"
        )
    return {
        "file": IMAGE_FILE,
        "input_name": IMAGE_INPUT,
        "output_name": IMAGE_OUTPUT,
        "size": norm.size,
        "mean": list(norm.mean),
        "std": list(norm.std),
        "parity": asdict(parity),
    }
