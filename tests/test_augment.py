import pytest
import torch

from fmnist.augment import random_shift

FILL = -0.5


def numbered_images(count: int) -> torch.Tensor:
    """Images whose pixels are all distinct and positive, so that every move is visible."""
    return torch.arange(1, count * 784 + 1, dtype=torch.float32).reshape(count, 784)


def find_offset(original: torch.Tensor, shifted: torch.Tensor, max_shift: int) -> tuple[int, int]:
    """Return the (down, right) move that turns ``original`` into ``shifted``, filling with FILL."""
    source = original.reshape(28, 28)
    for down in range(-max_shift, max_shift + 1):
        for right in range(-max_shift, max_shift + 1):
            expected = torch.full((28, 28), FILL)
            rows = slice(max(down, 0), 28 + min(down, 0))
            columns = slice(max(right, 0), 28 + min(right, 0))
            source_rows = slice(max(-down, 0), 28 + min(-down, 0))
            source_columns = slice(max(-right, 0), 28 + min(-right, 0))
            expected[rows, columns] = source[source_rows, source_columns]
            if torch.equal(expected, shifted.reshape(28, 28)):
                return down, right
    raise AssertionError("the shifted image is no shift of the original within the bound")


def test_shape_and_dtype_kept():
    images = numbered_images(5)
    shifted = random_shift(images, 2, FILL, torch.Generator().manual_seed(0))
    assert shifted.shape == (5, 784)
    assert shifted.dtype == torch.float32


def test_same_generator_state_same_batch():
    images = numbered_images(16)
    first = random_shift(images, 2, FILL, torch.Generator().manual_seed(3))
    second = random_shift(images, 2, FILL, torch.Generator().manual_seed(3))
    other = random_shift(images, 2, FILL, torch.Generator().manual_seed(4))
    assert torch.equal(first, second)
    assert not torch.equal(first, other)


def test_each_image_is_a_bounded_shift():
    images = numbered_images(200)
    shifted = random_shift(images, 2, FILL, torch.Generator().manual_seed(0))
    offsets = {find_offset(images[i], shifted[i], 2) for i in range(len(images))}
    assert offsets <= {(down, right) for down in range(-2, 3) for right in range(-2, 3)}
    # 200 draws from 25 offsets: every offset appears unless the draw is badly skewed.
    assert len(offsets) == 25


def test_shift_moves_content_by_offset():
    image = torch.zeros(1, 28, 28)
    image[0, 10, 10] = 1.0
    generator = torch.Generator().manual_seed(0)
    expected_offset = torch.randint(-1, 2, (2, 1), generator=torch.Generator().manual_seed(0))
    shifted = random_shift(image.reshape(1, 784), 1, FILL, generator).reshape(28, 28)
    down, right = int(expected_offset[0, 0]), int(expected_offset[1, 0])
    assert shifted[10 + down, 10 + right] == 1.0
    assert int((shifted == 1.0).sum()) == 1


def test_zero_shift_returns_copy():
    images = numbered_images(3)
    shifted = random_shift(images, 0, FILL, torch.Generator().manual_seed(0))
    assert torch.equal(shifted, images)
    shifted[0, 0] = -1.0
    assert images[0, 0] == 1.0


def test_input_left_unchanged():
    images = numbered_images(4)
    before = images.clone()
    random_shift(images, 3, FILL, torch.Generator().manual_seed(0))
    assert torch.equal(images, before)


def test_empty_batch():
    shifted = random_shift(torch.empty(0, 784), 2, FILL, torch.Generator().manual_seed(0))
    assert shifted.shape == (0, 784)


def test_negative_shift_rejected():
    with pytest.raises(ValueError) as raised:
        random_shift(numbered_images(1), -1, FILL, torch.Generator())
    assert str(raised.value) == "max_shift must be >= 0, got -1"
