"""Download the dataset files from their mirrors and check what a data directory contains.

Every file is streamed into a temporary file next to its target, hashed while it is
written, and renamed onto the official name only when its MD5 digest matches the
published one. A data directory therefore never contains a partial file under a
final name.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import secrets
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from tqdm import tqdm

from fmnist.datasets import FASHION_MNIST, DataFile, DatasetSpec
from fmnist.errors import ConfigError, DataFormatError, DownloadError

logger = logging.getLogger(__name__)

_READ_CHUNK_BYTES = 1 << 16

# Pause before retrying the same mirror, so that a brief network outage can pass.
_RETRY_PAUSE_S = 1.0

FileStatus = Literal["official", "valid-unofficial", "invalid", "missing"]


@dataclass(frozen=True)
class FileCheck:
    """The state of one dataset file in a data directory, as ``verify_data_dir`` found it."""

    name: str  # official file name, for example "train-images-idx3-ubyte.gz"
    path: Path | None  # the file that was checked, None when it is missing
    status: FileStatus
    md5: str | None  # MD5 hex digest of ``path``, None when missing or unreadable
    detail: str


class _RetryableError(Exception):
    """A failed attempt that may succeed on the same mirror: a timeout, a short body, a reset."""


class _MirrorError(Exception):
    """A failed attempt that the same mirror would repeat: an HTTP error status or a wrong digest."""


def md5_of(path: Path, chunk_size: int = 1 << 20) -> str:
    """Return the MD5 hex digest of the file at ``path``, read in chunks of ``chunk_size`` bytes."""
    digest = hashlib.md5()
    with open(path, "rb") as file:
        while chunk := file.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def fetch_file(
    data_file: DataFile,
    data_dir: Path,
    mirrors: Sequence[str],
    *,
    timeout: float = 30.0,
    retries: int = 2,
    show_progress: bool = False,
) -> Path:
    """Download ``data_file`` into ``data_dir`` from the first mirror that delivers it intact.

    The URL is a mirror prefix followed by the file name, so a prefix ends with "/".
    Each mirror gets up to ``1 + retries`` attempts when a connection fails, times out
    or closes before Content-Length bytes arrived. An HTTP error status or a wrong MD5
    digest moves on to the next mirror at once. ``timeout`` is the socket timeout in
    seconds for connecting and for each read.

    Returns ``data_dir / data_file.name``. Raises DownloadError, naming every URL and
    its failure, when no mirror delivers the file, and ConfigError for a negative
    ``retries`` or a ``timeout`` that is not positive.
    """
    if retries < 0:
        raise ConfigError(f"Invalid retries: expected an integer >= 0, got {retries}.")
    if not timeout > 0:
        raise ConfigError(f"Invalid download timeout: expected a number of seconds > 0, got {timeout}.")

    data_dir.mkdir(parents=True, exist_ok=True)
    attempts = 1 + retries
    failures: list[str] = []

    for mirror in mirrors:
        url = mirror + data_file.name
        for attempt in range(1, attempts + 1):
            try:
                return _download(url, data_file, data_dir, timeout, show_progress)
            except _MirrorError as err:
                logger.warning("Download of %s failed: %s", url, err)
                failures.append(f"{url} ({err})")
                break
            except _RetryableError as err:
                logger.warning("Download of %s failed (attempt %d of %d): %s", url, attempt, attempts, err)
                if attempt == attempts:
                    failures.append(f"{url} ({err}, {attempts} attempts)" if attempts > 1 else f"{url} ({err})")
                else:
                    time.sleep(_RETRY_PAUSE_S)

    tried = ", ".join(failures) if failures else "no mirror is configured"
    raise DownloadError(
        f"Failed to download {data_file.name} from every mirror: {tried}. Check the network connection, "
        f"or copy the official files into {data_dir} and run with --offline "
        f"(--data-dir or FMNIST_DATA_DIR select another data directory)."
    )


def _download(url: str, data_file: DataFile, data_dir: Path, timeout: float, show_progress: bool) -> Path:
    """Make one attempt to download ``url`` and rename it onto ``data_file.name`` if its MD5 matches."""
    target = data_dir / data_file.name
    logger.info("Downloading %s", url)
    response = _open(url, timeout)
    with response:
        expected_size = _content_length(response)

        # The random suffix keeps two concurrent downloads into one directory apart.
        # os.open with O_EXCL creates the file with the umask-filtered mode 0o666 that a
        # plain open() would give, so the renamed file is as readable as any other.
        temp_path = data_dir / f".{data_file.name}.part-{secrets.token_hex(4)}"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
        try:
            with os.fdopen(os.open(temp_path, flags, 0o666), "wb") as temp_file:
                digest, size = _copy_body(response, temp_file, expected_size, timeout, data_file.name, show_progress)
                temp_file.flush()
                os.fsync(temp_file.fileno())

            if expected_size is not None and size != expected_size:
                raise _RetryableError(f"connection closed after {size} of {expected_size} bytes")
            if digest != data_file.md5:
                content_type = response.headers.get("Content-Type", "unknown")
                raise _MirrorError(
                    f"MD5 {digest} does not match the expected {data_file.md5} (Content-Type {content_type})"
                )

            os.replace(temp_path, target)
        finally:
            # Removes the temporary file after any failure, KeyboardInterrupt included.
            # After a successful os.replace the name no longer exists.
            temp_path.unlink(missing_ok=True)

    logger.info("Saved %s (%d bytes, MD5 verified)", target, size)
    return target


def _open(url: str, timeout: float) -> http.client.HTTPResponse:
    """Send the GET request for ``url`` and return the response, classifying failures for the retry loop."""
    try:
        return urllib.request.urlopen(url, timeout=timeout)
    except urllib.error.HTTPError as err:
        err.close()
        raise _MirrorError(f"HTTP {err.code} {err.reason}") from err
    except urllib.error.URLError as err:
        # Connection refused, unreachable host, failed name lookup or a connect timeout.
        if isinstance(err.reason, TimeoutError):
            raise _RetryableError(f"timed out after {timeout:g} s") from err
        if isinstance(err.reason, OSError) and not isinstance(err.reason, FileNotFoundError):
            raise _RetryableError(str(err.reason)) from err
        raise _MirrorError(str(err.reason)) from err
    except ValueError as err:
        raise _MirrorError(f"invalid URL: {err}") from err
    except TimeoutError as err:
        # Raised while waiting for the status line, after the connection was made.
        raise _RetryableError(f"timed out after {timeout:g} s") from err
    except (OSError, http.client.HTTPException) as err:
        raise _RetryableError(_describe(err)) from err


def _content_length(response: http.client.HTTPResponse) -> int | None:
    """Return the Content-Length of ``response``, or None when it is absent or not a number."""
    value = response.headers.get("Content-Length")
    try:
        length = int(value)
    except (TypeError, ValueError):
        return None
    return length if length >= 0 else None


def _copy_body(
    response, temp_file, expected_size: int | None, timeout: float, name: str, show_progress: bool
) -> tuple[str, int]:
    """Write the body of ``response`` to ``temp_file`` and return its MD5 hex digest and size in bytes.

    Only errors of the network read become _RetryableError. A failed write to the local
    disk (for example ENOSPC) is raised unchanged, because another attempt cannot fix it.
    """
    digest = hashlib.md5()
    size = 0
    # read1 returns what one socket read delivers, so a stall is detected after
    # ``timeout`` seconds and the bytes received before it are counted.
    # NOTE: there is no deadline for the whole body, so a server that sends a few
    # bytes more often than every ``timeout`` seconds keeps a download going.
    read_chunk = getattr(response, "read1", response.read)
    with tqdm(
        total=expected_size,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=name,
        disable=not show_progress,
    ) as progress:
        while True:
            try:
                chunk = read_chunk(_READ_CHUNK_BYTES)
            except TimeoutError as err:
                raise _RetryableError(f"timed out after {timeout:g} s at byte {size}") from err
            except (OSError, http.client.HTTPException) as err:
                raise _RetryableError(_describe(err)) from err
            if not chunk:
                # http.client returns b"" when the server closes early, even before
                # Content-Length bytes arrived, so the caller compares the sizes.
                return digest.hexdigest(), size
            temp_file.write(chunk)
            digest.update(chunk)
            size += len(chunk)
            progress.update(len(chunk))


def _describe(err: BaseException) -> str:
    """Return a short reason for a network error, or its type name when the message is empty."""
    if isinstance(err, http.client.IncompleteRead):
        return f"connection closed after {len(err.partial)} bytes"
    return str(err) or type(err).__name__


def download_dataset(
    data_dir: Path,
    spec: DatasetSpec = FASHION_MNIST,
    *,
    mirrors: Sequence[str] | None = None,
    timeout: float = 30.0,
    retries: int = 2,
    show_progress: bool = False,
    validate: Callable[[Path], None] | None = None,
    force: bool = False,
    log_supplied: bool = True,
) -> list[Path]:
    """Make sure every file of ``spec`` is in ``data_dir``, downloading only the missing ones.

    A file is present under its official name or under that name without ".gz", which
    is how a user supplies an uncompressed IDX file. A present file whose MD5 differs
    from the official digest is passed to ``validate``. If that raises DataFormatError,
    the file is renamed to "<name>.invalid" and the official file is downloaded. Without
    ``validate`` such a file is accepted as it is. Other exceptions from ``validate``
    propagate. ``force`` downloads every file again. ``mirrors`` defaults to ``spec.mirrors``.
    With ``log_supplied=False``, a supplied file that passes ``validate`` is logged at DEBUG
    instead of INFO, for callers that report unofficial files themselves when they load them.

    Returns the path of each file in the order of ``spec.files``. Raises DownloadError
    when a file is missing and no mirror delivers it.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    if mirrors is None:
        mirrors = spec.mirrors

    paths = []
    for data_file in spec.files:
        present = None if force else _find_usable(data_dir, data_file, validate, log_supplied)
        if present is None:
            present = fetch_file(
                data_file, data_dir, mirrors, timeout=timeout, retries=retries, show_progress=show_progress
            )
        paths.append(present)
    return paths


def _find_usable(
    data_dir: Path, data_file: DataFile, validate: Callable[[Path], None] | None, log_supplied: bool = True
) -> Path | None:
    """Return the present file for ``data_file`` that can be used, moving invalid ones aside."""
    for path in _candidate_paths(data_dir, data_file):
        if not path.is_file():
            continue

        digest = md5_of(path)
        if digest == data_file.md5:
            logger.debug("%s matches the official MD5", path)
            return path

        if validate is None:
            logger.info("Using %s as supplied: its MD5 %s is not the official one, format not checked", path, digest)
            return path

        try:
            validate(path)
        except DataFormatError as err:
            invalid_path = _free_invalid_path(path)
            path.rename(invalid_path)
            logger.warning("%s is invalid (%s): moved it to %s", path, err, invalid_path.name)
            continue

        level = logging.INFO if log_supplied else logging.DEBUG
        logger.log(level, "Using %s as supplied: its MD5 %s is not the official one, format is valid", path, digest)
        return path
    return None


def _candidate_paths(data_dir: Path, data_file: DataFile) -> list[Path]:
    """Return the official path of ``data_file`` and, for a .gz file, its uncompressed name."""
    paths = [data_dir / data_file.name]
    if data_file.name.endswith(".gz"):
        paths.append(data_dir / data_file.name.removesuffix(".gz"))
    return paths


def _free_invalid_path(path: Path) -> Path:
    """Return "<path>.invalid", or "<path>.invalid.N" with the lowest free N, so no older file is overwritten."""
    candidate = path.with_name(path.name + ".invalid")
    number = 1
    while candidate.exists():
        candidate = path.with_name(f"{path.name}.invalid.{number}")
        number += 1
    return candidate


def verify_data_dir(
    data_dir: Path,
    spec: DatasetSpec = FASHION_MNIST,
    validate: Callable[[Path], None] | None = None,
) -> list[FileCheck]:
    """Check every file of ``spec`` in ``data_dir`` and return one FileCheck per file, in spec order.

    Nothing is moved or downloaded. Without ``validate``, a file whose MD5 is not the
    official one is reported as "valid-unofficial" with a detail saying that its format
    was not checked. A file that cannot be read is reported as "invalid".
    """
    checks = []
    for data_file in spec.files:
        checks.append(_check_file(data_dir, data_file, validate))
    return checks


def _check_file(data_dir: Path, data_file: DataFile, validate: Callable[[Path], None] | None) -> FileCheck:
    """Return the check of the first usable candidate of ``data_file``, else of the first invalid one."""
    first_invalid = None
    for path in _candidate_paths(data_dir, data_file):
        if not path.is_file():
            continue

        check = _check_path(path, data_file, validate)
        if check.status != "invalid":
            return check
        if first_invalid is None:
            first_invalid = check

    if first_invalid is not None:
        return first_invalid
    names = " or ".join(path.name for path in _candidate_paths(data_dir, data_file))
    return FileCheck(data_file.name, None, "missing", None, f"not found: no {names} in {data_dir}")


def _check_path(path: Path, data_file: DataFile, validate: Callable[[Path], None] | None) -> FileCheck:
    """Return the check of one present file."""
    try:
        digest = md5_of(path)
    except OSError as err:
        return FileCheck(data_file.name, path, "invalid", None, f"cannot be read: {err}")

    if digest == data_file.md5:
        return FileCheck(data_file.name, path, "official", digest, "MD5 matches the official digest")
    if validate is None:
        return FileCheck(
            data_file.name, path, "valid-unofficial", digest,
            f"MD5 differs from the official {data_file.md5}, format not checked",
        )

    try:
        validate(path)
    except DataFormatError as err:
        return FileCheck(data_file.name, path, "invalid", digest, str(err))
    except OSError as err:
        return FileCheck(data_file.name, path, "invalid", digest, f"cannot be read: {err}")
    return FileCheck(
        data_file.name, path, "valid-unofficial", digest,
        f"MD5 differs from the official {data_file.md5}, format is valid",
    )


def default_data_dir() -> Path:
    """Return $FMNIST_DATA_DIR if set, else $XDG_CACHE_HOME/fmnist, else ~/.cache/fmnist.

    Empty variables count as unset. A relative XDG_CACHE_HOME is ignored, because the
    XDG Base Directory specification (version 0.7 and later) calls it invalid.
    """
    data_dir = os.environ.get("FMNIST_DATA_DIR", "")
    if data_dir:
        return Path(data_dir).expanduser()

    cache_home = os.environ.get("XDG_CACHE_HOME", "")
    if cache_home and Path(cache_home).is_absolute():
        return Path(cache_home) / "fmnist"
    return Path.home() / ".cache" / "fmnist"


def resolve_data_dir(option: str | Path | None) -> Path:
    """Return the data directory given by ``option`` (from --data-dir), else ``default_data_dir()``.

    Raises ConfigError for an empty string, which usually comes from an unset shell variable.
    """
    if option is None:
        return default_data_dir()
    if str(option) == "":
        raise ConfigError(
            "Invalid --data-dir: expected a directory path, got an empty string. "
            "Pass a path, or leave the option out to use FMNIST_DATA_DIR or ~/.cache/fmnist."
        )
    return Path(option).expanduser()
