"""CLIP's byte-level BPE tokenizer in pure Python: no torch, no `regex`, `ftfy` optional.

It reproduces open_clip's `SimpleTokenizer` (clean="lower"): ftfy.fix_text, html.unescape twice,
whitespace collapse, lowercase, CLIP's pre-tokenisation pattern, BPE, then <sot> ... <eot> truncated
to the context with <eot> kept last and zero padding. With cleaning="hf" it follows Hugging Face's
CLIPTokenizer (transformers 5, tokenizers backend) instead: NFC, whitespace runs -> " ", lowercase, no
ftfy and no HTML unescaping, padding with its own pad id (<eot> for OpenAI checkpoints).

The `regex` package's classes (\\p{L}, \\p{N}, \\s) are replaced by `unicodedata` categories; a test
compares them with `regex` over every code point. When `ftfy` is missing (a lean runtime image),
`fallback_fix_text` applies ftfy's character-level fixes but cannot repair mojibake; callers decide
whether that is acceptable (see `toolkit.runtime.encoder.TextEncoder(require_ftfy=...)`).
"""

from __future__ import annotations

import gzip
import html
import re
import unicodedata
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from toolkit.runtime.manifest import MAX_MERGE_LINE_CHARS, MAX_MERGES

# open_clip reads exactly this many merges from its BPE file (vocab 49408 = 256*2 + merges + 2 specials).
OPEN_CLIP_MERGES = 49152 - 256 - 2
CONTRACTIONS = ("'s", "'t", "'re", "'ve", "'m", "'ll", "'d")


@dataclass(frozen=True)
class TokenizerSettings:
    """Everything the runtime needs to tokenize like training did; stored in the bundle manifest."""

    bpe_file: str  # gzip text file of merges, open_clip's `bpe_simple_vocab_16e6.txt.gz` layout
    context_length: int
    num_merges: int = OPEN_CLIP_MERGES
    sot_token: str = "<start_of_text>"
    eot_token: str = "<end_of_text>"
    pad_id: int = 0
    cleaning: str = "open_clip"  # open_clip | hf (see the module docstring)


@lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """CLIP's reversible byte -> printable character table (printable Latin-1 bytes map to themselves)."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    table = {b: chr(b) for b in printable}
    shift = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + shift)
            shift += 1
    return table


# ---- text cleaning -------------------------------------------------------------------------------

_ANSI_ESCAPE = re.compile("\033\\[((?:\\d|;)*)([a-zA-Z])")
_HTML_ENTITY = re.compile(r"&#?[0-9A-Za-z]{1,24};")
_SINGLE_QUOTES = re.compile("[\u02bc\u2018-\u201b]")
_DOUBLE_QUOTES = re.compile("[\u201c-\u201f]")
_CONTROL_CHARS = {
    c: None
    for c in [
        *range(0x00, 0x09),
        0x0B,
        *range(0x0E, 0x20),
        0x7F,
        *range(0x206A, 0x2070),
        0xFEFF,
        *range(0xFFF9, 0xFFFD),
    ]
}
_LIGATURES = {
    ord(k): v
    for k, v in {
        "Ĳ": "IJ",
        "ĳ": "ij",
        "ŉ": "ʼn",
        "Ǳ": "DZ",
        "ǲ": "Dz",
        "ǳ": "dz",
        "Ǆ": "DŽ",
        "ǅ": "Dž",
        "ǆ": "dž",
        "Ǉ": "LJ",
        "ǈ": "Lj",
        "ǉ": "lj",
        "Ǌ": "NJ",
        "ǋ": "Nj",
        "ǌ": "nj",
        "ﬀ": "ff",
        "ﬁ": "fi",
        "ﬂ": "fl",
        "ﬃ": "ffi",
        "ﬄ": "ffl",
        "ﬅ": "ſt",
        "ﬆ": "st",
    }.items()
}
_WIDTH_MAP = {0x3000: " "} | {
    i: unicodedata.normalize("NFKC", chr(i))
    for i in range(0xFF01, 0xFFF0)
    if unicodedata.normalize("NFKC", chr(i)) != chr(i)
}
_LINE_BREAKS = re.compile("\r\n|\r|\u2028|\u2029|\u0085")


def fallback_fix_text(text: str) -> str:
    """ftfy.fix_text's character-level fixes, in ftfy's order, for when ftfy is not installed.

    Exact for text that needs no mojibake repair (all plain ASCII text, accents, CJK, emoji, curly
    quotes, ligatures, full-width forms). Not done: mojibake/C1-control repair and ftfy's all-caps
    HTML entities; text that needs them tokenizes differently from training.
    """
    if "<" not in text:  # ftfy's "auto" HTML mode: text with '<' may be real markup, left alone
        text = _HTML_ENTITY.sub(lambda m: html.unescape(m.group(0)), text)
    text = _ANSI_ESCAPE.sub("", text)
    text = _SINGLE_QUOTES.sub("'", _DOUBLE_QUOTES.sub('"', text))
    text = text.translate(_LIGATURES).translate(_WIDTH_MAP)
    text = _LINE_BREAKS.sub("\n", text).translate(_CONTROL_CHARS)
    return unicodedata.normalize("NFC", text)


def finish_cleaning(text: str) -> str:
    """The steps after ftfy (or its fallback): HTML unescaped twice, whitespace collapsed, lower case."""
    text = html.unescape(html.unescape(text))
    return " ".join(text.strip().split()).lower()


def portable_clean(text: str) -> str:
    """The open_clip cleaning without ftfy: what a client in any language implements (see the manifest)."""
    return finish_cleaning(fallback_fix_text(text))


def ftfy_fix_text() -> Callable[[str], str] | None:
    """ftfy.fix_text when ftfy is importable, else None."""
    try:
        import ftfy
    except ImportError:
        return None
    fix: Callable[[str], str] = ftfy.fix_text
    return fix


# ---- pre-tokenisation: CLIP's regex, by Unicode category ------------------------------------------


def is_letter(ch: str) -> bool:
    return unicodedata.category(ch)[0] == "L"


def is_number(ch: str) -> bool:
    return unicodedata.category(ch)[0] == "N"


def is_space(ch: str) -> bool:
    # The `regex` module's \s: Unicode White_Space. str.isspace() adds U+001C..U+001F, which CLIP's
    # whitespace cleaning already turns into spaces, so the two agree on cleaned text.
    return ch.isspace() and ch not in "\x1c\x1d\x1e\x1f"


def pre_tokenize(text: str, specials: Sequence[str], max_pieces: int | None = None) -> list[str]:
    """Split like `special|'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|[^\\s\\p{L}\\p{N}]+` (IGNORECASE).

    With `max_pieces`, stop after that many: the scan goes left to right and finishes each piece before
    the next, so the pieces returned are exactly the first ones of the whole text's."""
    pieces: list[str] = []
    i, n = 0, len(text)
    lowered = text.lower()
    while i < n and (max_pieces is None or len(pieces) < max_pieces):
        special = next((s for s in specials if lowered.startswith(s.lower(), i)), None)
        if special is not None:
            pieces.append(text[i : i + len(special)])
            i += len(special)
            continue
        contraction = next((c for c in CONTRACTIONS if lowered.startswith(c, i)), None)
        if contraction is not None:
            pieces.append(text[i : i + len(contraction)])
            i += len(contraction)
            continue
        ch = text[i]
        if is_letter(ch):
            j = i + 1
            while j < n and is_letter(text[j]):
                j += 1
        elif is_number(ch):
            j = i + 1
        elif is_space(ch):
            i += 1
            continue
        else:
            j = i + 1
            while j < n and not (is_letter(text[j]) or is_number(text[j]) or is_space(text[j])):
                j += 1
        pieces.append(text[i:j])
        i = j
    return pieces


# ---- BPE ------------------------------------------------------------------------------------------


class ClipBpeTokenizer:
    """texts -> int64 [N, context_length], identical to the tokenizer the model was trained with."""

    def __init__(self, settings: TokenizerSettings, bundle_dir: Path, require_ftfy: bool = False) -> None:
        self.settings = settings
        merges = _read_merges(bundle_dir / settings.bpe_file, settings.num_merges)
        byte_chars = list(bytes_to_unicode().values())
        vocab = byte_chars + [c + "</w>" for c in byte_chars] + ["".join(m) for m in merges]
        vocab += [settings.sot_token, settings.eot_token]
        self.encoder = {token: index for index, token in enumerate(vocab)}
        self.bpe_ranks = {merge: rank for rank, merge in enumerate(merges)}
        self.sot_id = self.encoder[settings.sot_token]
        self.eot_id = self.encoder[settings.eot_token]
        self._specials = (settings.sot_token, settings.eot_token)
        self._cache: dict[str, list[str]] = {s: [s] for s in self._specials}
        if settings.cleaning not in ("open_clip", "hf"):
            raise ValueError(f"unknown tokenizer cleaning {settings.cleaning!r}; expected open_clip or hf")
        self._fix_text = ftfy_fix_text() if settings.cleaning == "open_clip" else None
        if self._fix_text is None and require_ftfy and settings.cleaning == "open_clip":
            raise RuntimeError(
                "ftfy is not installed but the runtime was asked for exact text cleaning "
                "(require_ftfy=True); `pip install ftfy`"
            )
        self._warned_fallback = False

    @property
    def exact_cleaning(self) -> bool:
        """False when ftfy is missing: non-ASCII text needing mojibake repair may tokenize differently."""
        return self.settings.cleaning == "hf" or self._fix_text is not None

    def clean(self, text: str) -> str:
        if self.settings.cleaning == "hf":
            return " ".join(unicodedata.normalize("NFC", text).split()).lower()
        if self._fix_text is not None:
            text = self._fix_text(text)
        else:
            if not text.isascii() and not self._warned_fallback:
                warnings.warn(
                    "ftfy is not installed: non-ASCII text is cleaned without mojibake repair and "
                    "may tokenize differently from training; `pip install ftfy` for exact "
                    "tokenization",
                    RuntimeWarning,
                    stacklevel=3,
                )
                self._warned_fallback = True
            text = fallback_fix_text(text)
        return finish_cleaning(text)

    def bpe(self, token: str) -> list[str]:
        cached = self._cache.get(token)
        if cached is not None:
            return cached
        word = [*token[:-1], token[-1] + "</w>"]
        while len(word) > 1:
            pairs = {(word[k], word[k + 1]) for k in range(len(word) - 1)}
            best = min(pairs, key=lambda pair: self.bpe_ranks.get(pair, len(self.bpe_ranks)))
            if best not in self.bpe_ranks:
                break
            merged: list[str] = []
            k = 0
            while k < len(word):
                if k < len(word) - 1 and (word[k], word[k + 1]) == best:
                    merged.append(word[k] + word[k + 1])
                    k += 2
                else:
                    merged.append(word[k])
                    k += 1
            word = merged
        self._cache[token] = word
        return word

    def encode(self, text: str, min_tokens: int | None = None) -> list[int]:
        """The token ids of `text`; with `min_tokens`, only a prefix of them at least that long (or all).

        Every piece gives one token or more, so the first `min_tokens` pieces give the first `min_tokens`
        ids or more, equal to those of the whole text: a 10 MB query costs its cleaning, not the
        pre-tokenisation and BPE of text the context would cut anyway."""
        byte_chars = bytes_to_unicode()
        ids: list[int] = []
        for piece in pre_tokenize(self.clean(text), self._specials, min_tokens):
            if piece in self._specials:
                ids.append(self.encoder[piece])
                continue
            mapped = "".join(byte_chars[b] for b in piece.encode("utf-8"))
            ids.extend(self.encoder[sub] for sub in self.bpe(mapped))
        return ids

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        if isinstance(texts, str):
            raise TypeError("pass a list of texts, not one string")
        out = np.full((len(texts), self.settings.context_length), self.settings.pad_id, dtype=np.int64)
        for row, text in enumerate(texts):
            ids = self.ids(text)
            out[row, : len(ids)] = ids
        return out

    def ids(self, text: str) -> list[int]:
        """<sot> + tokens + <eot>, unpadded; over the context, cut keeping <eot> last as training did."""
        width = self.settings.context_length
        # width - 1 tokens are enough to decide the cut: more than width - 2 means it is cut.
        ids = [self.sot_id, *self.encode(text, min_tokens=width - 1), self.eot_id]
        return [*ids[: width - 1], self.eot_id] if len(ids) > width else ids


def _read_merges(path: Path, count: int) -> list[tuple[str, str]]:
    """The first `count` merges, streamed: only the lines used are decompressed, each at most
    MAX_MERGE_LINE_CHARS, so a decompression bomb costs no more than a normal file (`verify_bundle`
    refuses it outright; this is the second line of defence for callers that skip it)."""

    if not 0 < count <= MAX_MERGES:
        raise RuntimeError(f"BPE merges: num_merges {count} is outside 1..{MAX_MERGES}")
    merges: list[tuple[str, ...]] = []
    try:
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            handle.readline(MAX_MERGE_LINE_CHARS + 1)  # the header
            for _ in range(count):
                line = handle.readline(MAX_MERGE_LINE_CHARS + 1)
                if not line:
                    break
                merges.append(tuple(line.split()) if len(line) <= MAX_MERGE_LINE_CHARS else ())
    except (OSError, EOFError, UnicodeDecodeError) as err:
        raise RuntimeError(f"BPE merges file {path} is unreadable: {err}") from err
    bad = next((i for i, m in enumerate(merges) if len(m) != 2), None)
    if bad is not None or len(merges) != count:
        raise RuntimeError(
            f"BPE merges file {path}: expected {count} merge lines of two symbols after the "
            f"header (line {bad if bad is not None else len(merges)} is wrong)"
        )
    return [(m[0], m[1]) for m in merges]
