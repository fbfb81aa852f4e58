"""The cleaning contract and the conformance vectors that prove a foreign client follows it.

`conformance.jsonl` in every bundle holds, per tricky caption: its name, the raw text, the cleaned text, the
ids (up to and including `<eot>`), the fp32 embedding, and which class of client reproduces the ids:

- "standard": any client that loads `tokenizer.json` as it is, on the raw text;
- "cleaning": a client that first applies the contract's cleaning steps (`CLEANING_STEPS`; HTML entities
  cannot be written as a tokenizer.json normalizer), i.e. tokenizes the `cleaned` text;
- "ftfy": only Python with ftfy (mojibake repair); `ids_without_ftfy` is what a client without it gets.

The class is measured at export with the `tokenizers` library, not assumed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from toolkit.runtime.tokenizer import ClipBpeTokenizer, portable_clean

CONFORMANCE_FILE = "conformance.jsonl"

# The open_clip cleaning, in order, in words any language can implement (toolkit.runtime.tokenizer).
CLEANING_STEPS: tuple[str, ...] = (
    "ftfy.fix_text (Python only); without ftfy, in this order:",
    "  if the text has no '<': unescape HTML entities (&name; &#123; &#x1F;)",
    "  remove ANSI escapes ESC [ (digits|;)* letter",
    "  U+02BC, U+2018..U+201B -> '  ;  U+201C..U+201F -> \"",
    "  ligatures (U+0132 U+0133 U+0149 U+01C4..U+01CC U+FB00..U+FB06) -> their letters",
    "  U+3000 -> space; U+FF01..U+FFEF -> NFKC of the character",
    "  line breaks CRLF CR U+2028 U+2029 U+0085 -> LF; remove control characters (C0 except TAB LF FF CR, DEL, "
    "U+206A..U+206F, U+FEFF, U+FFF9..U+FFFC)",
    "  NFC",
    "unescape HTML entities twice (Python html.unescape)",
    "collapse whitespace runs to one space, strip",
    "lower case",
)
CLEANING_IN_TOKENIZER_JSON = ("everything except the HTML entity unescaping and ftfy's mojibake repair; the "
                              "two specials are matched in the raw text before cleaning")


def _long(words: int) -> str:
    colours = ["red", "green", "blue", "yellow", "black", "white", "small", "large"]
    things = ["cube", "ball", "cone", "box", "dog", "cat", "chair", "table"]
    return " ".join(f"a {colours[i % 8]} {things[(i * 3) % 8]}," for i in range(words // 3))


CONFORMANCE_CAPTIONS: tuple[tuple[str, str], ...] = (
    ("plain", "a red cube left of a blue ball."),
    ("sentences", "A man wearing a black hat. A water feature in a garden."),
    ("contractions", "the cat's toy isn't under the sofa, they'll say it's on the chair!"),
    ("punctuation_only", "...!!!???"),
    ("symbols", "-- * -- # -- @home 50% off $3.99"),
    ("numbers", "x\u00b2 + \u00bd of \u216b o'clock, 1,234.5 km"),
    ("empty", ""),
    ("whitespace_only", "   \t\n  "),
    ("odd_whitespace", "tab\tnew\nline\r\ncarriage  return\u00a0nbsp"),
    ("accents", "caf\u00e9 na\u00efve \u00fcber cr\u00e8me br\u00fbl\u00e9e"),
    ("decomposed_accent", "e\u0301 decomposed accent vs \u00e9"),
    ("cjk_cyrillic", "\u6771\u4eac\u30bf\u30ef\u30fc\u3068\u5bcc\u58eb\u5c71 \u2014 "
                     "\u041f\u0440\u0438\u0432\u0435\u0442"),
    ("rtl_indic", "\u0645\u0631\u062d\u0628\u0627 \u05e9\u05dc\u05d5\u05dd \u0928\u092e\u0938\u094d\u0924\u0947"),
    ("emoji", "a dog \U0001f436 and a cat \U0001f431 sharing a \U0001f355"),
    ("emoji_zwj_flags", "family \U0001f468\u200d\U0001f469\u200d\U0001f467 flags \U0001f1eb\U0001f1f7"),
    ("curly_quotes", "\u201cquoted\u201d text with \u2018curly\u2019 quotes"),
    ("ligatures", "\ufb01ne \ufb02owers in the o\ufb03ce"),
    ("full_width", "\uff21\uff22\uff23 full width\u3000ideographic space \uff11\uff12\uff13"),
    ("ansi_and_control", "\x1b[31mred\x1b[0m text with a bell\x07 and a null\x00"),
    ("html_entities", "fish &amp; chips &lt;3 at 12:30pm"),
    ("html_named_numeric", "&eacute;t&eacute; &#233; &#x41; &amp;amp;amp;"),
    ("html_with_markup", "a <b>bold</b> &amp; move"),
    ("mojibake", "caf\u00c3\u00a9 cr\u00c3\u00a8me"),
    ("literal_specials", "<start_of_text> literal specials <end_of_text>"),
    ("long", "a very long caption that keeps describing the scene: " + _long(90)),
    ("long_upper", ("a very long caption that keeps describing the scene: " + _long(90)).upper()),
    ("long_one_word", "x" * 400),
)


@dataclass(frozen=True)
class ConformanceCase:
    name: str
    text: str
    cleaned: str
    ids: list[int]
    client: str  # standard | cleaning | ftfy
    ids_without_ftfy: list[int]


def classify_cases(runtime: ClipBpeTokenizer, hf_tokenizer: Any,
                   captions: tuple[tuple[str, str], ...] = CONFORMANCE_CAPTIONS) -> list[ConformanceCase]:
    """Each caption's ids from the product's tokenizer, and which kind of client reproduces them."""
    cases = []
    hf_cleaning = runtime.settings.cleaning == "hf"
    for name, text in captions:
        ids = runtime.ids(text)
        cleaned = runtime.clean(text)
        portable = cleaned if hf_cleaning else portable_clean(text)
        without_ftfy = list(hf_tokenizer.encode(portable).ids)
        if list(hf_tokenizer.encode(text).ids) == ids:
            client = "standard"
        elif without_ftfy == ids:
            client = "cleaning"
        else:
            client = "ftfy"
        cases.append(ConformanceCase(name, text, portable if client == "cleaning" else cleaned, ids, client,
                                     without_ftfy))
    return cases


def write_conformance(cases: list[ConformanceCase], embeddings: np.ndarray, path: Path) -> None:
    """One JSON object per line; embeddings as float32 values written in full (repr round-trips)."""
    with path.open("w", encoding="utf-8") as handle:
        for case, vector in zip(cases, embeddings, strict=True):
            record = {"name": case.name, "text": case.text, "cleaned": case.cleaned, "client": case.client,
                      "ids": case.ids, "ids_without_ftfy": case.ids_without_ftfy,
                      "embedding": [float(v) for v in np.asarray(vector, dtype=np.float32)]}
            handle.write(json.dumps(record, ensure_ascii=False) + "\n")


def read_conformance(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
