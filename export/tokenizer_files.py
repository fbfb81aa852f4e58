"""The bundle's tokenizer in the Hugging Face format that foreign clients load as it is.

`tokenizer.json` (+ `tokenizer_config.json`, `special_tokens_map.json`) is generated with the `tokenizers`
library from the very vocabulary and merges the runtime reads (`toolkit.runtime.tokenizer.ClipBpeTokenizer`),
so Rust/Java/C#/Node tokenizers and transformers.js reproduce its ids without porting any BPE code:

- normalizer: the character-level part of the runtime's cleaning that a regex can express (ANSI escapes,
  curly quotes, ligatures, full-width forms, control characters), then NFC, whitespace collapsed, lower case.
  HTML entities and ftfy's mojibake repair cannot be written as a normalizer; the cleaning contract
  (`toolkit.export.conformance`) states what a client must do about them.
- pre-tokenizer: CLIP's split regex, then byte-level mapping (no regex, no prefix space);
- model: BPE with the `</w>` end-of-word suffix; post-processor: `<sot> $A <eot>`;
- truncation to the context with the specials counted, which keeps `<eot>` last as CLIP does.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from toolkit.runtime.tokenizer import (
    _CONTROL_CHARS,
    _DOUBLE_QUOTES,
    _LIGATURES,
    _SINGLE_QUOTES,
    _WIDTH_MAP,
    ClipBpeTokenizer,
)

TOKENIZER_JSON = "tokenizer.json"
TOKENIZER_CONFIG = "tokenizer_config.json"
SPECIAL_TOKENS_MAP = "special_tokens_map.json"
TOKENIZER_FILES = (TOKENIZER_JSON, TOKENIZER_CONFIG, SPECIAL_TOKENS_MAP)
# CLIP's pre-tokenisation regex (open_clip and HF), as the Split pre-tokenizer's pattern.
CLIP_SPLIT = r"'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"
_ANSI_ESCAPE = r"\x1b\[(?:\d|;)*[a-zA-Z]"


def _normalizer(cleaning: str) -> Any:
    from tokenizers import Regex, normalizers

    steps: list[Any] = []
    if cleaning == "open_clip":
        # The runtime's ftfy fallback, minus HTML entities and mojibake (see the module docstring).
        steps.append(normalizers.Replace(Regex(_ANSI_ESCAPE), ""))
        steps.append(normalizers.Replace(Regex(_SINGLE_QUOTES.pattern), "'"))
        steps.append(normalizers.Replace(Regex(_DOUBLE_QUOTES.pattern), '"'))
        for table in (_LIGATURES, _WIDTH_MAP):
            steps += [normalizers.Replace(chr(code), str(text)) for code, text in sorted(table.items())]
        controls = "".join(f"\\x{{{code:x}}}" for code in sorted(_CONTROL_CHARS))
        steps.append(normalizers.Replace(Regex(f"[{controls}]"), ""))
    steps += [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Strip(),
              normalizers.Lowercase()]
    return normalizers.Sequence(steps)


def build_hf_tokenizer(runtime: ClipBpeTokenizer) -> Any:
    """A `tokenizers.Tokenizer` with the runtime tokenizer's vocabulary, merges, specials and truncation."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors

    settings = runtime.settings
    merges = sorted(runtime.bpe_ranks, key=runtime.bpe_ranks.__getitem__)
    model = models.BPE(vocab=dict(runtime.encoder), merges=merges, unk_token=settings.eot_token,
                       end_of_word_suffix="</w>", continuing_subword_prefix="", fuse_unk=False)
    tokenizer = Tokenizer(model)
    tokenizer.normalizer = _normalizer(settings.cleaning)
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(CLIP_SPLIT), behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tokenizer.decoder = decoders.ByteLevel()
    sot, eot = settings.sot_token, settings.eot_token
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{sot} $A {eot}", pair=f"{sot} $A {eot} $B {eot}",
        special_tokens=[(sot, runtime.sot_id), (eot, runtime.eot_id)])
    tokenizer.add_special_tokens([AddedToken(sot, special=True, normalized=False),
                                  AddedToken(eot, special=True, normalized=False)])
    # Truncation counts the two specials, so the result is <sot> + context-2 tokens + <eot>: CLIP's rule.
    tokenizer.enable_truncation(max_length=settings.context_length)
    return tokenizer


def write_tokenizer_files(runtime: ClipBpeTokenizer, folder: Path) -> list[Path]:
    """Write tokenizer.json, tokenizer_config.json and special_tokens_map.json into `folder`."""
    settings = runtime.settings
    folder.mkdir(parents=True, exist_ok=True)
    id_to_token = {index: token for token, index in runtime.encoder.items()}
    specials = {"bos_token": settings.sot_token, "eos_token": settings.eot_token,
                "unk_token": settings.eot_token, "pad_token": id_to_token[settings.pad_id]}
    build_hf_tokenizer(runtime).save(str(folder / TOKENIZER_JSON), pretty=False)
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": settings.context_length,
        "do_lower_case": True,
        "add_prefix_space": False,
        "clean_up_tokenization_spaces": False,
        "padding_side": "right",
        "truncation_side": "right",
        **specials,
    }
    for name, content in ((TOKENIZER_CONFIG, config), (SPECIAL_TOKENS_MAP, specials)):
        (folder / name).write_text(json.dumps(content, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return [folder / name for name in TOKENIZER_FILES]
