"""Per-row validation. Every failure raises `RowRejected` with a stable reason code and a detail that
says what is wrong and what to do; the pipeline records it in the rejects table and moves on.
"""

from __future__ import annotations

import hashlib
import io
import os
import warnings
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath

from PIL import Image as PILImage
from PIL import UnidentifiedImageError

from toolkit.core.config import CaptionLimits, ImageLimits
from toolkit.core.images import UPRIGHT, decoded_geometry
from toolkit.core.text import (
    CaptionError,
    decode_utf8,
    has_surrogates,
    has_words,
    normalise_caption,
    truncate_at_sentence,
)

ALLOWED_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "BMP"})


class RowRejected(ValueError):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class ValidImage:
    sha256: str
    data: bytes  # dropped (b"") once the image is hashed, checked and, if needed, written out
    width: int
    height: int
    format: str
    num_bytes: int
    path: str | None  # relative to `root`
    root: str | None = None
    orientation: int = UPRIGHT  # the EXIF orientation readers apply; width and height are after it


def resolve_image_path(images_root: Path, raw_path: str) -> tuple[Path, str]:
    """Resolve a manifest path inside `images_root`, refusing every way out of it.

    Returns (absolute resolved path, normalised relative path).
    """
    if not raw_path or not raw_path.strip():
        raise RowRejected("image_path_empty", "the image path is empty")
    if "\x00" in raw_path:
        raise RowRejected("image_path_invalid", "the image path contains a NUL byte")
    if has_surrogates(raw_path):
        raise RowRejected("image_path_not_utf8", f"the image path {raw_path!r} holds a lone UTF-16 surrogate, "
                                                 "which is not valid UTF-8; fix the path in the source")
    if raw_path.startswith(("/", "\\")) or PureWindowsPath(raw_path).drive or Path(raw_path).is_absolute():
        raise RowRejected("image_path_absolute",
                          f"{raw_path!r} is absolute; paths must be relative to --images-root")
    parts = PurePosixPath(raw_path.replace("\\", "/")).parts
    if ".." in parts:
        raise RowRejected("image_path_traversal", f"{raw_path!r} climbs out with '..'; paths must stay "
                                                  "inside --images-root")
    root = images_root.resolve()
    candidate = root.joinpath(*parts)
    resolved = Path(os.path.realpath(candidate))
    if not resolved.is_relative_to(root):
        raise RowRejected("image_path_symlink_escape",
                          f"{raw_path!r} resolves through a symlink to {resolved}, outside --images-root")
    return resolved, "/".join(parts)


def read_image_file(path: Path, limits: ImageLimits) -> bytes:
    try:
        if not path.exists():
            raise RowRejected("image_missing", f"{str(path)!r} does not exist")
        if not path.is_file():
            raise RowRejected("image_not_a_file", f"{str(path)!r} is not a regular file")
        check_byte_size(path.stat().st_size, limits)
        return path.read_bytes()
    except OSError as err:
        raise RowRejected("image_unreadable", f"{str(path)!r} cannot be read ({err.strerror or err}); "
                                              "check its permissions") from err


def check_byte_size(size: int, limits: ImageLimits) -> None:
    if size == 0:
        raise RowRejected("image_empty_file", "the image file is empty (0 bytes)")
    if size > limits.max_file_bytes:
        raise RowRejected("image_too_large_bytes",
                          f"{size} bytes exceeds the limit of {limits.max_file_bytes} bytes")


def inspect_image(data: bytes, limits: ImageLimits, path: str | None) -> ValidImage:
    """Check format and dimensions from the header, then decode fully (catches truncation)."""
    check_byte_size(len(data), limits)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", PILImage.DecompressionBombWarning)
            with PILImage.open(io.BytesIO(data)) as image:
                width, height, orientation = decoded_geometry(image)
                fmt = image.format or "?"
                if width * height > limits.max_pixels:
                    raise RowRejected("image_decompression_bomb",
                                      f"{width}x{height} = {width * height} pixels exceeds the limit of "
                                      f"{limits.max_pixels} (possible decompression bomb)")
                if fmt not in ALLOWED_FORMATS:
                    raise RowRejected("image_unsupported_format",
                                      f"format {fmt} is not one of {sorted(ALLOWED_FORMATS)}")
                if min(width, height) < limits.min_side:
                    raise RowRejected("image_too_small",
                                      f"{width}x{height} has a side below {limits.min_side} pixels")
                if max(width, height) > limits.max_side:
                    raise RowRejected("image_too_large_dimensions",
                                      f"{width}x{height} has a side above {limits.max_side} pixels")
                image.load()
    except RowRejected:
        raise
    except (PILImage.DecompressionBombError, PILImage.DecompressionBombWarning) as err:
        raise RowRejected("image_decompression_bomb", str(err)) from err
    except UnidentifiedImageError as err:
        raise RowRejected("image_unreadable", "not a recognisable image file") from err
    except (OSError, SyntaxError, ValueError) as err:
        raise RowRejected("image_truncated", f"the image does not decode fully ({err})") from err
    # The sha256 stays that of the file's bytes: training checks the file against it.
    return ValidImage(hashlib.sha256(data).hexdigest(), data, width, height, fmt, len(data), path,
                      orientation=orientation)


def clean_caption(value: object, limits: CaptionLimits) -> str:
    """A raw caption value (str, undecoded bytes, or a list of sentences) -> a normalised caption."""
    try:
        if isinstance(value, list):
            if not value or not all(isinstance(s, str) for s in value):
                raise RowRejected("caption_wrong_type", "'sentences' must be a non-empty list of strings")
            sentences = [normalise_caption(s) for s in value]
            value = " ".join(_end_sentence(s) for s in sentences if s)
        if isinstance(value, bytes):
            value = decode_utf8(value)
        if not isinstance(value, str):
            raise RowRejected("caption_wrong_type", f"caption must be text, got {type(value).__name__}")
        text = normalise_caption(value)
    except CaptionError as err:
        raise RowRejected(err.reason, err.detail) from err
    if not text:
        raise RowRejected("caption_empty", "caption is empty after whitespace normalisation")
    if not has_words(text):
        raise RowRejected("caption_no_words", f"caption {text[:40]!r} has no letters or digits")
    if len(text) > limits.max_chars:
        if limits.on_too_long == "reject":
            raise RowRejected("caption_too_long", f"{len(text)} characters exceeds {limits.max_chars}; "
                                                  "shorten it or ingest with --on-long-caption truncate")
        text = truncate_at_sentence(text, limits.max_chars)
    return text


def _end_sentence(sentence: str) -> str:
    return sentence if sentence[-1] in ".!?" else sentence + "."
