"""Batch transforms that augment training images. The training loop applies them, evaluation never does."""

from __future__ import annotations

import torch

IMAGE_SIZE = 28


def random_shift(images: torch.Tensor, max_shift: int, fill: float, generator: torch.Generator) -> torch.Tensor:
    """Return a copy of ``images`` with each image moved by a random whole-pixel offset.

    ``images`` is a batch of flattened 28x28 images, shaped ``(count, 784)``. Each image
    gets its own vertical and horizontal offset, each drawn uniformly from
    ``[-max_shift, max_shift]`` with ``generator``, so the same generator state gives
    the same batch. Pixels moved in from outside the image take the value ``fill``
    (the normalised value of a black pixel); pixels moved out are dropped.
    """
    if max_shift < 0:
        raise ValueError(f"max_shift must be >= 0, got {max_shift}")
    count = images.shape[0]
    if max_shift == 0 or count == 0:
        return images.clone()

    # Pad every side by max_shift, then view every 28x28 window of the padded image
    # without copying: windows[n, i, j] starts at row i and column j. Reading window
    # (max_shift - dy, max_shift - dx) moves the content dy pixels down and dx right.
    # One indexing call copies only the chosen windows, row by contiguous row.
    padded = torch.nn.functional.pad(images.reshape(count, IMAGE_SIZE, IMAGE_SIZE), (max_shift,) * 4, value=fill)
    side = IMAGE_SIZE + 2 * max_shift
    choices = 2 * max_shift + 1
    windows = padded.as_strided(
        (count, choices, choices, IMAGE_SIZE, IMAGE_SIZE), (side * side, side, 1, side, 1)
    )
    offsets = torch.randint(-max_shift, max_shift + 1, (2, count), generator=generator)
    shifted = windows[torch.arange(count), max_shift - offsets[0], max_shift - offsets[1]]
    return shifted.reshape(count, IMAGE_SIZE * IMAGE_SIZE)
