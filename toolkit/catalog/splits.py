"""Deterministic train/val/test assignment by image content hash.

The split is a function of the image's SHA-256 alone, so it never depends on ingest order, and it is
stored on the image at first sight, so changing the ratios later never moves an existing image.
"""

from __future__ import annotations

from toolkit.core.config import SplitRatios

SPLITS = ("train", "val", "test")


def split_for_hash(sha256_hex: str, ratios: SplitRatios) -> str:
    """Map the first 64 bits of the hash to [0, 1) and cut at the cumulative ratios."""
    if len(sha256_hex) < 16:
        raise ValueError(f"expected a hex SHA-256, got {sha256_hex!r}")
    position = int(sha256_hex[:16], 16) / 2**64
    if position < ratios.train:
        return "train"
    if position < ratios.train + ratios.val:
        return "val"
    return "test"
