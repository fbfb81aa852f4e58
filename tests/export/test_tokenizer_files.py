"""The torch-free CLIP tokenizer against open_clip's own, and its pieces, without torch where possible."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from toolkit.export.parity import HELD_OUT_CAPTIONS, approve_variants
from toolkit.runtime.tokenizer import (
    ClipBpeTokenizer,
    TokenizerSettings,
    fallback_fix_text,
    is_letter,
    is_number,
    is_space,
    pre_tokenize,
)

CAPTIONS = [
    *HELD_OUT_CAPTIONS,
    "the dog's bone isn't theirs; they'll say we'd've ...",
    "x\u00b2 + \u00bd of \u216b o'clock, 1,234.5 km",
    "<start_of_text> literal specials <end_of_text>",
    "tab\tnew\nline\r\ncarriage \x1b[31mred\x1b[0m bell\x07",
    "\uff21\uff22\uff23 full width \u3000 ideographic space",
    "e\u0301 decomposed accent vs \u00e9",
    "\u0645\u0631\u062d\u0628\u0627 \u05e9\u05dc\u05d5\u05dd \u0928\u092e\u0938\u094d\u0924\u0947",
    "&AMP; &eacute; &#233; &#x41; &amp;amp;amp; &notanentity;",
    "a <b>bold</b> &amp; move",
    "emoji zwj \U0001f468\u200d\U0001f469\u200d\U0001f467 flags \U0001f1eb\U0001f1f7",
    "caf\u00c3\u00a9 mojibake",
]


@pytest.fixture(scope="module")
def bundle_like(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from open_clip.tokenizer import default_bpe

    folder = tmp_path_factory.mktemp("tok")
    shutil.copyfile(default_bpe(), folder / "bpe.txt.gz")
    return folder


@pytest.mark.parametrize("context", [77, 16])
def test_ids_equal_open_clip_simple_tokenizer(bundle_like: Path, context: int) -> None:
    import open_clip

    ours = ClipBpeTokenizer(TokenizerSettings("bpe.txt.gz", context), bundle_like)
    reference = open_clip.SimpleTokenizer(context_length=context)(CAPTIONS).numpy()
    got = ours(CAPTIONS)
    assert got.dtype == np.int64 and got.shape == (len(CAPTIONS), context)
    mismatched = [CAPTIONS[i] for i in np.flatnonzero((got != reference).any(axis=1))]
    assert mismatched == []


def test_truncation_keeps_eot_last_and_pads_with_zero(bundle_like: Path) -> None:
    tok = ClipBpeTokenizer(TokenizerSettings("bpe.txt.gz", 8), bundle_like)
    ids = tok(["a " * 50, "a"])
    assert ids[0, 0] == tok.sot_id == 49406 and ids[0, -1] == tok.eot_id == 49407
    assert ids[0, 1:7].tolist() == [320] * 6  # "a</w>" is id 320 in CLIP's vocabulary
    assert ids[1].tolist() == [49406, 320, 49407, 0, 0, 0, 0, 0]


def test_pre_tokenize_matches_clip_pattern_by_hand() -> None:
    specials = ("<start_of_text>", "<end_of_text>")
    assert pre_tokenize("the dog's 12 toys!!'s", specials) == [
        "the",
        "dog",
        "'s",
        "1",
        "2",
        "toys",
        "!!'",
        "s",
    ]
    assert pre_tokenize("<end_of_text>x", specials) == ["<end_of_text>", "x"]


def test_character_classes_match_regex_module_on_every_code_point() -> None:
    regex = pytest.importorskip("regex")
    letter, number, space = regex.compile(r"\p{L}"), regex.compile(r"\p{N}"), regex.compile(r"\s")
    disagree = []
    for code in range(sys.maxunicode + 1):
        ch = chr(code)
        if 0xD800 <= code <= 0xDFFF:
            continue
        ours = (is_letter(ch), is_number(ch), is_space(ch))
        theirs = (bool(letter.match(ch)), bool(number.match(ch)), bool(space.match(ch)))
        if ours != theirs:
            disagree.append(hex(code))
    # Only code points that this Python's (older) Unicode database leaves unassigned may differ.
    import unicodedata

    assert [c for c in disagree if unicodedata.category(chr(int(c, 16))) != "Cn"] == []


def test_fallback_cleaning_equals_ftfy_except_mojibake(
    bundle_like: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ftfy = pytest.importorskip("ftfy")
    assert (
        fallback_fix_text("\u201cx\u2019s\u201d \ufb01 \uff21")
        == ftfy.fix_text("\u201cx\u2019s\u201d \ufb01 \uff21")
        == '"x\'s" fi A'
    )
    with_ftfy = ClipBpeTokenizer(TokenizerSettings("bpe.txt.gz", 77), bundle_like)
    monkeypatch.setitem(sys.modules, "ftfy", None)
    without = ClipBpeTokenizer(TokenizerSettings("bpe.txt.gz", 77), bundle_like)
    with pytest.warns(RuntimeWarning):
        differs = [c for c in CAPTIONS if with_ftfy.clean(c) != without.clean(c)]
    assert differs == ["caf\u00c3\u00a9 mojibake"]  # mojibake repair is the one documented gap


def test_missing_ftfy_is_explicit(bundle_like: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ftfy", None)  # makes `import ftfy` raise ImportError
    with pytest.raises(RuntimeError, match="ftfy is not installed"):
        ClipBpeTokenizer(TokenizerSettings("bpe.txt.gz", 77), bundle_like, require_ftfy=True)
    tok = ClipBpeTokenizer(TokenizerSettings("bpe.txt.gz", 77), bundle_like)
    assert not tok.exact_cleaning
    with pytest.warns(RuntimeWarning, match="ftfy is not installed"):
        tok(["caf\u00e9"])


def test_approve_variants_by_tolerance() -> None:
    reference = {"retrieval_r5": 60.0, "compositional_accuracy": 70.0}
    approvals = approve_variants(
        reference,
        {
            "fp16": {"retrieval_r5": 59.9, "compositional_accuracy": 70.2},
            "int8": {"retrieval_r5": 59.4, "compositional_accuracy": 69.8},
            "int4": {"retrieval_r5": 60.0},
        },
    )
    assert approvals["fp16"].approved and approvals["fp16"].worst_drop == pytest.approx(0.1)
    assert not approvals["int8"].approved and approvals["int8"].worst_drop == pytest.approx(0.6)
    assert "retrieval_r5" in approvals["int8"].reasons[0]
    assert not approvals["int4"].approved and approvals["int4"].reasons == (
        "compositional_accuracy: not evaluated",
    )
