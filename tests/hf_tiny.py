"""A tiny random Hugging Face CLIP folder (config, safetensors weights, tokenizer) built at test time.

The tokenizer is a real CLIP byte-level BPE cut down from open_clip's bundled vocabulary
(`bpe_simple_vocab_16e6.txt.gz`): the 512 byte symbols, the first `num_merges` merges and the two
specials. Nothing is downloaded. Usable by any test that needs an `hf:<folder>` model.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

BOS = "<|startoftext|>"
EOS = "<|endoftext|>"
TINY_IMAGE_SIZE = 32
TINY_CONTEXT_LENGTH = 32


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable character table."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
        range(ord("®"), ord("ÿ") + 1)
    )
    chars = list(printable)
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, (chr(c) for c in chars), strict=True))


def write_tiny_clip_tokenizer_files(folder: Path, num_merges: int = 2000) -> int:
    """Write vocab.json and merges.txt for a cut-down CLIP BPE; returns the vocabulary size."""
    import open_clip

    bpe_path = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    with gzip.open(bpe_path, "rt", encoding="utf-8") as handle:
        lines = handle.read().split("\n")
    merges = [line for line in lines[1 : 1 + num_merges] if line.strip()]
    symbols = list(_bytes_to_unicode().values())
    vocab_list = symbols + [s + "</w>" for s in symbols] + ["".join(m.split()) for m in merges] + [BOS, EOS]
    vocab = {token: index for index, token in enumerate(vocab_list)}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    return len(vocab)


def make_tiny_hf_clip(folder: Path, seed: int = 0, num_merges: int = 2000) -> Path:
    """A random CLIPModel (32 px images, 32-token context, 2 layers per tower) saved with its tokenizer."""
    import torch
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    vocab_size = write_tiny_clip_tokenizer_files(folder, num_merges)
    tokenizer = CLIPTokenizer.from_pretrained(str(folder), local_files_only=True)
    tokenizer.model_max_length = TINY_CONTEXT_LENGTH
    tokenizer.save_pretrained(str(folder))
    config = CLIPConfig(
        text_config={
            "vocab_size": vocab_size, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 2, "max_position_embeddings": TINY_CONTEXT_LENGTH,
            "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
            "pad_token_id": tokenizer.pad_token_id,
        },
        vision_config={
            "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
            "image_size": TINY_IMAGE_SIZE, "patch_size": 8,
        },
        projection_dim=16,
    )
    torch.manual_seed(seed)
    model = CLIPModel(config)
    model.save_pretrained(str(folder))
    return folder
