"""The text encoder as an ONNX graph: int64 token ids [batch, seq] -> L2-normalised float32 [batch, dim].

Both axes are dynamic. The runtime trims every batch to its longest <eot> + 1 (see
`toolkit.runtime.encoder`), so the graph slices the positional embedding and the causal mask to the
sequence length it is given instead of assuming the full context.

Pitfalls handled here:
- Pooling at <eot>: open_clip and OpenAI-style HF CLIP take the argmax of the ids (<eot> has the
  largest id). ArgMax is taken on int32: ORT's CPU ArgMax has no int64 kernel on every build.
- Ids enter as int64 (what the tokenizer produces) and stay int64 for Gather.
"""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from toolkit.adapters.base import ClipAdapter
from toolkit.core.components import require
from toolkit.core.errors import InputError

DEFAULT_OPSET = 18  # the dynamo exporter's native opset (no version conversion); LayerNormalization since 17
INPUT_NAME = "input_ids"
OUTPUT_NAME = "text_embeds"


class ExportError(InputError):
    """The model cannot be exported as asked; the message says why and what to do."""


@dataclass(frozen=True)
class TextEncoderFacts:
    """What the bundle manifest and the runtime need to know about the exported graph."""

    architecture: str
    family: str
    embed_dim: int
    context_length: int
    pool: str  # argmax | eos | first: all read positions <= <eot>, so trimming after it is exact
    eot_id: int
    num_heads: int
    width: int
    causal: bool  # causal attention + pooling at or before <eot>: trimming after <eot> is exact


def _pool(x: torch.Tensor, ids: torch.Tensor, pool: str, eot_id: int) -> torch.Tensor:
    rows = torch.arange(x.shape[0], device=x.device)
    if pool == "argmax":
        index = ids.to(torch.int32).argmax(dim=-1)
    elif pool == "eos":
        index = (ids == eot_id).to(torch.int32).argmax(dim=-1)
    elif pool == "first":
        index = torch.zeros_like(rows)
    else:
        raise ExportError(
            f"text pooling {pool!r} is not exportable with sequence trimming; "
            "only argmax, eos and first pooling read positions up to <eot>"
        )
    return x[rows, index]


class OpenClipTextEncoder(nn.Module):
    """open_clip's `CLIP.encode_text(normalize=True)`, with the sequence length taken from the input."""

    clip: Any  # open_clip.CLIP; its submodules are reached by attribute

    def __init__(self, clip: Any) -> None:
        super().__init__()
        self.clip = clip
        self.pool = str(getattr(clip, "text_pool_type", "argmax"))
        self.eot_id = int(getattr(clip, "text_eos_id", None) or (clip.token_embedding.num_embeddings - 1))

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        clip = self.clip
        seq = input_ids.shape[1]
        x = clip.token_embedding(input_ids)
        x = x + clip.positional_embedding[:seq]
        mask = clip.attn_mask[:seq, :seq] if clip.attn_mask is not None else None
        x = clip.transformer(x, attn_mask=mask)
        x = clip.ln_final(x)
        x = _pool(x, input_ids, self.pool, self.eot_id)
        projection = clip.text_projection
        if projection is not None:
            x = projection(x) if isinstance(projection, nn.Linear) else x @ projection
        return F.normalize(x, dim=-1)


class HFClipTextEncoder(nn.Module):
    """transformers' `CLIPModel.get_text_features`, normalised. HF builds its causal mask and position
    ids from the input's length, so dynamic sequences need no change."""

    clip: Any  # transformers.CLIPModel

    def __init__(self, clip: Any) -> None:
        super().__init__()
        self.clip = clip
        eos = int(clip.config.text_config.eos_token_id)
        # transformers' legacy rule: eos_token_id == 2 marks old configs that pool at argmax.
        self.pool = "argmax" if eos == 2 else "eos"
        self.eot_id = eos

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        hidden = self.clip.text_model(input_ids=input_ids).last_hidden_state
        pooled = _pool(hidden, input_ids, self.pool, self.eot_id)  # hidden is already final-normed
        return F.normalize(self.clip.text_projection(pooled), dim=-1)


def text_encoder_module(adapter: ClipAdapter) -> tuple[nn.Module, TextEncoderFacts]:
    """The exportable text encoder of an adapter, and the facts the manifest records about it."""
    model: Any = adapter.model
    module: Any
    if adapter.family == "open_clip":
        module = OpenClipTextEncoder(model)
        name = str(getattr(adapter, "name", "open_clip"))
        pool = module.pool
        # argmax pooling finds <eot> as the largest id; the tokenizer knows which id that is.
        tokenizer_eot = getattr(adapter.tokenizer, "eot_token_id", None)
        eot_id = module.eot_id if pool == "eos" or tokenizer_eot is None else tokenizer_eot
        transformer = model.transformer
        heads, width = int(transformer.resblocks[0].attn.num_heads), int(transformer.width)
        causal = model.attn_mask is not None  # without the causal mask, padding would reach <eot>
    elif adapter.family == "hf":
        module = HFClipTextEncoder(model)
        name = str(getattr(model.config, "_name_or_path", "") or "hf-clip")
        eot_id, pool = module.eot_id, module.pool
        text_config = model.config.text_config
        heads, width = int(text_config.num_attention_heads), int(text_config.hidden_size)
        causal = True  # CLIP's HF text model always applies its causal mask
    else:
        raise ExportError(
            f"no ONNX text export for model family {adapter.family!r}; supported: open_clip, hf"
        )
    module.eval()
    facts = TextEncoderFacts(
        architecture=name,
        family=adapter.family,
        embed_dim=adapter.embed_dim,
        context_length=adapter.context_length,
        pool=str(pool),
        eot_id=int(eot_id),
        num_heads=heads,
        causal=causal,
        width=width,
    )
    return module, facts


def save_onnx(module: nn.Module, example: torch.Tensor, out_path: Path, input_name: str, output_name: str,
              dynamic_axes: dict[int, Any], opset: int) -> None:
    """One single-file ONNX graph through the torch.export-based exporter (shared by text and image)."""
    require("export")  # torch.onnx imports onnxscript lazily: name the fix instead of a traceback
    out_path.parent.mkdir(parents=True, exist_ok=True)
    # The exporter prints progress on stdout; keep stdout for the CLI's --json output.
    with torch.inference_mode(False), torch.no_grad(), contextlib.redirect_stdout(sys.stderr):
        program = torch.onnx.export(module, (example,), dynamo=True, opset_version=opset, external_data=False,
                                    input_names=[input_name], output_names=[output_name],
                                    dynamic_shapes=(dynamic_axes,), optimize=True, verbose=False)
        if program is None:
            raise ExportError(f"torch.onnx.export returned no program for {out_path.name}; this torch version "
                              "is not supported")
        program.save(str(out_path), external_data=False)


def export_text_encoder(
    module: nn.Module, out_path: Path, example_ids: torch.Tensor, opset: int = DEFAULT_OPSET
) -> Path:
    """Write `module` as a single-file fp32 ONNX graph with dynamic batch and sequence axes."""
    if example_ids.dtype != torch.int64 or example_ids.ndim != 2:
        raise ExportError(
            f"example ids must be int64 [batch, seq], got {example_ids.dtype} {tuple(example_ids.shape)}"
        )
    # The torch.export-based exporter: the TorchScript one bakes nn.MultiheadAttention's reshape sizes in
    # as constants, which pins the sequence length. min=2: <sot> and <eot> at least.
    batch, seq = torch.export.Dim("batch", min=1), torch.export.Dim("sequence", min=2, max=4096)
    save_onnx(module, example_ids, out_path, INPUT_NAME, OUTPUT_NAME, {0: batch, 1: seq}, opset)
    return out_path
