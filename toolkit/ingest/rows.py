"""What every source reader yields: one `SourceRow` per row, or a `SourceError` for the source as a whole."""

from __future__ import annotations

from dataclasses import dataclass, field

from toolkit.core.errors import InputError
from toolkit.core.text import replace_surrogates


class SourceError(InputError):
    """The source as a whole cannot be read (missing file, unknown format, bad header)."""


@dataclass
class SourceRow:
    """One row as read. `captions` holds raw caption values: str, bytes (undecoded) or anything JSON gave.

    Exactly one of `image_path` (relative to the images root, as written in the source) and
    `image_bytes` (WebDataset members) is set, unless `problem` says the row is unreadable.
    """

    row_ref: str
    raw: str
    image_path: str | None = None
    image_bytes: bytes | None = None
    captions: list[object] = field(default_factory=list)
    problem: tuple[str, str] | None = None  # (reason, detail) for rows that cannot be parsed


def excerpt(text: str, limit: int = 300) -> str:
    """A printable excerpt of a raw row for the rejects table (undecodable bytes shown as U+FFFD)."""
    text = replace_surrogates(text)
    return text if len(text) <= limit else text[:limit] + "…"
