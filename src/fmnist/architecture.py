"""The classifier's architecture as constants, importable without torch."""

from __future__ import annotations

INPUT_FEATURES = 28 * 28
HIDDEN_FEATURES = (300, 200)
NUM_CLASSES = 10
ARCHITECTURE = "mlp-784-300-200-10"

# Parameter names and shapes of the state dict of ``fmnist.model.build_model``:
# index 0 is Flatten, then Linear, ReLU, Dropout, Linear, ReLU, Dropout, Linear.
STATE_SHAPES = {
    "1.weight": (HIDDEN_FEATURES[0], INPUT_FEATURES),
    "1.bias": (HIDDEN_FEATURES[0],),
    "4.weight": (HIDDEN_FEATURES[1], HIDDEN_FEATURES[0]),
    "4.bias": (HIDDEN_FEATURES[1],),
    "7.weight": (NUM_CLASSES, HIDDEN_FEATURES[1]),
    "7.bias": (NUM_CLASSES,),
}
