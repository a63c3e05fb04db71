"""Tests of fmnist.completion: the bash script completes in a real bash."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from fmnist import completion
from fmnist.cli import build_parser, main
from fmnist.config import PRESETS

BASH = shutil.which("bash")
pytestmark = pytest.mark.skipif(BASH is None, reason="bash is not installed")


@pytest.fixture(scope="module")
def script(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("completion") / "fmnist.bash"
    path.write_text(completion.bash_script(build_parser()))
    return path


def complete(script: Path, line: str, cwd: Path | None = None) -> list[str]:
    """Return the completions bash offers for ``line``, whose last word is the one being completed."""
    words = line.split(" ")
    program = (
        f"source {script}\n"
        f"COMP_WORDS=({' '.join(repr(word) for word in words)})\n"
        f"COMP_CWORD={len(words) - 1}\n"
        "_fmnist\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    completed = subprocess.run([BASH, "--norc", "--noprofile", "-c", program], capture_output=True, text=True, cwd=cwd)
    assert completed.returncode == 0, completed.stderr
    assert completed.stderr == ""
    return [word for word in completed.stdout.split("\n") if word]


def test_commands(script: Path) -> None:
    commands = list(completion._subcommands(build_parser()))
    assert {"download", "train", "evaluate", "predict", "export", "completion"} <= set(commands)
    assert complete(script, "fmnist ") == [*commands, "-h", "--help", "--version"]
    assert complete(script, "fmnist ev") == ["evaluate"]
    assert complete(script, "fmnist --ver") == ["--version"]


def test_every_option_of_every_command(script: Path) -> None:
    parser = build_parser()
    for name, subparser in completion._subcommands(parser).items():
        expected = sorted(option for action in subparser._actions for option in action.option_strings if option.startswith("--"))
        assert sorted(complete(script, f"fmnist {name} --")) == expected, name


def test_option_prefix(script: Path) -> None:
    assert complete(script, "fmnist train --lr") == ["--lr", "--lr-start-factor", "--lr-end-factor"]
    assert complete(script, "fmnist train --epochs 3 --ten") == ["--tensorboard"]


def test_choices(script: Path) -> None:
    assert complete(script, "fmnist export run --format ") == ["onnx", "torchscript"]
    assert complete(script, "fmnist predict run a.png --invert a") == ["auto", "always"]
    assert complete(script, "fmnist completion ") == ["bash"]


def test_numbers_get_no_completion(script: Path, tmp_path: Path) -> None:
    (tmp_path / "3file").write_text("")
    assert complete(script, "fmnist train --epochs ", cwd=tmp_path) == []


def test_paths(script: Path, tmp_path: Path) -> None:
    (tmp_path / "data one").mkdir()
    (tmp_path / "data.toml").write_text("")
    (tmp_path / "run").mkdir()

    assert complete(script, "fmnist train --data-dir da", cwd=tmp_path) == ["data one"]
    assert sorted(complete(script, "fmnist train --config da", cwd=tmp_path)) == ["data one", "data.toml"]
    assert complete(script, "fmnist evaluate r", cwd=tmp_path) == ["run"]
    assert complete(script, "fmnist runs ", cwd=tmp_path) == ["data one", "run"]


def test_value_kinds() -> None:
    actions = {action.dest: action for action in completion._subcommands(build_parser())["train"]._actions}
    assert completion.value_kind(actions["data_dir"]) == completion.DIRECTORY
    assert completion.value_kind(actions["resume"]) == completion.DIRECTORY
    assert completion.value_kind(actions["config"]) == completion.FILE
    assert completion.value_kind(actions["epochs"]) == completion.NONE
    assert completion.value_kind(actions["preset"]) == sorted(PRESETS)


def test_cli_prints_script(script: Path, capsys) -> None:
    assert main(["completion", "bash"]) == 0
    assert capsys.readouterr().out == script.read_text()
    assert script.read_text().endswith("complete -F _fmnist fmnist\n")
