"""Images as the pipeline agrees to see them: the aspect class that decides which images CLIC pairs, and
THE decode every reader uses (ingest, the tile cache, training, eval, review, the demo).

`load_rgb` is the one way from a file to 8-bit RGB pixels. It applies the EXIF orientation (a phone photo
stored sideways is shown upright, so "left of" stays left of) and scales high-bit-depth modes to 8 bits
instead of letting `convert("RGB")` clip them (a 16-bit greyscale PNG would otherwise be ~99.6 % white).
Ingest records the orientation it applied and the oriented width and height (`decoded_geometry`).
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image as PILImage
from PIL import ImageOps

WIDE, TALL = "wide", "tall"

EXIF_ORIENTATION = 0x0112
UPRIGHT = 1
TRANSPOSED_ORIENTATIONS = frozenset({5, 6, 7, 8})  # these turn the image a quarter: width and height swap
BACKGROUND = (255, 255, 255)  # what transparent pixels show: a transparent logo reads as on paper, not black


def aspect_class(width: int, height: int) -> str:
    """CLIC pairs images of one aspect class: wide (width >= height, stacked as 112x224 half-tiles) or tall."""
    return WIDE if width >= height else TALL


def exif_orientation(image: PILImage.Image) -> int:
    """The EXIF orientation (1-8) the file asks for; 1 (upright) when it has none or an invalid one."""
    try:
        value = image.getexif().get(EXIF_ORIENTATION, UPRIGHT)
    except (OSError, ValueError, SyntaxError):  # a damaged EXIF block: show the pixels as stored
        return UPRIGHT
    return value if isinstance(value, int) and 1 <= value <= 8 else UPRIGHT


def oriented_size(width: int, height: int, orientation: int) -> tuple[int, int]:
    """(width, height) once `orientation` is applied."""
    return (height, width) if orientation in TRANSPOSED_ORIENTATIONS else (width, height)


def decoded_geometry(image: PILImage.Image) -> tuple[int, int, int]:
    """(width, height, orientation) as readers will see the image: the size after its EXIF orientation."""
    orientation = exif_orientation(image)
    return (*oriented_size(*image.size, orientation), orientation)


def _scaled_to_uint8(pixels: np.ndarray, sixteen_bit: bool = False) -> np.ndarray:
    """Integer or float samples -> uint8 by their nominal range, never by clipping: 16-bit (0-65535) is
    divided down; floats in 0-1 are multiplied up; anything outside those ranges is stretched min-max.
    A 16-bit mode always means 0-65535, so a dark 16-bit image stays dark."""
    values = pixels.astype(np.float64)
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if sixteen_bit:
        top = 65535.0
    elif low >= 0 and high <= 1.0 and pixels.dtype.kind == "f":
        top = 1.0
    elif low >= 0 and high <= 255:
        top = 255.0
    elif low >= 0 and high <= 65535:
        top = 65535.0
    else:  # 32-bit integers or floats of unknown scale: use the range present
        values, top = values - low, max(high - low, 1e-12)
    return np.rint(values * (255.0 / top)).clip(0, 255).astype(np.uint8)


def to_rgb(image: PILImage.Image) -> PILImage.Image:
    """Any Pillow mode -> 8-bit RGB without losing the picture: high-bit-depth greyscale (I;16*, I, F)
    is scaled, transparency (LA, PA, RGBA, a palette or greyscale with a transparent colour) is
    composited over white, everything else (L, 1, P, CMYK, YCbCr, LAB...) goes through Pillow's convert."""
    mode = image.mode
    if mode == "RGB" and "transparency" not in image.info:
        return image
    if mode.startswith("I;16") or mode in ("I", "F"):
        grey = PILImage.fromarray(_scaled_to_uint8(np.asarray(image), sixteen_bit=mode.startswith("I;16")), "L")
        return grey.convert("RGB")
    if mode in ("LA", "PA", "RGBA", "La", "RGBa") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        flat = PILImage.new("RGBA", rgba.size, (*BACKGROUND, 255))
        return PILImage.alpha_composite(flat, rgba).convert("RGB")
    return image.convert("RGB")


def load_rgb(source: Path | BinaryIO, draft_size: tuple[int, int] | None = None) -> PILImage.Image:
    """Decode `source` (a path or a binary file) upright, as 8-bit RGB. With `draft_size` (the wanted
    width, height once upright), a JPEG decodes at the smallest DCT scale that still covers it."""
    with PILImage.open(source) as image:
        orientation = exif_orientation(image)
        if draft_size is not None:
            # The draft applies to the stored frame: a quarter-turned image needs the transposed size.
            image.draft("RGB", oriented_size(*draft_size, orientation))
        upright = ImageOps.exif_transpose(image) if orientation != UPRIGHT else image
        rgb = to_rgb(upright)
        rgb.load()
        return rgb
