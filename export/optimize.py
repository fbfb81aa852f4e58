"""Graph optimisation and reduced-precision variants, with onnxruntime's own tools only.

- fp32: `onnxruntime.transformers.optimizer.optimize_model` (model_type "clip": attention, LayerNorm,
  GELU fusions) on the exported graph.
- fp16: that optimiser's `convert_float_to_float16` with float32 inputs/outputs kept, and LayerNorm,
  softmax and the final L2 normalisation blocked in fp32: their reductions overflow fp16 (sums of
  squares over the width exceed 65504).
- int8: `onnxruntime.quantization.quantize_dynamic` (int8 weights, activations quantised per batch
  at run time: no calibration set needed) on the optimised fp32 graph.

Why not optimum's ORTOptimizer/ORTQuantizer: they need an `ORTModel` built from a transformers
config with a known `model_type`, which open_clip towers do not have; and optimum 2.x ships them in
the separate `optimum-onnx` package, which pins optimum~=2.1 and transformers<4.58 (we run optimum
2.3 and transformers 5). Both wrap the very onnxruntime calls used here, so nothing is lost.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import onnx

VARIANTS = ("fp32", "fp16", "int8")
FP16_KEEP_FP32_OPS = [
    "LayerNormalization",
    "SkipLayerNormalization",
    "SimplifiedLayerNormalization",
    "SkipSimplifiedLayerNormalization",
    "Softmax",
    "ReduceL2",
    "ReduceSum",
    "ReduceMean",
    "Pow",
    "Sqrt",
    "Div",
    "ArgMax",
]


@dataclass(frozen=True)
class GraphShape:
    num_heads: int
    hidden_size: int


def parse_variants(text: str) -> list[str]:
    """'fp32,int8' -> ['fp32', 'int8']; fp32 is always built (it is the parity reference)."""
    asked = [v.strip() for v in text.split(",") if v.strip()]
    unknown = [v for v in asked if v not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown variant(s) {unknown}; choose from {', '.join(VARIANTS)}")
    return ["fp32", *[v for v in VARIANTS[1:] if v in asked]]


def _optimizer_model(src: Path, shape: GraphShape):  # type: ignore[no-untyped-def]
    from onnxruntime.transformers.optimizer import optimize_model

    # opt_level=0: only the Python fusions, so the saved graph stays portable across ORT builds and
    # execution providers; ORT applies its own runtime-level optimisations when a session loads it.
    return optimize_model(
        str(src),
        model_type="clip",
        num_heads=shape.num_heads,
        hidden_size=shape.hidden_size,
        opt_level=0,
        use_gpu=False,
    )


def optimize_fp32(src: Path, dst: Path, shape: GraphShape) -> Path:
    model = _optimizer_model(src, shape)
    model.save_model_to_file(str(dst), use_external_data_format=False)
    return dst


def convert_fp16(src: Path, dst: Path, shape: GraphShape) -> Path:
    model = _optimizer_model(src, shape)
    model.convert_float_to_float16(keep_io_types=True, op_block_list=FP16_KEEP_FP32_OPS)
    model.save_model_to_file(str(dst), use_external_data_format=False)
    return dst


def quantize_int8(src: Path, dst: Path) -> Path:
    from onnxruntime.quantization import QuantType, quant_pre_process, quantize_dynamic

    with tempfile.TemporaryDirectory() as tmp:
        # Shape inference + ORT's basic graph clean-up first, as onnxruntime recommends before quantising.
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(src), str(prepared), skip_optimization=False, skip_symbolic_shape=True)
        quantize_dynamic(
            str(prepared),
            str(dst),
            weight_type=QuantType.QInt8,
            op_types_to_quantize=["MatMul", "Gemm", "Attention"],
        )
    return dst


def build_variants(exported: Path, out_dir: Path, variants: list[str], shape: GraphShape) -> dict[str, Path]:
    """exported fp32 graph -> {variant: file in out_dir}; file names are text_encoder.<variant>.onnx."""
    paths: dict[str, Path] = {}
    fp32 = optimize_fp32(exported, out_dir / "text_encoder.fp32.onnx", shape)
    paths["fp32"] = fp32
    if "fp16" in variants:
        paths["fp16"] = convert_fp16(exported, out_dir / "text_encoder.fp16.onnx", shape)
    if "int8" in variants:
        paths["int8"] = quantize_int8(fp32, out_dir / "text_encoder.int8.onnx")
    for path in paths.values():
        onnx.checker.check_model(str(path))
    return paths
