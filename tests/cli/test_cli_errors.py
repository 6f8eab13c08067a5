"""The command line turns a missing or damaged dataset into one line that says what to do."""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator

import pytest

from photobot import cli


def test_a_damaged_dataset_is_one_line_not_a_traceback(tmp_path, monkeypatch, capsys):
    datasets = tmp_path / "datasets"
    datasets.mkdir()
    (datasets / "mnist.npz").write_bytes(b"not a zip archive")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PHOTOBOT_DATASETS", str(datasets))
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "var"))

    code = cli.main(["experiment", "--arch", "mlp:10", "--splits", "1", "--epochs", "1", "--out", "exp"])

    error = capsys.readouterr().err
    assert code == 1
    last_line = error.strip().splitlines()[-1]
    assert last_line.startswith("photobot experiment: ") and "not a usable mnist.npz" in last_line
    assert "Traceback" not in error


def test_a_programming_error_still_raises(monkeypatch, tmp_path):
    # Only errors that explain themselves are shortened; anything else keeps its traceback.
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit):
        cli.main(["experiment", "--splits", "not-a-number"])


def _one_line(error: str) -> str:
    assert "Traceback" not in error
    lines = error.strip().splitlines()
    assert len(lines) == 1, error
    return lines[0]


def test_a_data_dir_under_a_regular_file_is_one_line(tmp_path, monkeypatch, capsys):
    # The path a command cannot use is the operator's to fix: named, with the system's reason.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a_file").write_text("not a folder", encoding="utf-8")
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "a_file" / "var"))

    code = cli.main(["models", "list"])

    line = _one_line(capsys.readouterr().err)
    assert code == 1
    assert line.startswith(f"photobot models: {tmp_path / 'a_file' / 'var'}")
    assert line.endswith(": Not a directory")


def test_a_data_dir_that_cannot_be_created_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATA_DIR", "/proc/photobot")  # no one, root included, creates folders in /proc

    code = cli.main(["models", "new", "cats", "--labels", "a", "b"])

    assert code == 1
    assert _one_line(capsys.readouterr().err) == "photobot models: /proc/photobot: No such file or directory"


def test_os_error_line_names_both_paths_or_keeps_a_message_of_its_own():
    assert cli.os_error_line(FileExistsError(17, "File exists", "a", None, "b")) == "a -> b: File exists"
    assert cli.os_error_line(OSError(9, "Bad file descriptor", 3)) == "3: Bad file descriptor"
    assert cli.os_error_line(OSError("no free port")) == "no free port"


def test_top_beyond_the_labels_an_answer_keeps_says_so(tmp_path, monkeypatch, capsys):
    from inference.flowers import TOP_K
    from photobot.commands.classify import MAX_TOP

    assert MAX_TOP == TOP_K  # what an answer keeps is what --top may ask for
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stopped:
        cli.main(["classify", "--top", str(MAX_TOP + 1), "photo.jpg"])
    assert stopped.value.code == 2
    assert (
        f"argument --top: at most {MAX_TOP}: an answer keeps its {MAX_TOP} best labels"
        in capsys.readouterr().err
    )


def test_the_keras_backend_of_dotenv_reaches_keras(tmp_path, monkeypatch):
    """Keras reads KERAS_BACKEND from the environment as it is imported: one set only in .env was
    ignored (the models ran on TensorFlow while .env said jax). The environment still wins."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "var"))
    (tmp_path / ".env").write_text("KERAS_BACKEND=jax\n")
    monkeypatch.delenv("KERAS_BACKEND", raising=False)
    assert cli.main(["models", "list", "--json"]) == 0
    assert os.environ["KERAS_BACKEND"] == "jax"
    monkeypatch.setenv("KERAS_BACKEND", "torch")
    assert cli.main(["models", "list", "--json"]) == 0
    assert os.environ["KERAS_BACKEND"] == "torch"


def test_every_command_and_option_says_what_it_is_for() -> None:
    """`photobot … --help` is the command line's manual: an option listed without a word is a guess."""

    def silent(parser: argparse.ArgumentParser, path: str) -> Iterator[str]:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                helped = {choice.dest for choice in action._choices_actions}
                for name, sub in action.choices.items():
                    if name not in helped:
                        yield f"{path} {name}"
                    yield from silent(sub, f"{path} {name}")
            elif not action.help:
                yield f"{path} {'/'.join(action.option_strings) or action.dest}"

    assert list(silent(cli.build_parser(), "photobot")) == []
