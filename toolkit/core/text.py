"""Caption text: decoding, normalisation and sentence splitting. Pure functions, no NLP models."""

from __future__ import annotations

import hashlib
import re
import unicodedata

from toolkit.core.errors import InputError

# Control characters other than ordinary whitespace mean a binary or mangled field, not a caption.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_WHITESPACE = re.compile(r"\s+")
# Lone UTF-16 surrogates (JSON "\ud800", or undecodable bytes kept by surrogateescape) cannot be stored as UTF-8.
_SURROGATE = re.compile("[\ud800-\udfff]")
# A sentence ends at . ! or ? (optionally followed by closing quotes/brackets) and whitespace.
_SENTENCE_END = re.compile(r"(?<=[.!?])[\"')\]]*\s+")
# Tokens that end with a period but do not end a sentence.
_ABBREVIATIONS = frozenset(
    {"mr.", "mrs.", "ms.", "dr.", "st.", "jr.", "sr.", "vs.", "etc.", "e.g.", "i.e.", "approx.", "no.",
     "inc.", "ltd.", "co.", "mt.", "ft.", "u.s.", "a.m.", "p.m."}
)


class CaptionError(InputError):
    """A caption that cannot be stored. `reason` is a stable code for the rejects table."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def decode_utf8(raw: bytes) -> str:
    """Strict UTF-8 decode (a leading BOM is dropped); anything else is a `caption_not_utf8` error."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise CaptionError(
            "caption_not_utf8",
            f"text is not valid UTF-8 (byte 0x{raw[err.start]:02x} at offset {err.start}); "
            "re-encode the source as UTF-8",
        ) from err


def normalise_caption(text: str) -> str:
    """NFC, whitespace collapsed and stripped. Case is kept (the tagger needs it)."""
    if _CONTROL.search(text):
        raise CaptionError("caption_control_chars", "caption contains control characters (binary data?)")
    if _SURROGATE.search(text):
        raise CaptionError("caption_not_utf8", "caption holds a lone UTF-16 surrogate (such as a JSON '\\ud800' "
                                               "escape), which is not valid Unicode; fix the text in the source")
    return _WHITESPACE.sub(" ", unicodedata.normalize("NFC", text)).strip()


def has_surrogates(text: str) -> bool:
    return _SURROGATE.search(text) is not None


def replace_surrogates(text: str) -> str:
    """`text` made storable as UTF-8: each lone surrogate becomes U+FFFD (for row references and excerpts)."""
    return _SURROGATE.sub("\ufffd", text)


def has_words(text: str) -> bool:
    return any(ch.isalnum() for ch in text)


def split_sentences(text: str) -> list[str]:
    """Split a normalised caption into sentences, in order, keeping their final punctuation.

    Abbreviations ("Mr.", "e.g.") and decimals ("2.5") do not end a sentence. Fragments without any
    letter or digit (stray punctuation) are dropped.
    """
    pieces: list[str] = []
    start = 0
    for match in _SENTENCE_END.finditer(text):
        candidate = text[start:match.start()].rstrip("\"')]")
        last_word = candidate.rsplit(" ", 1)[-1].lower()
        if last_word in _ABBREVIATIONS or re.fullmatch(r"[a-z]\.", last_word):
            continue
        pieces.append(text[start:match.end()].strip())
        start = match.end()
    pieces.append(text[start:].strip())
    return [p for p in pieces if has_words(p)]


def truncate_at_sentence(text: str, max_chars: int) -> str:
    """The longest prefix of whole sentences within `max_chars` (a hard cut if the first is too long)."""
    kept = ""
    for sentence in split_sentences(text):
        candidate = f"{kept} {sentence}".strip()
        if len(candidate) > max_chars:
            break
        kept = candidate
    return kept or text[:max_chars].rstrip()


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def word_count(sentence: str) -> int:
    return len(sentence.split())
