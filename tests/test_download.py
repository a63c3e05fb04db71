"""Tests of fmnist.download against an HTTP server on 127.0.0.1 that each test configures."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import socket
import threading
import time
import types
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from fmnist import download
from fmnist.datasets import DataFile, DatasetSpec
from fmnist.download import (
    FileCheck,
    default_data_dir,
    download_dataset,
    fetch_file,
    md5_of,
    resolve_data_dir,
    verify_data_dir,
)
from fmnist.errors import ConfigError, DataFormatError, DownloadError

# A tiny stand-in for the real release: names as in Fashion-MNIST, a few bytes each.
CONTENTS = {
    "train-images-idx3-ubyte.gz": b"train images payload",
    "train-labels-idx1-ubyte.gz": b"train labels payload",
    "t10k-images-idx3-ubyte.gz": b"test images payload",
    "t10k-labels-idx1-ubyte.gz": b"test labels payload",
}
KINDS = {
    "train-images-idx3-ubyte.gz": ("images", "train"),
    "train-labels-idx1-ubyte.gz": ("labels", "train"),
    "t10k-images-idx3-ubyte.gz": ("images", "test"),
    "t10k-labels-idx1-ubyte.gz": ("labels", "test"),
}


def md5_hex(content: bytes) -> str:
    return hashlib.md5(content).hexdigest()


SPEC = DatasetSpec(
    name="Tiny",
    files=tuple(DataFile(name, md5_hex(content), *KINDS[name]) for name, content in CONTENTS.items()),
    mirrors=(),
    class_names=("a", "b"),
    image_shape=(2, 2),
)
TRAIN_IMAGES = SPEC.files[0]
HTML_PAGE = b"<html><body>Moved</body></html>"

Responder = Callable[[BaseHTTPRequestHandler, threading.Event], None]


def send_body(body: bytes, content_type: str = "application/octet-stream") -> Responder:
    def respond(handler: BaseHTTPRequestHandler, release: threading.Event) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    return respond


def send_status(code: int) -> Responder:
    def respond(handler: BaseHTTPRequestHandler, release: threading.Event) -> None:
        handler.send_error(code)

    return respond


def stall_before_headers(seconds: float) -> Responder:
    def respond(handler: BaseHTTPRequestHandler, release: threading.Event) -> None:
        release.wait(seconds)

    return respond


def stall_mid_body(body: bytes, seconds: float) -> Responder:
    def respond(handler: BaseHTTPRequestHandler, release: threading.Event) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body[:5])
        handler.wfile.flush()
        release.wait(seconds)

    return respond


def close_early(body: bytes, sent: int) -> Responder:
    """Declare the full Content-Length, send ``sent`` bytes and close (HTTP/1.0 closes after a response)."""

    def respond(handler: BaseHTTPRequestHandler, release: threading.Event) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body[:sent])

    return respond


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request, client_address) -> None:
        # A client that timed out leaves the handler writing to a closed socket.
        pass


class FakeMirrors:
    """An HTTP server on 127.0.0.1 that plays configured responses per path and counts requests.

    ``route`` sets the responses of one path. They are used in order and the last one
    repeats. A path without a route gets 404.
    """

    def __init__(self) -> None:
        self.routes: dict[str, list[Responder]] = {}
        self.requests: list[str] = []
        self.release = threading.Event()
        self._lock = threading.Lock()
        self.server = _QuietServer(("127.0.0.1", 0), self._handler_class())
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        mirrors = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with mirrors._lock:
                    mirrors.requests.append(self.path)
                    queue = mirrors.routes.get(self.path)
                    if not queue:
                        responder = send_status(404)
                    elif len(queue) > 1:
                        responder = queue.pop(0)
                    else:
                        responder = queue[0]
                responder(self, mirrors.release)

            def log_message(self, format: str, *args: object) -> None:
                pass

        return Handler

    def url(self, mirror: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/{mirror}/"

    def route(self, mirror: str, name: str, *responders: Responder) -> None:
        self.routes[f"/{mirror}/{name}"] = list(responders)

    def serve_spec(self, mirror: str) -> None:
        for name, content in CONTENTS.items():
            self.route(mirror, name, send_body(content))

    def count(self, mirror: str, name: str) -> int:
        return self.requests.count(f"/{mirror}/{name}")


@pytest.fixture
def mirrors():
    fake = FakeMirrors()
    fake.thread.start()
    yield fake
    fake.release.set()
    fake.server.shutdown()
    fake.server.server_close()
    fake.thread.join(timeout=5)


@pytest.fixture(autouse=True)
def no_retry_pause(monkeypatch):
    monkeypatch.setattr(download, "_RETRY_PAUSE_S", 0.0)


def warnings_in(caplog) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.levelno == logging.WARNING]


def listing(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir())


def validate_fake(path: Path) -> None:
    if path.read_bytes().startswith(b"bad"):
        raise DataFormatError(f"{path.name} has an invalid IDX header")


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# md5_of


def test_md5_of_matches_hashlib_across_chunks(tmp_path):
    path = tmp_path / "blob"
    content = bytes(range(256)) * 41
    path.write_bytes(content)

    assert md5_of(path, chunk_size=1000) == md5_hex(content)
    assert md5_of(path) == md5_hex(content)


# fetch_file


def test_fetch_first_mirror_success(mirrors, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="fmnist.download")
    mirrors.route("m1", TRAIN_IMAGES.name, send_body(CONTENTS[TRAIN_IMAGES.name]))
    data_dir = tmp_path / "data"

    path = fetch_file(TRAIN_IMAGES, data_dir, [mirrors.url("m1"), mirrors.url("m2")])

    assert path == data_dir / TRAIN_IMAGES.name
    assert path.read_bytes() == CONTENTS[TRAIN_IMAGES.name]
    assert listing(data_dir) == [TRAIN_IMAGES.name]
    assert mirrors.requests == [f"/m1/{TRAIN_IMAGES.name}"]
    assert warnings_in(caplog) == []


@pytest.mark.parametrize(
    ("code", "reason"), [(403, "Forbidden"), (404, "Not Found"), (503, "Service Unavailable")]
)
def test_fetch_http_error_tries_next_mirror(mirrors, tmp_path, caplog, code, reason):
    mirrors.route("m1", TRAIN_IMAGES.name, send_status(code))
    mirrors.route("m2", TRAIN_IMAGES.name, send_body(CONTENTS[TRAIN_IMAGES.name]))

    path = fetch_file(TRAIN_IMAGES, tmp_path, [mirrors.url("m1"), mirrors.url("m2")])

    assert path.read_bytes() == CONTENTS[TRAIN_IMAGES.name]
    assert mirrors.count("m1", TRAIN_IMAGES.name) == 1
    assert mirrors.count("m2", TRAIN_IMAGES.name) == 1
    url = mirrors.url("m1") + TRAIN_IMAGES.name
    assert warnings_in(caplog) == [f"Download of {url} failed: HTTP {code} {reason}"]


def test_fetch_all_mirrors_fail_message(mirrors, tmp_path, caplog):
    mirrors.route("m1", TRAIN_IMAGES.name, send_status(404))
    mirrors.route("m2", TRAIN_IMAGES.name, send_status(503))

    with pytest.raises(DownloadError) as excinfo:
        fetch_file(TRAIN_IMAGES, tmp_path, [mirrors.url("m1"), mirrors.url("m2")])

    url1 = mirrors.url("m1") + TRAIN_IMAGES.name
    url2 = mirrors.url("m2") + TRAIN_IMAGES.name
    assert str(excinfo.value) == (
        f"Failed to download {TRAIN_IMAGES.name} from every mirror: "
        f"{url1} (HTTP 404 Not Found), {url2} (HTTP 503 Service Unavailable). "
        f"Check the network connection, or copy the official files into {tmp_path} and run with --offline "
        f"(--data-dir or FMNIST_DATA_DIR select another data directory)."
    )
    assert len(warnings_in(caplog)) == 2
    assert listing(tmp_path) == []


def test_fetch_without_mirrors_fails(tmp_path):
    with pytest.raises(DownloadError, match=r"from every mirror: no mirror is configured\. Check"):
        fetch_file(TRAIN_IMAGES, tmp_path, [])


def test_fetch_html_page_tries_next_mirror(mirrors, tmp_path, caplog):
    mirrors.route("m1", TRAIN_IMAGES.name, send_body(HTML_PAGE, content_type="text/html"))
    mirrors.route("m2", TRAIN_IMAGES.name, send_body(CONTENTS[TRAIN_IMAGES.name]))

    path = fetch_file(TRAIN_IMAGES, tmp_path, [mirrors.url("m1"), mirrors.url("m2")])

    assert path.read_bytes() == CONTENTS[TRAIN_IMAGES.name]
    assert listing(tmp_path) == [TRAIN_IMAGES.name]
    assert mirrors.count("m1", TRAIN_IMAGES.name) == 1
    url = mirrors.url("m1") + TRAIN_IMAGES.name
    assert warnings_in(caplog) == [
        f"Download of {url} failed: MD5 {md5_hex(HTML_PAGE)} does not match the expected "
        f"{TRAIN_IMAGES.md5} (Content-Type text/html)"
    ]


def test_fetch_wrong_digest_everywhere_leaves_nothing(mirrors, tmp_path):
    mirrors.route("m1", TRAIN_IMAGES.name, send_body(HTML_PAGE, content_type="text/html"))
    mirrors.route("m2", TRAIN_IMAGES.name, send_body(b"another dataset"))

    with pytest.raises(DownloadError, match="does not match the expected"):
        fetch_file(TRAIN_IMAGES, tmp_path, [mirrors.url("m1"), mirrors.url("m2")])

    assert listing(tmp_path) == []


@pytest.mark.parametrize(
    ("stall", "reason"),
    [
        (stall_before_headers(10.0), "timed out after 0.5 s"),
        (stall_mid_body(CONTENTS[TRAIN_IMAGES.name], 10.0), "timed out after 0.5 s at byte 5"),
    ],
    ids=["before-headers", "mid-body"],
)
def test_fetch_stalled_response_retries_then_next(mirrors, tmp_path, caplog, stall, reason):
    mirrors.route("m1", TRAIN_IMAGES.name, stall)
    mirrors.route("m2", TRAIN_IMAGES.name, send_body(CONTENTS[TRAIN_IMAGES.name]))

    start = time.monotonic()
    path = fetch_file(TRAIN_IMAGES, tmp_path, [mirrors.url("m1"), mirrors.url("m2")], timeout=0.5, retries=1)
    elapsed = time.monotonic() - start

    assert path.read_bytes() == CONTENTS[TRAIN_IMAGES.name]
    assert elapsed < 4.0
    assert mirrors.count("m1", TRAIN_IMAGES.name) == 2
    url = mirrors.url("m1") + TRAIN_IMAGES.name
    assert warnings_in(caplog) == [
        f"Download of {url} failed (attempt 1 of 2): {reason}",
        f"Download of {url} failed (attempt 2 of 2): {reason}",
    ]
    assert listing(tmp_path) == [TRAIN_IMAGES.name]


def test_fetch_body_closed_early_is_retried(mirrors, tmp_path, caplog):
    content = CONTENTS[TRAIN_IMAGES.name]
    mirrors.route("m1", TRAIN_IMAGES.name, close_early(content, 5), send_body(content))

    path = fetch_file(TRAIN_IMAGES, tmp_path, [mirrors.url("m1"), mirrors.url("m2")])

    assert path.read_bytes() == content
    assert mirrors.count("m1", TRAIN_IMAGES.name) == 2
    assert mirrors.count("m2", TRAIN_IMAGES.name) == 0
    url = mirrors.url("m1") + TRAIN_IMAGES.name
    assert warnings_in(caplog) == [
        f"Download of {url} failed (attempt 1 of 3): connection closed after 5 of {len(content)} bytes"
    ]
    assert listing(tmp_path) == [TRAIN_IMAGES.name]


def test_fetch_body_always_short_fails(mirrors, tmp_path):
    content = CONTENTS[TRAIN_IMAGES.name]
    mirrors.route("m1", TRAIN_IMAGES.name, close_early(content, 5))

    with pytest.raises(DownloadError) as excinfo:
        fetch_file(TRAIN_IMAGES, tmp_path, [mirrors.url("m1")], retries=1)

    url = mirrors.url("m1") + TRAIN_IMAGES.name
    assert f"{url} (connection closed after 5 of {len(content)} bytes, 2 attempts)." in str(excinfo.value)
    assert mirrors.count("m1", TRAIN_IMAGES.name) == 2
    assert listing(tmp_path) == []


def test_fetch_connection_refused_retries_then_next(mirrors, tmp_path, caplog):
    unreachable_mirror = f"http://127.0.0.1:{closed_port()}/"
    mirrors.route("m2", TRAIN_IMAGES.name, send_body(CONTENTS[TRAIN_IMAGES.name]))

    path = fetch_file(TRAIN_IMAGES, tmp_path, [unreachable_mirror, mirrors.url("m2")], retries=2)

    assert path.read_bytes() == CONTENTS[TRAIN_IMAGES.name]
    url = unreachable_mirror + TRAIN_IMAGES.name
    warnings = warnings_in(caplog)
    assert len(warnings) == 3
    for attempt, message in enumerate(warnings, start=1):
        assert message.startswith(f"Download of {url} failed (attempt {attempt} of 3): ")
        assert "Connection refused" in message


@pytest.mark.parametrize("error", [KeyboardInterrupt, RuntimeError])
def test_fetch_interrupt_removes_temp_file(mirrors, tmp_path, monkeypatch, error):
    mirrors.route("m1", TRAIN_IMAGES.name, send_body(CONTENTS[TRAIN_IMAGES.name]))
    seen_during_download: list[list[str]] = []

    class InterruptingHash:
        def update(self, chunk: bytes) -> None:
            seen_during_download.append(listing(tmp_path))
            raise error()

    monkeypatch.setattr(download, "hashlib", types.SimpleNamespace(md5=InterruptingHash))

    with pytest.raises(error):
        fetch_file(TRAIN_IMAGES, tmp_path, [mirrors.url("m1"), mirrors.url("m2")])

    assert len(seen_during_download) == 1
    [temp_name] = seen_during_download[0]
    assert temp_name.startswith(f".{TRAIN_IMAGES.name}.part-")
    assert listing(tmp_path) == []
    assert mirrors.count("m2", TRAIN_IMAGES.name) == 0


def test_fetch_progress_bar_only_when_asked(mirrors, tmp_path, capsys):
    mirrors.route("m1", TRAIN_IMAGES.name, send_body(CONTENTS[TRAIN_IMAGES.name]))

    fetch_file(TRAIN_IMAGES, tmp_path / "quiet", [mirrors.url("m1")])
    assert capsys.readouterr().err == ""

    fetch_file(TRAIN_IMAGES, tmp_path / "shown", [mirrors.url("m1")], show_progress=True)
    assert TRAIN_IMAGES.name in capsys.readouterr().err


def test_fetch_rejects_negative_retries(tmp_path):
    with pytest.raises(ConfigError) as excinfo:
        fetch_file(TRAIN_IMAGES, tmp_path, ["http://127.0.0.1:9/"], retries=-1)

    assert str(excinfo.value) == "Invalid retries: expected an integer >= 0, got -1."


def test_fetch_rejects_zero_timeout(tmp_path):
    with pytest.raises(ConfigError) as excinfo:
        fetch_file(TRAIN_IMAGES, tmp_path, ["http://127.0.0.1:9/"], timeout=0)

    assert str(excinfo.value) == "Invalid download timeout: expected a number of seconds > 0, got 0."


# download_dataset


def test_download_dataset_fetches_every_file(mirrors, tmp_path):
    mirrors.serve_spec("m1")
    data_dir = tmp_path / "new" / "data"

    paths = download_dataset(data_dir, SPEC, mirrors=[mirrors.url("m1")])

    assert paths == [data_dir / data_file.name for data_file in SPEC.files]
    for path in paths:
        assert path.read_bytes() == CONTENTS[path.name]
    assert listing(data_dir) == sorted(CONTENTS)


def test_download_dataset_uses_spec_mirrors(mirrors, tmp_path):
    mirrors.serve_spec("m2")
    spec = dataclasses.replace(SPEC, mirrors=(mirrors.url("m1"), mirrors.url("m2")))

    paths = download_dataset(tmp_path, spec)

    assert [path.read_bytes() for path in paths] == list(CONTENTS.values())
    assert mirrors.count("m1", TRAIN_IMAGES.name) == 1


def test_download_dataset_keeps_official_files(mirrors, tmp_path):
    mirrors.serve_spec("m1")
    for data_file in SPEC.files[:2]:
        (tmp_path / data_file.name).write_bytes(CONTENTS[data_file.name])

    validated: list[Path] = []

    paths = download_dataset(tmp_path, SPEC, mirrors=[mirrors.url("m1")], validate=validated.append)

    assert paths == [tmp_path / data_file.name for data_file in SPEC.files]
    assert validated == []
    assert sorted(mirrors.requests) == sorted(f"/m1/{data_file.name}" for data_file in SPEC.files[2:])


def test_download_dataset_force_fetches_again(mirrors, tmp_path):
    mirrors.serve_spec("m1")
    for name, content in CONTENTS.items():
        (tmp_path / name).write_bytes(content)

    download_dataset(tmp_path, SPEC, mirrors=[mirrors.url("m1")], force=True)

    assert len(mirrors.requests) == len(SPEC.files)


def test_download_dataset_accepts_raw_user_file(mirrors, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="fmnist.download")
    mirrors.serve_spec("m1")
    raw_path = tmp_path / "train-images-idx3-ubyte"
    raw_path.write_bytes(b"raw idx images")

    paths = download_dataset(tmp_path, SPEC, mirrors=[mirrors.url("m1")], validate=validate_fake)

    assert paths[0] == raw_path
    assert mirrors.count("m1", TRAIN_IMAGES.name) == 0
    assert len(mirrors.requests) == 3
    expected_info = (
        f"Using {raw_path} as supplied: its MD5 {md5_hex(b'raw idx images')} is not the official one, format is valid"
    )
    assert expected_info in caplog.messages
    assert warnings_in(caplog) == []


def test_download_dataset_unvalidated_user_file(mirrors, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="fmnist.download")
    mirrors.serve_spec("m1")
    user_path = tmp_path / TRAIN_IMAGES.name
    user_path.write_bytes(b"bad but unchecked")

    paths = download_dataset(tmp_path, SPEC, mirrors=[mirrors.url("m1")])

    assert paths[0] == user_path
    assert user_path.read_bytes() == b"bad but unchecked"
    assert mirrors.count("m1", TRAIN_IMAGES.name) == 0
    using_messages = [message for message in caplog.messages if message.startswith("Using ")]
    assert using_messages == [
        f"Using {user_path} as supplied: its MD5 {md5_hex(b'bad but unchecked')} is not the official one, "
        "format not checked"
    ]


def test_download_dataset_moves_invalid_file_aside(mirrors, tmp_path, caplog):
    mirrors.serve_spec("m1")
    raw_path = tmp_path / "train-images-idx3-ubyte"
    raw_path.write_bytes(b"bad header")

    paths = download_dataset(tmp_path, SPEC, mirrors=[mirrors.url("m1")], validate=validate_fake)

    assert paths[0] == tmp_path / TRAIN_IMAGES.name
    assert paths[0].read_bytes() == CONTENTS[TRAIN_IMAGES.name]
    assert not raw_path.exists()
    assert (tmp_path / "train-images-idx3-ubyte.invalid").read_bytes() == b"bad header"
    assert warnings_in(caplog) == [
        f"{raw_path} is invalid (train-images-idx3-ubyte has an invalid IDX header): "
        "moved it to train-images-idx3-ubyte.invalid"
    ]


def test_download_dataset_keeps_earlier_invalid_file(mirrors, tmp_path):
    mirrors.serve_spec("m1")
    (tmp_path / f"{TRAIN_IMAGES.name}.invalid").write_bytes(b"bad from last time")
    (tmp_path / TRAIN_IMAGES.name).write_bytes(b"bad again")

    download_dataset(tmp_path, SPEC, mirrors=[mirrors.url("m1")], validate=validate_fake)

    assert (tmp_path / f"{TRAIN_IMAGES.name}.invalid").read_bytes() == b"bad from last time"
    assert (tmp_path / f"{TRAIN_IMAGES.name}.invalid.1").read_bytes() == b"bad again"
    assert (tmp_path / TRAIN_IMAGES.name).read_bytes() == CONTENTS[TRAIN_IMAGES.name]


def test_download_dataset_fails_when_mirrors_fail(mirrors, tmp_path):
    with pytest.raises(DownloadError, match=r"^Failed to download train-images-idx3-ubyte\.gz from every mirror"):
        download_dataset(tmp_path, SPEC, mirrors=[mirrors.url("m1")])


# verify_data_dir


def test_verify_data_dir_statuses(tmp_path):
    official = tmp_path / SPEC.files[0].name
    official.write_bytes(CONTENTS[official.name])
    valid_raw = tmp_path / "train-labels-idx1-ubyte"
    valid_raw.write_bytes(b"raw labels")
    invalid_raw = tmp_path / "t10k-images-idx3-ubyte"
    invalid_raw.write_bytes(b"bad images")

    checks = verify_data_dir(tmp_path, SPEC, validate=validate_fake)

    assert checks == [
        FileCheck(SPEC.files[0].name, official, "official", SPEC.files[0].md5, "MD5 matches the official digest"),
        FileCheck(
            SPEC.files[1].name, valid_raw, "valid-unofficial", md5_hex(b"raw labels"),
            f"MD5 differs from the official {SPEC.files[1].md5}, format is valid",
        ),
        FileCheck(
            SPEC.files[2].name, invalid_raw, "invalid", md5_hex(b"bad images"),
            "t10k-images-idx3-ubyte has an invalid IDX header",
        ),
        FileCheck(
            SPEC.files[3].name, None, "missing", None,
            f"not found: no t10k-labels-idx1-ubyte.gz or t10k-labels-idx1-ubyte in {tmp_path}",
        ),
    ]
    assert invalid_raw.exists()


def test_verify_data_dir_prefers_usable_candidate(tmp_path):
    (tmp_path / TRAIN_IMAGES.name).write_bytes(b"bad gz")
    raw_path = tmp_path / "train-images-idx3-ubyte"
    raw_path.write_bytes(b"good raw")

    [check, *_] = verify_data_dir(tmp_path, SPEC, validate=validate_fake)

    assert check.path == raw_path
    assert check.status == "valid-unofficial"


def test_verify_data_dir_without_validate(tmp_path):
    (tmp_path / TRAIN_IMAGES.name).write_bytes(b"bad gz")

    [check, *_] = verify_data_dir(tmp_path, SPEC)

    assert check.status == "valid-unofficial"
    assert check.detail == f"MD5 differs from the official {TRAIN_IMAGES.md5}, format not checked"


# data directory resolution


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    monkeypatch.delenv("FMNIST_DATA_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return monkeypatch


def test_default_data_dir_from_fmnist_data_dir(clean_env, tmp_path):
    clean_env.setenv("FMNIST_DATA_DIR", "~/fm")
    clean_env.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))

    assert default_data_dir() == tmp_path / "home" / "fm"


def test_default_data_dir_from_xdg_cache_home(clean_env, tmp_path):
    clean_env.setenv("FMNIST_DATA_DIR", "")
    clean_env.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))

    assert default_data_dir() == tmp_path / "cache" / "fmnist"


@pytest.mark.parametrize("xdg_cache_home", [None, "", "relative/cache"])
def test_default_data_dir_falls_back_to_home(clean_env, tmp_path, xdg_cache_home):
    if xdg_cache_home is not None:
        clean_env.setenv("XDG_CACHE_HOME", xdg_cache_home)

    assert default_data_dir() == tmp_path / "home" / ".cache" / "fmnist"


def test_resolve_data_dir_option_wins(clean_env, tmp_path):
    clean_env.setenv("FMNIST_DATA_DIR", str(tmp_path / "env"))

    assert resolve_data_dir("~/option") == tmp_path / "home" / "option"
    assert resolve_data_dir(tmp_path / "path") == tmp_path / "path"
    assert resolve_data_dir(None) == tmp_path / "env"


def test_resolve_data_dir_rejects_empty_string(clean_env):
    with pytest.raises(ConfigError) as excinfo:
        resolve_data_dir("")

    assert str(excinfo.value) == (
        "Invalid --data-dir: expected a directory path, got an empty string. "
        "Pass a path, or leave the option out to use FMNIST_DATA_DIR or ~/.cache/fmnist."
    )
