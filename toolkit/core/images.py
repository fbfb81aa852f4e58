"""Image geometry the pipeline agrees on: the aspect class that decides which images CLIC pairs."""

from __future__ import annotations

WIDE, TALL = "wide", "tall"


def aspect_class(width: int, height: int) -> str:
    """CLIC pairs images of one aspect class: wide (width >= height, stacked as 112x224 half-tiles) or tall."""
    return WIDE if width >= height else TALL
