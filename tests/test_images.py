"""Tests of fmnist.images: every image is made by the test in tmp_path."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fmnist import images
from fmnist.errors import ConfigError, ImageError
from fmnist.images import INVERT_MODES, MAX_IMAGE_PIXELS, load_image

EXIF_ORIENTATION = 0x0112


def shirt_on_black() -> np.ndarray:
    """Return a 28x28 uint8 image: a light rectangle with a gradient on black."""
    pixels = np.zeros((28, 28), dtype=np.uint8)
    pixels[4:24, 8:20] = np.arange(100, 220, 10, dtype=np.uint8)
    return pixels


def save_array(path: Path, pixels: np.ndarray) -> Path:
    Image.fromarray(pixels).save(path)
    return path


def write_png_header(path: Path, width: int, height: int) -> Path:
    """Write a 1-bit PNG that declares a size but contains no pixel data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b""))
    return path


def stored_mode(path: Path) -> str:
    """Return the mode in which Pillow opens a file, to confirm which path a test covers."""
    with Image.open(path) as image:
        return image.mode


def assert_valid_output(output: np.ndarray) -> None:
    assert output.shape == (28, 28)
    assert output.dtype == np.uint8


# --- grayscale images and inversion ---------------------------------------------------


@pytest.mark.parametrize("invert", ["auto", "never"])
def test_light_on_black_unchanged(tmp_path, invert):
    pixels = shirt_on_black()
    path = save_array(tmp_path / "shirt.png", pixels)

    output = load_image(path, invert=invert)

    assert_valid_output(output)
    np.testing.assert_array_equal(output, pixels)


def test_dark_on_white_auto_inverts(tmp_path):
    pixels = 255 - shirt_on_black()
    path = save_array(tmp_path / "shirt.png", pixels)

    output = load_image(path)

    np.testing.assert_array_equal(output, shirt_on_black())
    assert output[0, 0] == 0
    assert output[4, 8] == 100
    assert output[23, 19] == 210


def test_always_inverts_light_on_black(tmp_path):
    path = save_array(tmp_path / "shirt.png", shirt_on_black())

    output = load_image(path, invert="always")

    np.testing.assert_array_equal(output, 255 - shirt_on_black())


def test_never_keeps_dark_on_white(tmp_path):
    pixels = 255 - shirt_on_black()
    path = save_array(tmp_path / "shirt.png", pixels)

    output = load_image(path, invert="never")

    np.testing.assert_array_equal(output, pixels)


def test_auto_uses_border_median(tmp_path):
    # Of the 108 border pixels, 48 are black and 60 light gray (200). Their median
    # is light, so the image is inverted, although their mean (111) is dark.
    pixels = np.full((28, 28), 200, dtype=np.uint8)
    pixels[8:20, 10:18] = 20
    pixels[0, :] = 0
    pixels[1:21, 0] = 0
    path = save_array(tmp_path / "framed.png", pixels)

    output = load_image(path)

    np.testing.assert_array_equal(output, 255 - pixels)


def test_accepts_str_path(tmp_path):
    path = save_array(tmp_path / "shirt.png", shirt_on_black())

    output = load_image(str(path))

    np.testing.assert_array_equal(output, shirt_on_black())


def test_one_bit_image(tmp_path):
    pixels = np.zeros((28, 28), dtype=bool)
    pixels[6:22, 10:18] = True
    path = tmp_path / "mask.png"
    Image.fromarray(pixels).save(path)
    assert stored_mode(path) == "1"

    output = load_image(path)

    np.testing.assert_array_equal(output, pixels.astype(np.uint8) * 255)


# --- colour, transparency and palettes ------------------------------------------------


def test_rgb_converts_to_luma(tmp_path):
    pixels = np.full((28, 28, 3), 255, dtype=np.uint8)
    pixels[5:23, 9:19] = (255, 0, 0)
    path = save_array(tmp_path / "red.png", pixels)

    output = load_image(path)

    # Pillow's luma of pure red is 299 * 255 // 1000 = 76, inverted to 179.
    assert output[10, 12] == 179
    assert output[0, 0] == 0
    assert output[27, 27] == 0


def rgba_object(gray_level: int) -> np.ndarray:
    """Return a 28x28 RGBA image: an opaque gray rectangle, magenta where transparent."""
    pixels = np.zeros((28, 28, 4), dtype=np.uint8)
    pixels[..., :3] = (255, 0, 255)
    pixels[6:22, 8:20] = (gray_level, gray_level, gray_level, 255)
    return pixels


def test_rgba_dark_object_ends_light_on_black(tmp_path):
    path = save_array(tmp_path / "dark.png", rgba_object(40))

    output = load_image(path)

    assert output[10, 10] == 215
    assert output[0, 0] == 0
    assert np.count_nonzero(output) == 16 * 12


def test_rgba_light_object_stays_light_on_black(tmp_path):
    path = save_array(tmp_path / "light.png", rgba_object(200))

    output = load_image(path)

    assert output[10, 10] == 200
    assert output[0, 0] == 0
    assert np.count_nonzero(output) == 16 * 12


def test_rgba_never_composites_over_black(tmp_path):
    path = save_array(tmp_path / "dark.png", rgba_object(40))

    output = load_image(path, invert="never")

    assert output[10, 10] == 40
    assert output[0, 0] == 0


def test_rgba_always_composites_over_white(tmp_path):
    path = save_array(tmp_path / "light.png", rgba_object(200))

    output = load_image(path, invert="always")

    assert output[10, 10] == 55
    assert output[0, 0] == 0


def test_rgba_half_transparent_blends(tmp_path):
    pixels = rgba_object(40)
    pixels[6:22, 8:20, 3] = 128
    path = save_array(tmp_path / "half.png", pixels)

    output = load_image(path)

    # 40 at alpha 128/255 over white is 147.1, which inverts to 107.9 and rounds to 108.
    assert output[10, 10] == 108
    assert output[0, 0] == 0


def test_fully_transparent_image_is_black(tmp_path):
    pixels = np.zeros((28, 28, 4), dtype=np.uint8)
    pixels[..., :3] = 255
    path = save_array(tmp_path / "empty.png", pixels)

    output = load_image(path)

    assert_valid_output(output)
    assert not output.any()


def test_la_dark_object_ends_light_on_black(tmp_path):
    pixels = np.zeros((28, 28, 2), dtype=np.uint8)
    pixels[6:22, 8:20] = (30, 255)
    path = tmp_path / "dark.png"
    Image.fromarray(pixels, mode="LA").save(path)
    assert stored_mode(path) == "LA"

    output = load_image(path)

    assert output[10, 10] == 225
    assert output[0, 0] == 0
    assert np.count_nonzero(output) == 16 * 12


def test_palette_with_transparent_index(tmp_path):
    # Index 0 is black and transparent. Read as opaque, the black border would keep
    # the dark object as it is instead of inverting it.
    indices = np.zeros((28, 28), dtype=np.uint8)
    indices[6:22, 8:20] = 1
    image = Image.fromarray(indices, mode="P")
    image.putpalette([0, 0, 0, 30, 30, 30])
    path = tmp_path / "palette.png"
    image.save(path, transparency=0)
    assert stored_mode(path) == "P"

    output = load_image(path)

    assert output[10, 10] == 225
    assert output[0, 0] == 0


def test_palette_without_transparency(tmp_path):
    indices = np.zeros((28, 28), dtype=np.uint8)
    indices[6:22, 8:20] = 1
    image = Image.fromarray(indices, mode="P")
    image.putpalette([255, 255, 255, 30, 30, 30])
    path = tmp_path / "palette.png"
    image.save(path)

    output = load_image(path)

    assert output[10, 10] == 225
    assert output[0, 0] == 0


def test_cmyk_jpeg(tmp_path):
    rgb = np.full((28, 28, 3), 255, dtype=np.uint8)
    rgb[4:24, 6:22] = (20, 20, 20)
    path = tmp_path / "cmyk.jpg"
    Image.fromarray(rgb).convert("CMYK").save(path, quality=95)
    assert stored_mode(path) == "CMYK"

    output = load_image(path)

    # JPEG is lossy, so compare with a tolerance.
    assert output[14, 14] >= 225
    assert output[0, 0] <= 10
    assert output[27, 0] <= 10


# --- high bit depth -------------------------------------------------------------------


def test_16_bit_png_full_range(tmp_path):
    values = np.linspace(0, 65535, 28 * 28).round().astype(np.uint16).reshape(28, 28)
    path = save_array(tmp_path / "deep.png", values)
    assert stored_mode(path) == "I;16"

    output = load_image(path, invert="never")

    expected = np.rint(values * (255 / 65535)).astype(np.uint8)
    np.testing.assert_array_equal(output, expected)
    assert output.min() == 0
    assert output.max() == 255
    # Truncating to 8 bits, as Pillow's convert("L") does, would give 255 here.
    assert output[14, 0] == 128


def test_16_bit_png_multiples_of_257(tmp_path):
    levels = np.arange(28 * 28, dtype=np.uint16).reshape(28, 28) % 256
    path = save_array(tmp_path / "deep.png", levels * 257)

    output = load_image(path, invert="never")

    np.testing.assert_array_equal(output, levels.astype(np.uint8))


def test_16_bit_pgm_in_mode_i(tmp_path):
    pixels = np.zeros((28, 28), dtype=np.uint16)
    pixels[6:22, 8:20] = 257 * 180
    path = save_array(tmp_path / "deep.pgm", pixels)
    assert stored_mode(path) == "I"

    output = load_image(path)

    np.testing.assert_array_equal(output, (pixels // 257).astype(np.uint8))


def test_float_tiff_in_byte_range(tmp_path):
    pixels = shirt_on_black().astype(np.float32)
    path = save_array(tmp_path / "float.tif", pixels)
    assert stored_mode(path) == "F"

    output = load_image(path)

    np.testing.assert_array_equal(output, shirt_on_black())


def test_float_tiff_stretched_and_nan(tmp_path):
    pixels = np.zeros((28, 28), dtype=np.float32)
    pixels[6:22, 8:20] = 1000.0
    pixels[10, 10] = 500.0
    pixels[0, 0] = np.nan
    path = save_array(tmp_path / "float.tif", pixels)

    output = load_image(path)

    assert output[6, 8] == 255
    assert output[10, 10] == 128
    assert output[0, 0] == 0
    assert output[27, 27] == 0


@pytest.mark.parametrize(
    ("name", "pixels", "expected"),
    [
        ("white16.png", np.full((28, 28), 65535, dtype=np.uint16), 255),
        ("black16.png", np.zeros((28, 28), dtype=np.uint16), 0),
        ("constant.tif", np.full((28, 28), 4000.0, dtype=np.float32), 255),
        ("negative.tif", np.full((28, 28), -3.0, dtype=np.float32), 0),
    ],
)
def test_constant_high_depth_images(tmp_path, name, pixels, expected):
    path = save_array(tmp_path / name, pixels)

    output = load_image(path, invert="never")

    assert_valid_output(output)
    assert (output == expected).all()


# --- orientation, aspect ratio and size ----------------------------------------------


@pytest.mark.parametrize(
    ("orientation", "dark_rows", "light_rows"),
    [(6, slice(0, 7), slice(10, 28)), (8, slice(21, 28), slice(0, 18))],
)
def test_exif_orientation_applied(tmp_path, orientation, dark_rows, light_rows):
    # Stored landscape, 56x28, white with a black block at the left end. Upright,
    # it is portrait: tag 6 turns the left end to the top, tag 8 to the bottom.
    pixels = np.full((28, 56), 255, dtype=np.uint8)
    pixels[:, :16] = 0
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation
    path = tmp_path / "rotated.jpg"
    Image.fromarray(pixels).save(path, exif=exif, quality=95)

    output = load_image(path, invert="never")

    # Portrait fits as 14 columns, 7 to 20, over all 28 rows. The black block
    # covers 16 of 56 rows, 8 of 28 after scaling.
    assert output[:, :6].max() <= 10
    assert output[:, 22:].max() <= 10
    assert output[dark_rows, 9:19].max() <= 10
    assert output[light_rows, 9:19].min() >= 240


def test_upright_jpeg_without_exif(tmp_path):
    pixels = np.full((28, 56), 255, dtype=np.uint8)
    path = tmp_path / "landscape.jpg"
    Image.fromarray(pixels).save(path, quality=95)

    output = load_image(path, invert="never")

    # Landscape fits as 14 rows, 7 to 20, over all 28 columns.
    assert output[:6].max() <= 10
    assert output[22:].max() <= 10
    assert output[8:20].min() >= 240


@pytest.mark.parametrize(("size", "line_axis"), [((1000, 1), 0), ((1, 1000), 1)])
def test_thin_images_become_lines(tmp_path, size, line_axis):
    path = tmp_path / "thin.png"
    Image.new("L", size, 255).save(path)

    output = load_image(path, invert="never")

    assert_valid_output(output)
    rows, columns = np.nonzero(output)
    assert len(rows) == 28
    # A line 1 pixel wide is centred at (28 - 1) // 2 = 13.
    assert set((rows, columns)[line_axis].tolist()) == {13}
    assert (output[rows, columns] == 255).all()


def test_thin_white_image_auto_is_black(tmp_path):
    # Every pixel of a 1-pixel-wide image is on the border, so a white one counts
    # as white background and inverts to black.
    path = tmp_path / "thin.png"
    Image.new("L", (1, 1000), 255).save(path)

    output = load_image(path)

    assert_valid_output(output)
    assert not output.any()


def test_tiny_image_upscales(tmp_path):
    path = tmp_path / "tiny.png"
    Image.new("L", (2, 2), 255).save(path)

    output = load_image(path, invert="never")

    assert (output == 255).all()


def test_small_image_upscales_without_overshoot(tmp_path):
    path = tmp_path / "step.png"
    Image.fromarray(np.array([[0, 255]], dtype=np.uint8)).save(path)

    output = load_image(path, invert="never")

    # 2x1 fits as 28x14, rows 7 to 20, each a bilinear ramp from 0 to 255.
    ramp = [0] * 7 + [9, 27, 46, 64, 82, 100, 118, 137, 155, 173, 191, 209, 228, 246] + [255] * 7
    np.testing.assert_array_equal(output[7:21], np.tile(ramp, (14, 1)))
    assert not output[:7].any()
    assert not output[21:].any()


def test_large_image_box_reduced_first(tmp_path, monkeypatch):
    # A 600x300 image is reduced by 600 // 112 = 5 before the float conversion.
    shapes = []
    fit_and_pad = images._fit_and_pad

    def record_shape(gray):
        shapes.append(gray.shape)
        return fit_and_pad(gray)

    monkeypatch.setattr(images, "_fit_and_pad", record_shape)
    path = tmp_path / "large.png"
    Image.new("L", (600, 300), 0).save(path)

    load_image(path)

    assert shapes == [(60, 120)]


def test_large_image_keeps_aspect_ratio(tmp_path):
    # 600x300 is box-reduced before resampling. The object covers the middle half.
    pixels = np.full((300, 600), 255, dtype=np.uint8)
    pixels[75:225, 150:450] = 0
    path = save_array(tmp_path / "large.png", pixels)

    output = load_image(path)

    # The image fits as 14 rows (7 to 20). The object spans rows 10 to 17 and
    # columns 7 to 20 after inversion.
    assert output[:7].max() == 0
    assert output[21:].max() == 0
    assert output[11:17, 8:20].min() >= 250
    assert output[11:17, :6].max() <= 5
    assert output[11:17, 22:].max() <= 5


def test_large_jpeg_decoded_at_reduced_scale(tmp_path):
    pixels = np.full((1000, 1000), 255, dtype=np.uint8)
    pixels[250:750, 250:750] = 0
    path = tmp_path / "large.jpg"
    Image.fromarray(pixels).save(path, quality=95)

    output = load_image(path)

    assert output[0, 0] <= 5
    assert output[14, 14] >= 250
    assert output[9:19, 9:19].min() >= 240


@pytest.mark.parametrize(
    ("fill", "invert", "expected"),
    [
        (255, "auto", 0),
        (0, "auto", 0),
        (255, "never", 255),
        (0, "always", 255),
    ],
)
def test_uniform_images(tmp_path, fill, invert, expected):
    path = tmp_path / "uniform.png"
    Image.new("L", (40, 30), fill).save(path)

    output = load_image(path, invert=invert)

    assert_valid_output(output)
    assert (output[7:22] == expected).all()


# --- files that are not usable images -------------------------------------------------


def test_missing_file(tmp_path):
    path = tmp_path / "missing.png"

    with pytest.raises(ImageError) as info:
        load_image(path)

    assert str(info.value) == f"cannot read image {path}: file not found; check the path"


def test_directory(tmp_path):
    with pytest.raises(ImageError) as info:
        load_image(tmp_path)

    assert str(info.value) == (
        f"cannot read image {tmp_path}: it is a directory; pass an image file such as a PNG or JPEG"
    )


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes need os.mkfifo")
def test_named_pipe(tmp_path):
    path = tmp_path / "pipe"
    os.mkfifo(path)

    with pytest.raises(ImageError) as info:
        load_image(path)

    assert str(info.value) == (
        f"cannot read image {path}: it is not a regular file; pass an image file such as a PNG or JPEG"
    )


def test_zero_byte_file(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")

    with pytest.raises(ImageError) as info:
        load_image(path)

    assert str(info.value) == (
        f"cannot read image {path}: the file is empty (0 bytes); pass an image file such as a PNG or JPEG"
    )


def test_not_an_image(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("label,image\n1,shirt\n")

    with pytest.raises(ImageError) as info:
        load_image(path)

    assert str(info.value) == (
        f"cannot read image {path}: the file is not an image in a format that Pillow recognizes, "
        "or it is damaged; pass a PNG, JPEG, BMP, GIF, TIFF or WebP file"
    )


def test_truncated_png(tmp_path):
    noise = np.random.default_rng(0).integers(0, 256, size=(64, 64), dtype=np.uint8)
    whole = save_array(tmp_path / "whole.png", noise).read_bytes()
    path = tmp_path / "truncated.png"
    path.write_bytes(whole[: len(whole) // 2])

    with pytest.raises(ImageError) as info:
        load_image(path)

    assert str(info.value) == (
        f"cannot read image {path}: the file is truncated or damaged (image file is truncated); "
        "export the image again"
    )


def test_size_above_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(images, "MAX_IMAGE_PIXELS", 200)
    path = save_array(tmp_path / "shirt.png", np.zeros((15, 14), dtype=np.uint8))

    with pytest.raises(ImageError) as info:
        load_image(path)

    assert str(info.value) == (
        f"cannot read image {path}: its size 14x15 (210 pixels) exceeds the limit of 200 pixels "
        "that guards against decompression bombs; downscale the image and try again"
    )


def test_size_limit_checked_before_decoding(tmp_path):
    # The file declares 8000x7000 pixels but contains no pixel data, so decoding
    # it would fail with a different message.
    assert MAX_IMAGE_PIXELS < 8000 * 7000 < Image.MAX_IMAGE_PIXELS
    path = write_png_header(tmp_path / "bomb.png", 8000, 7000)

    with pytest.raises(ImageError) as info:
        load_image(path)

    assert str(info.value) == (
        f"cannot read image {path}: its size 8000x7000 (56000000 pixels) exceeds the limit of "
        f"{MAX_IMAGE_PIXELS} pixels that guards against decompression bombs; "
        "downscale the image and try again"
    )


@pytest.mark.parametrize(("width", "height"), [(100_000, 100_000), (10_000, 9_000)])
def test_decompression_bomb_rejected_by_pillow(tmp_path, width, height):
    # 10^10 pixels make Pillow raise, and 9*10^7 make it warn. Both become ImageError.
    assert width * height > Image.MAX_IMAGE_PIXELS
    path = write_png_header(tmp_path / "bomb.png", width, height)

    with pytest.raises(ImageError) as info:
        load_image(path)

    assert str(info.value) == (
        f"cannot read image {path}: Pillow rejected it as a possible decompression bomb because its "
        f"header declares more than {Image.MAX_IMAGE_PIXELS} pixels; downscale the image and try again"
    )


def test_zero_width_png(tmp_path):
    path = write_png_header(tmp_path / "zero.png", 0, 5)

    with pytest.raises(ImageError) as info:
        load_image(path)

    assert str(info.value) == (
        f"cannot read image {path}: the file is not an image in a format that Pillow recognizes, "
        "or it is damaged; pass a PNG, JPEG, BMP, GIF, TIFF or WebP file"
    )


# --- invert option --------------------------------------------------------------------


def test_invert_modes():
    assert INVERT_MODES == ("auto", "always", "never")


def test_invalid_invert_mode(tmp_path):
    path = save_array(tmp_path / "shirt.png", shirt_on_black())

    with pytest.raises(ConfigError) as info:
        load_image(path, invert="sometimes")

    assert str(info.value) == "invalid invert mode 'sometimes': expected one of 'auto', 'always', 'never'"


def test_invalid_invert_mode_checked_first(tmp_path):
    with pytest.raises(ConfigError):
        load_image(tmp_path / "missing.png", invert="yes")
