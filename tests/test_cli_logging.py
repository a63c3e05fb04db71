"""Tests of what the command line shows: log levels, --quiet, --verbose and progress bars."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

from fmnist import cli
from fmnist.cli import build_parser, main
from fmnist.completion import _subcommands

SRC = Path(__file__).resolve().parents[1] / "src"


def train_args(data_dir: Path, run_dir: Path, *extra: str) -> list[str]:
    return ["train", "--data-dir", str(data_dir), "--offline", "--output-dir", str(run_dir), "--epochs", "2", "--batch-size", "64", *extra]


def test_every_command_takes_verbosity_options() -> None:
    for name, subparser in _subcommands(build_parser()).items():
        options = {option for action in subparser._actions for option in action.option_strings}
        assert {"-q", "--quiet", "-v", "--verbose", "--debug"} <= options, name


def test_quiet_and_verbose_exclusive(capsys) -> None:
    with pytest.raises(SystemExit) as raised:
        main(["runs", "-q", "-v"])
    assert raised.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == "fmnist runs: error: argument -v/--verbose: not allowed with argument -q/--quiet"


def test_quiet_train_prints_nothing(tmp_path: Path, data_dir: Path, capsys) -> None:
    assert main(train_args(data_dir, tmp_path / "run", "--quiet")) == 0

    captured = capsys.readouterr()
    assert (captured.out, captured.err) == ("", "")
    log = (tmp_path / "run" / "train.log").read_text()
    assert re.search(r" INFO epoch 2/2 step \d+ train_loss ", log)


def test_default_train_shows_plain_lines(tmp_path: Path, data_dir: Path, capsys) -> None:
    assert main(train_args(data_dir, tmp_path / "run")) == 0

    err = capsys.readouterr().err
    lines = err.splitlines()
    assert "\r" not in err
    assert [line.split(" step ")[0] for line in lines if line.startswith("epoch ")] == ["epoch 1/2", "epoch 2/2"]
    assert lines[-1].startswith("Test accuracy ")
    assert lines[-1].endswith(f"; wrote {tmp_path / 'run'}")
    assert not any(line.startswith("Decompressing ") for line in lines)


def test_verbose_train_shows_debug_lines(tmp_path: Path, data_dir: Path, capsys) -> None:
    assert main(train_args(data_dir, tmp_path / "run", "--verbose")) == 0

    lines = capsys.readouterr().err.splitlines()
    cache = data_dir / ".fmnist-cache"
    assert any(re.fullmatch(rf"Decompressing {re.escape(str(data_dir))}/train-images-idx3-ubyte.gz into {re.escape(str(cache))}/.*\.npy", line) for line in lines)
    assert "DEBUG" not in (tmp_path / "run" / "train.log").read_text()


def test_quiet_keeps_errors(tmp_path: Path, capsys) -> None:
    assert main(["evaluate", str(tmp_path / "nope"), "--offline", "--quiet"]) == 2
    assert capsys.readouterr().err == (
        f"error: {tmp_path / 'nope'}: no such run directory or model file; pass the directory that 'fmnist train' wrote\n"
    )


class FakeTerminal:
    def __init__(self, tty: bool) -> None:
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


@pytest.mark.parametrize("tty, quiet, expected", [(True, False, True), (True, True, False), (False, False, False)])
def test_progress_only_on_terminal(monkeypatch, tty: bool, quiet: bool, expected: bool) -> None:
    monkeypatch.setattr(sys, "stderr", FakeTerminal(tty))
    args = build_parser().parse_args(["download"] + (["--quiet"] if quiet else []))
    assert cli.show_progress(args) is expected


def run_on_terminal(args: list[str], cwd: Path) -> str:
    """Run the command line in a subprocess whose stderr is a pseudo-terminal; return what it wrote there."""
    controller, terminal = pty.openpty()
    # A new pseudo-terminal is 0 columns wide, and tqdm draws nothing on it.
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    environment = {**os.environ, "PYTHONPATH": str(SRC)}
    process = subprocess.Popen([sys.executable, "-m", "fmnist", *args], stderr=terminal, stdout=subprocess.DEVNULL, cwd=cwd, env=environment)
    os.close(terminal)
    output = b""
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # EIO: the process closed the terminal
            break
        if not chunk:
            break
        output += chunk
    os.close(controller)
    assert process.wait(timeout=300) == 0
    return output.decode("utf-8", errors="replace")


@pytest.mark.slow
def test_progress_bars_on_terminal(tmp_path: Path, data_dir: Path) -> None:
    terminal_output = run_on_terminal(train_args(data_dir, tmp_path / "run"), tmp_path)

    assert re.search(r"\repoch 1: +\d+%\|[^\r\n]*\| \d/6 \[[^\r\n]*batch/s\]", terminal_output)
    assert re.search(r"\repoch 2: +\d+%\|", terminal_output)
    # The bar is cleared at the end of each epoch, so the epoch's log line starts a clean line.
    assert re.search(r"\repoch 2/2 step 12 train_loss [^\r\n]*\r\n", terminal_output)


@pytest.mark.slow
def test_quiet_hides_progress_bars_on_terminal(tmp_path: Path, data_dir: Path) -> None:
    assert run_on_terminal(train_args(data_dir, tmp_path / "run", "--quiet"), tmp_path) == ""


def test_unofficial_files_reported_once_online(tmp_path: Path, data_dir: Path, capsys) -> None:
    # Every file is present, so the run downloads nothing, but without --offline it checks them first.
    args = [arg for arg in train_args(data_dir, tmp_path / "run") if arg != "--offline"]
    assert main(args) == 0

    lines = capsys.readouterr().err.splitlines()
    train_images = data_dir / "train-images-idx3-ubyte.gz"
    mentions = [line for line in lines if str(train_images) in line]
    assert len(mentions) == 1
    assert mentions[0].startswith(f"{train_images} is not the official release file (MD5 ")
