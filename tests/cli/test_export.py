"""`photobot export`: the labelled set as one folder per label, from the real command line."""

from __future__ import annotations

import hashlib

import pytest

from photobot.cli import main as photobot
from storage import NOT_A_DIGIT, split_of
from tests.support.storage import label_photo, open_store, png


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no stray .env
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("LOG_LEVEL", "WARNING")
    return tmp_path / "var"


async def make_labels(data_dir) -> dict[str, str]:
    """Nine labelled digit photos, one not-a-digit, one blocked user's label, one flower; sha → label."""
    store = await open_store(data_dir)
    expected = {}
    try:
        for n in range(9):
            await label_photo(store, user_id=1, message_id=n, image=png(n), true_label=str(n % 3))
            expected[hashlib.sha256(png(n)).hexdigest()] = str(n % 3)
        await label_photo(store, user_id=1, message_id=20, image=png(20), true_label=NOT_A_DIGIT)
        await label_photo(store, user_id=9, message_id=1, image=png(30), true_label="5")
        await store.set_blocked(9, True)
        await label_photo(store, user_id=1, message_id=40, image=png(40), true_label="roses", model="flowers")
    finally:
        await store.close()
    return expected


def exported(folder) -> dict[str, str]:
    return {path.stem: path.parent.name for path in folder.glob("*/*")}


async def test_export_writes_one_folder_per_label(data_dir, tmp_path, capsys):
    expected = await make_labels(data_dir)
    out = tmp_path / "export"
    assert photobot(["export", "--model", "digits", str(out)]) == 0
    assert exported(out) == expected
    assert sorted(p.name for p in out.iterdir()) == ["0", "1", "2"]
    for path in out.glob("*/*"):
        assert path.suffix == ".png"
        assert hashlib.sha256(path.read_bytes()).hexdigest() == path.stem
    printed = capsys.readouterr().out
    assert "exported 9 labelled digits photos" in printed and "  0: 3" in printed
    assert "left out: 1 votes of blocked users" in printed

    assert photobot(["export", "--model", "digits", str(out)]) == 0  # again: the same files, nothing added
    assert exported(out) == expected


async def test_export_with_negatives_and_by_split(data_dir, tmp_path):
    expected = await make_labels(data_dir)
    assert photobot(["export", "--model", "digits", "--with-negatives", str(tmp_path / "all")]) == 0
    assert exported(tmp_path / "all")[hashlib.sha256(png(20)).hexdigest()] == "not_a_digit"
    assert photobot(["export", "--model", "digits", "--split", "train", str(tmp_path / "train")]) == 0
    assert photobot(["export", "--model", "digits", "--split", "validation", str(tmp_path / "val")]) == 0
    train, validation = exported(tmp_path / "train"), exported(tmp_path / "val")
    assert {**train, **validation} == expected and not set(train) & set(validation)
    assert all(split_of(sha) == "train" for sha in train)
    assert photobot(["export", "--model", "flowers", str(tmp_path / "flowers")]) == 0
    assert exported(tmp_path / "flowers") == {hashlib.sha256(png(40)).hexdigest(): "roses"}


def test_export_without_a_database_says_so(data_dir, tmp_path, capsys):
    assert photobot(["export", "--model", "digits", str(tmp_path / "out")]) == 1
    assert "no database" in capsys.readouterr().err


async def test_export_to_a_path_it_cannot_write_is_one_line(data_dir, tmp_path, capsys):
    await make_labels(data_dir)
    a_file = tmp_path / "photo.png"
    a_file.write_bytes(png(1))
    assert photobot(["export", "--model", "digits", str(a_file)]) == 1
    error = capsys.readouterr().err
    assert error == f"photobot export: {a_file}: File exists\n"

    assert photobot(["export", "--model", "digits", "/proc/nope"]) == 1
    error = capsys.readouterr().err
    assert error == "photobot export: /proc/nope: No such file or directory\n"
