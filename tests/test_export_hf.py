"""A tiny random Hugging Face CLIPModel through the same export, parity and runtime path."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from toolkit.export.parity import HELD_OUT_CAPTIONS
from toolkit.runtime import TextEncoder

CONTEXT = 32


class TinyHFAdapter:
    """The slice of the ClipAdapter interface export uses, over a transformers CLIPModel."""

    family = "hf"

    def __init__(self, model, tokenizer) -> None:  # type: ignore[no-untyped-def]
        self.model, self.tokenizer = model.eval(), tokenizer
        self.context_length = CONTEXT
        self.embed_dim = int(model.config.projection_dim)

    def tokenize(self, texts):  # type: ignore[no-untyped-def]
        return self.tokenizer(
            list(texts), padding="max_length", truncation=True, max_length=CONTEXT, return_tensors="pt"
        )["input_ids"]

    def encode_text(self, tokens, normalize: bool = True):  # type: ignore[no-untyped-def]
        # transformers' own pooling (pooler_output), independent of the export wrapper
        pooled = self.model.text_model(input_ids=tokens).pooler_output
        features = self.model.text_projection(pooled)
        return F.normalize(features, dim=-1) if normalize else features


@pytest.fixture(scope="module")
def hf_adapter(tmp_path_factory: pytest.TempPathFactory) -> TinyHFAdapter:
    import open_clip
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    folder = tmp_path_factory.mktemp("hf")
    reference = open_clip.SimpleTokenizer()
    names = {"<start_of_text>": "<|startoftext|>", "<end_of_text>": "<|endoftext|>"}
    vocab = {names.get(token, token): index for token, index in reference.encoder.items()}
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    merges = sorted(reference.bpe_ranks, key=reference.bpe_ranks.__getitem__)
    (folder / "merges.txt").write_text(
        "#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n", encoding="utf-8"
    )
    tokenizer = CLIPTokenizer.from_pretrained(str(folder), model_max_length=CONTEXT)
    config = CLIPConfig(
        text_config={
            "vocab_size": 49408,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "max_position_embeddings": CONTEXT,
            "eos_token_id": 49407,
            "bos_token_id": 49406,
            "pad_token_id": 49407,
        },
        vision_config={
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "image_size": 32,
            "patch_size": 8,
        },
        projection_dim=16,
    )
    torch.manual_seed(0)
    return TinyHFAdapter(CLIPModel(config), tokenizer)


def test_hf_bundle_parity_every_variant(hf_adapter: TinyHFAdapter, tmp_path: Path) -> None:
    from toolkit.export.bundle import export_bundle

    manifest = export_bundle(hf_adapter, tmp_path / "bundle", ["fp32", "fp16", "int8"])  # type: ignore[arg-type]
    parity = manifest["parity"]
    assert manifest["pool"] == "eos" and manifest["eot_id"] == 49407
    assert manifest["tokenizer"]["cleaning"] == "hf" and manifest["tokenizer"]["pad_id"] == 49407
    assert all(r["tokens_identical"] for r in parity.values()), parity
    assert parity["fp32"]["min_cosine"] >= 0.9999
    assert parity["fp16"]["min_cosine"] >= 0.999 and parity["int8"]["min_cosine"] >= 0.99

    # pad == <eot> here: trimming must still find the first <eot> of each row
    encoder = TextEncoder(tmp_path / "bundle")
    texts = list(HELD_OUT_CAPTIONS[:6])
    with torch.inference_mode():
        reference = hf_adapter.encode_text(hf_adapter.tokenize(texts)).numpy()
    np.testing.assert_allclose(encoder.encode(texts), reference, atol=1e-5)
