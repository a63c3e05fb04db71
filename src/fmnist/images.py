"""Conversion of arbitrary image files into the form of Fashion-MNIST images.

Fashion-MNIST images are 28x28 uint8 arrays with a light object, centred, on a
black background (0). :func:`load_image` reads any image file that Pillow can
decode and returns an array in that form, so that ``predict`` can classify photos,
scans and drawings of clothing.
"""

from __future__ import annotations

import logging
import stat
import struct
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from fmnist.datasets import FASHION_MNIST
from fmnist.errors import ConfigError, ImageError

logger = logging.getLogger(__name__)

INVERT_MODES = ("auto", "always", "never")

# Images with more pixels are rejected before decoding, because a small compressed
# file can declare a huge size and exhaust memory (a decompression bomb). The limit
# still admits 48-megapixel photos (8000x6000).
MAX_IMAGE_PIXELS = 50_000_000

_OUTPUT_HEIGHT, _OUTPUT_WIDTH = FASHION_MNIST.image_shape

# Large images are decoded (JPEG) or box-reduced to about this many pixels per side
# before the float conversion, which keeps memory small. Four output pixels per side
# leave enough detail for the final resampling.
_WORKING_SIDE = 4 * max(_OUTPUT_HEIGHT, _OUTPUT_WIDTH)

# Gray levels above this count as light. In "auto" mode a light background is inverted.
_LIGHT_THRESHOLD = 127

# Exceptions that Pillow's decoders raise on damaged or truncated files.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error)


def load_image(path: Path, invert: str = "auto") -> np.ndarray:
    """Read an image file and convert it to a 28x28 uint8 Fashion-MNIST image.

    The image is turned upright by its EXIF orientation, made grayscale, and
    composited over a background when it has transparency. It is inverted when
    ``invert`` is "always", or when it is "auto" and the median of the border
    pixels is light (above 127). It is then scaled to fit into 28x28 with its
    aspect ratio kept, and padded with 0 to 28x28, centred.

    Raises ConfigError when ``invert`` is not one of INVERT_MODES, and ImageError
    when the file is missing, not an image, damaged or larger than MAX_IMAGE_PIXELS.
    """
    if invert not in INVERT_MODES:
        choices = ", ".join(repr(mode) for mode in INVERT_MODES)
        raise ConfigError(f"invalid invert mode {invert!r}: expected one of {choices}")
    path = Path(path)

    image = _open_image(path)
    gray, alpha = _grayscale_and_alpha(image, path)

    if alpha is not None:
        background = _transparency_background(gray, alpha, invert)
        gray = alpha * gray + (1.0 - alpha) * background

    if _should_invert(gray, invert, path):
        gray = 255.0 - gray

    return _fit_and_pad(gray)


def _image_error(path: Path, reason: str, fix: str) -> ImageError:
    return ImageError(f"cannot read image {path}: {reason}; {fix}")


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _check_regular_file(path: Path) -> None:
    try:
        status = path.stat()
    except FileNotFoundError:
        raise _image_error(path, "file not found", "check the path") from None
    except OSError as exc:
        raise _image_error(path, _one_line(exc), "check the path and its permissions") from exc

    if stat.S_ISDIR(status.st_mode):
        raise _image_error(path, "it is a directory", "pass an image file such as a PNG or JPEG")
    if not stat.S_ISREG(status.st_mode):
        raise _image_error(path, "it is not a regular file", "pass an image file such as a PNG or JPEG")
    if status.st_size == 0:
        raise _image_error(path, "the file is empty (0 bytes)", "pass an image file such as a PNG or JPEG")


def _open_image(path: Path) -> Image.Image:
    """Check the size, decode the first frame and turn it upright by its EXIF orientation."""
    _check_regular_file(path)

    # Pillow warns about images above its own limit and raises above twice that
    # limit. Turning the warning into an error keeps it off stderr.
    # NOTE: warnings.catch_warnings changes process-wide state, so concurrent calls
    # from several threads can see each other's filter.
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(path)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise _image_error(
                path,
                "Pillow rejected it as a possible decompression bomb because its header "
                f"declares more than {Image.MAX_IMAGE_PIXELS} pixels",
                "downscale the image and try again",
            ) from None
        except UnidentifiedImageError:
            raise _image_error(
                path,
                "the file is not an image in a format that Pillow recognizes, or it is damaged",
                "pass a PNG, JPEG, BMP, GIF, TIFF or WebP file",
            ) from None
        except FileNotFoundError:
            raise _image_error(path, "file not found", "check the path") from None
        except PermissionError:
            raise _image_error(path, "permission denied", "check the file's permissions") from None
        except _DECODE_ERRORS as exc:
            raise _image_error(
                path, f"the file is truncated or damaged ({_one_line(exc)})", "export the image again"
            ) from exc

        with image:
            width, height = image.size
            if width * height > MAX_IMAGE_PIXELS:
                raise _image_error(
                    path,
                    f"its size {width}x{height} ({width * height} pixels) exceeds the limit of "
                    f"{MAX_IMAGE_PIXELS} pixels that guards against decompression bombs",
                    "downscale the image and try again",
                )

            # JPEG decoders can scale by 1/2, 1/4 or 1/8 while decoding. Other formats
            # ignore the request.
            image.draft(None, (_WORKING_SIDE, _WORKING_SIDE))
            try:
                image.load()
            except _DECODE_ERRORS as exc:
                raise _image_error(
                    path, f"the file is truncated or damaged ({_one_line(exc)})", "export the image again"
                ) from exc

    try:
        return ImageOps.exif_transpose(image)
    except (*_DECODE_ERRORS, KeyError, TypeError) as exc:
        logger.warning("ignoring the invalid EXIF orientation of %s: %s", path, _one_line(exc))
        return image


def _grayscale_and_alpha(image: Image.Image, path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Convert an image to float32 gray levels in [0, 255] and opacity in [0, 1].

    The opacity is None for an image without transparency. Large images are
    box-reduced first.
    """
    if image.mode.startswith("I;16") or image.mode in ("I", "F"):
        return _high_depth_grayscale_and_alpha(image)

    try:
        if image.has_transparency_data:
            # "La" is premultiplied and has no direct path to RGBA. Going through RGBA
            # applies the transparent colour of P, L and RGB images and the alpha of PA.
            image = image.convert("LA") if image.mode == "La" else image.convert("RGBA").convert("LA")
        elif image.mode not in ("1", "L", "P", "RGB"):
            # Colour spaces such as CMYK, YCbCr, LAB and HSV convert to L through RGB,
            # because Pillow has no direct conversion for some of them.
            image = image.convert("RGB").convert("L")
        else:
            image = image.convert("L")
    except ValueError as exc:
        raise _image_error(
            path, f"Pillow cannot convert its mode {image.mode} to grayscale", "save it as an RGB PNG or JPEG"
        ) from exc

    # Box-reduce large images by an integer factor. Pillow's reduce premultiplies
    # by alpha for LA images, so transparent pixels do not bleed into the result.
    factor = max(image.size) // _WORKING_SIDE
    if factor >= 2:
        image = image.reduce(factor)

    if image.mode == "LA":
        gray = np.asarray(image.getchannel("L"), dtype=np.float32)
        alpha = np.asarray(image.getchannel("A"), dtype=np.float32) / 255.0
        return gray, alpha
    return np.asarray(image, dtype=np.float32), None


def _high_depth_grayscale_and_alpha(image: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    """Convert 16-bit, 32-bit integer and float images to float32 gray levels in [0, 255]."""
    values = np.asarray(image).astype(np.float64)

    alpha = None
    transparent_value = image.info.get("transparency")
    if isinstance(transparent_value, int) and image.mode != "F":
        alpha = (values != transparent_value).astype(np.float32)

    # NaN and infinite values of float images count as black.
    values = np.where(np.isfinite(values), values, 0.0)

    if image.mode.startswith("I;16"):
        # Scale by the full 16-bit range, so that 257 * k maps to k.
        gray = np.clip(values, 0.0, 65535.0) * (255.0 / 65535.0)
    elif image.mode == "I" and values.min() >= 0 and values.max() <= 65535:
        # Pillow stores 16-bit PGM and PPM samples, rescaled to 0..65535, in mode I.
        gray = values * (255.0 / 65535.0)
    elif image.mode == "F" and values.min() >= 0 and values.max() <= 255:
        # Pillow's own F-to-L conversion reads float values on the 0..255 scale.
        gray = values
    else:
        gray = _stretch_to_byte_range(values)

    return gray.astype(np.float32), alpha


def _stretch_to_byte_range(values: np.ndarray) -> np.ndarray:
    """Map the minimum to 0 and the maximum to 255. A constant image is clipped to [0, 255] instead."""
    low = values.min()
    high = values.max()
    if high == low:
        return np.clip(values, 0.0, 255.0)
    return (values - low) * (255.0 / (high - low))


def _transparency_background(gray: np.ndarray, alpha: np.ndarray, invert: str) -> float:
    """Return the gray level that transparent pixels stand for.

    "never" declares the image light on black, and "always" declares it dark on
    white. In "auto" mode a dark object (mean opaque gray level at most 127) is taken
    to lie on white and a light one on black, so that after inversion both end as a
    light object on black.
    """
    if invert == "never":
        return 0.0
    if invert == "always":
        return 255.0

    total_alpha = float(alpha.sum())
    if total_alpha == 0.0:
        return 0.0
    object_mean = float((alpha * gray).sum()) / total_alpha
    return 255.0 if object_mean <= _LIGHT_THRESHOLD else 0.0


def _border_median(gray: np.ndarray) -> float:
    """Return the median of a ring about one output pixel wide along the edges."""
    height, width = gray.shape
    ring = max(1, min(height, width) // max(_OUTPUT_HEIGHT, _OUTPUT_WIDTH))
    inside = np.zeros(gray.shape, dtype=bool)
    inside[ring : height - ring, ring : width - ring] = True
    return float(np.median(gray[~inside]))


def _should_invert(gray: np.ndarray, invert: str, path: Path) -> bool:
    if invert != "auto":
        return invert == "always"
    background = _border_median(gray)
    inverting = background > _LIGHT_THRESHOLD

    decision = "inverting" if inverting else "not inverting"
    logger.debug("%s: border median %.1f, %s", path, background, decision)
    return inverting


def _fit_and_pad(gray: np.ndarray) -> np.ndarray:
    """Resize to fit into the output size with the aspect ratio kept, then pad with 0, centred."""
    height, width = gray.shape
    scale = min(_OUTPUT_HEIGHT / height, _OUTPUT_WIDTH / width)
    new_height = min(_OUTPUT_HEIGHT, max(1, round(height * scale)))
    new_width = min(_OUTPUT_WIDTH, max(1, round(width * scale)))

    if (new_height, new_width) != (height, width):
        # Lanczos filters well when shrinking. Bilinear avoids the ringing that
        # Lanczos adds around hard edges when enlarging.
        resample = Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.BILINEAR
        resized = Image.fromarray(gray.astype(np.float32)).resize((new_width, new_height), resample)
        gray = np.asarray(resized)

    pixels = np.clip(np.rint(gray), 0, 255).astype(np.uint8)
    output = np.zeros((_OUTPUT_HEIGHT, _OUTPUT_WIDTH), dtype=np.uint8)
    top = (_OUTPUT_HEIGHT - new_height) // 2
    left = (_OUTPUT_WIDTH - new_width) // 2
    output[top : top + new_height, left : left + new_width] = pixels
    return output
