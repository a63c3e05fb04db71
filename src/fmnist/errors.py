"""Exceptions raised by fmnist.

Every error a user can cause derives from :class:`FmnistError`. The command line
maps each class to an exit code through ``exit_code`` and prints the message as
one line, so a message states what failed, on which file or value, and what to do.
"""

from __future__ import annotations


class FmnistError(Exception):
    """Base class of the errors that fmnist reports without a traceback."""

    exit_code = 1


class InvalidInputError(FmnistError):
    """A file, option or value given by the user is invalid (exit code 2)."""

    exit_code = 2


class ConfigError(InvalidInputError):
    """A training or command-line option is invalid."""


class DataFormatError(InvalidInputError):
    """A data file is not a valid Fashion-MNIST IDX or CSV file."""


class ChecksumError(FmnistError):
    """A downloaded or cached file does not match its expected digest."""


class DownloadError(FmnistError):
    """No mirror could deliver a data file."""


class DataNotFoundError(InvalidInputError):
    """A data file is missing and downloading is not allowed (``--offline``)."""


class CheckpointError(InvalidInputError):
    """A model file or run directory cannot be loaded."""


class ImageError(InvalidInputError):
    """An image given to ``predict`` cannot be read or converted."""


class TrainingError(FmnistError):
    """Training cannot continue, for example because the loss is not finite."""
