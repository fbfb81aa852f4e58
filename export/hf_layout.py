"""`--layout hf`: the transformers.js / optimum folder convention, next to the bundle's own files.

    config.json                         model_type "clip", architectures CLIPTextModelWithProjection
    tokenizer.json, tokenizer_config.json, special_tokens_map.json   (written for every bundle)
    onnx/text_model.onnx                the fp32 graph (input_ids [+ attention_mask] -> text_embeds)
    onnx/text_model_fp16.onnx, onnx/text_model_quantized.onnx         when fp16 / int8 were built

transformers.js's `CLIPTextModelWithProjection.from_pretrained(folder)` loads it offline as it is. The files
are copies of the bundle's graphs, hashed in the same manifest, so `toolkit verify` covers them.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

LAYOUTS = ("bundle", "hf")
HF_CONFIG = "config.json"
# transformers.js's file-name suffix per dtype (fp32: none, int8 dynamic quantisation: "_quantized").
_SUFFIX = {"fp32": "", "fp16": "_fp16", "int8": "_quantized"}


def write_hf_layout(stage: Path, graphs: dict[str, Path], facts: dict[str, Any]) -> list[str]:
    """Write config.json and onnx/text_model*.onnx into `stage`; return the new files (bundle-relative)."""
    (stage / "onnx").mkdir(exist_ok=True)
    written = []
    for variant, path in graphs.items():
        name = f"onnx/text_model{_SUFFIX[variant]}.onnx"
        shutil.copyfile(path, stage / name)
        written.append(name)
    text_config = {
        "model_type": "clip_text_model",
        "hidden_size": facts["width"],
        "num_attention_heads": facts["num_heads"],
        "max_position_embeddings": facts["context_length"],
        "projection_dim": facts["embed_dim"],
        "vocab_size": facts["vocab_size"],
        "bos_token_id": facts["sot_id"],
        "eos_token_id": facts["eot_id"],
        "pad_token_id": facts["pad_id"],
    }
    config = {
        "model_type": "clip",
        "architectures": ["CLIPTextModelWithProjection"],
        "projection_dim": facts["embed_dim"],
        "text_config": text_config,
        # Not HF's: the graph already returns unit-length text_embeds.
        "clic_toolkit": {"normalised_output": True, "source": facts["architecture"]},
    }
    (stage / HF_CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return [HF_CONFIG, *written]
