import torch
from torch import nn

from fmnist.architecture import STATE_SHAPES
from fmnist.model import build_model, probabilities


def test_layers_in_order():
    model = build_model(dropout=0.3)
    kinds = [type(layer) for layer in model]
    assert kinds == [nn.Flatten, nn.Linear, nn.ReLU, nn.Dropout, nn.Linear, nn.ReLU, nn.Dropout, nn.Linear]
    assert model[3].p == 0.3
    assert model[6].p == 0.3


def test_no_softmax_layer():
    assert not any(isinstance(layer, (nn.Softmax, nn.LogSoftmax)) for layer in build_model())


def test_state_shapes_match_table():
    shapes = {key: tuple(value.shape) for key, value in build_model().state_dict().items()}
    assert shapes == STATE_SHAPES


def test_logits_shape_from_images_and_flat():
    model = build_model().eval()
    assert model(torch.zeros(4, 28, 28)).shape == (4, 10)
    assert model(torch.zeros(4, 784)).shape == (4, 10)


def test_probabilities_sum_to_one():
    rows = probabilities(torch.randn(5, 10)).sum(dim=1)
    assert torch.allclose(rows, torch.ones(5))
