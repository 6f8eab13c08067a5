"""The command line turns a missing or damaged dataset into one line that says what to do."""

from __future__ import annotations

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
