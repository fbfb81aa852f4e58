"""THE decode (toolkit.core.images.load_rgb) on every mode Pillow hands back: scaled, upright, never clipped."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image as PILImage

from toolkit.core.images import decoded_geometry, load_rgb, to_rgb

RAMP16 = np.tile(np.linspace(0, 65535, 64).round().astype(np.uint16), (16, 1))


def _encoded(image: PILImage.Image, fmt: str, **options: object) -> io.BytesIO:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    buffer.seek(0)
    return buffer


@pytest.mark.parametrize(("image", "fmt"), [
    (PILImage.fromarray(RAMP16), "PNG"),  # I;16
    (PILImage.fromarray(RAMP16), "TIFF"),
    (PILImage.fromarray(RAMP16.astype(np.int32)), "TIFF"),  # I, 16-bit values
    (PILImage.fromarray((RAMP16 / 65535).astype(np.float32)), "TIFF"),  # F in 0-1
], ids=["I;16-png", "I;16-tiff", "I", "F"])
def test_high_bit_depth_greyscale_is_scaled_not_clipped(image, fmt):
    rgb = np.asarray(load_rgb(_encoded(image, fmt)))
    want = np.rint(RAMP16 / 257.0)
    assert rgb.shape == (16, 64, 3)
    assert np.abs(rgb[..., 0] - want).max() <= 1
    assert abs(rgb.mean() - 127.5) < 1.5


def test_a_dark_16_bit_image_stays_dark():
    # Every sample below 256: still 16-bit data, so 200 of 65535 is near black, not 200 of 255.
    dark = PILImage.fromarray(np.full((8, 8), 200, dtype=np.uint16))
    assert dark.mode.startswith("I;16")
    assert np.asarray(to_rgb(dark)).max() <= 1


def test_big_endian_16_bit_is_scaled():
    image = PILImage.frombytes("I;16B", (64, 16), RAMP16.astype(">u2").tobytes())
    rgb = np.asarray(load_rgb(_encoded(image, "TIFF")))
    assert abs(rgb.mean() - 127.5) < 1.5


@pytest.mark.parametrize("mode", ["LA", "PA", "RGBA"])
def test_transparent_pixels_show_white_and_opaque_ones_keep_their_colour(mode):
    image = PILImage.new("RGBA", (16, 16), (0, 0, 0, 0))
    image.paste((200, 30, 30, 255), (0, 0, 8, 16))
    if mode == "LA":
        image = image.convert("LA")
    elif mode == "PA":
        image = image.convert("PA")
    # PNG cannot hold PA, so that one goes through the conversion step directly.
    rgb = np.asarray(to_rgb(image) if mode == "PA" else load_rgb(_encoded(image, "PNG")))
    assert (rgb[:, 8:] == 255).all()  # main's convert("RGB") shows the hidden black
    assert (rgb[:, :8] == np.asarray(image.convert("RGB"))[:, :8]).all()


def test_palette_with_a_transparent_index_shows_white():
    image = PILImage.new("P", (8, 8), 0)
    image.putpalette([0, 0, 0, 10, 200, 10])
    image.paste(1, (0, 0, 4, 8))
    rgb = np.asarray(load_rgb(_encoded(image, "PNG", transparency=0)))
    assert (rgb[:, 4:] == 255).all() and (rgb[:, :4] == (10, 200, 10)).all()


def test_cmyk_jpeg_decodes_to_rgb():
    rgb = np.asarray(load_rgb(_encoded(PILImage.new("CMYK", (16, 16), (0, 255, 255, 0)), "JPEG", quality=100)))
    assert np.abs(rgb.astype(int) - (255, 0, 0)).max() <= 3


@pytest.mark.parametrize("orientation", [1, 2, 3, 4, 5, 6, 7, 8])
def test_every_exif_orientation_is_applied_and_reported(orientation):
    upright = PILImage.new("RGB", (40, 20), (220, 20, 20))
    upright.paste((20, 20, 220), (0, 0, 10, 10))  # a blue corner, top left when upright
    # Stored pixels: the inverse of what the orientation asks readers to do.
    inverse = {2: 0, 3: 3, 4: 1, 5: 5, 6: 2, 7: 6, 8: 4}
    stored = upright if orientation == 1 else upright.transpose(PILImage.Transpose(inverse[orientation]))
    exif = PILImage.Exif()
    exif[0x0112] = orientation
    data = _encoded(stored, "PNG", exif=exif)
    assert decoded_geometry(PILImage.open(data))[:3] == (40, 20, orientation)
    data.seek(0)
    assert np.array_equal(np.asarray(load_rgb(data)), np.asarray(upright))


def test_draft_size_is_the_upright_size():
    stored = PILImage.new("RGB", (400, 800), (220, 20, 20))  # upright 800 x 400 after orientation 6
    exif = PILImage.Exif()
    exif[0x0112] = 6
    image = load_rgb(_encoded(stored, "JPEG", exif=exif), draft_size=(200, 100))
    assert image.size == (200, 100)  # the DCT scale 1/4 covers 200 x 100 upright; a wrong frame would not
