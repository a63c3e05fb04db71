"""Train, evaluate and serve an MLP classifier for Fashion-MNIST."""

__version__ = "0.1.0"
