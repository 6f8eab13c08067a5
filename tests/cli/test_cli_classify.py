"""`photobot classify` and `photobot evaluate --images` through the real engine, real tiny models."""

from __future__ import annotations

import asyncio
import json
import shutil

import pytest

from inference.model_store import ModelStore
from photobot.cli import main
from photobot.commands.classify import classify_files
from photobot.settings import Settings
from tests.support.models import add_version, digit_meta, digit_photo, load_mnist_subset


@pytest.fixture(scope="module")
def labelled_folder(tmp_path_factory, mnist_path):
    """A labelled folder of digit photos (7/, 2/, …, none/) and their labels, drawn once: the commands
    only read it."""
    _, _, x_test, y_test = load_mnist_subset(mnist_path, n_test=30)
    folder = tmp_path_factory.mktemp("photos")
    for i, (image, label) in enumerate(zip(x_test, y_test, strict=True)):
        (folder / str(label)).mkdir(parents=True, exist_ok=True)
        (folder / str(label) / f"{i}.jpg").write_bytes(digit_photo(image, seed=i))
    (folder / "none").mkdir()
    (folder / "none" / "blank.png").write_bytes(_blank_page())
    return folder, y_test


@pytest.fixture
def photos(tmp_path, monkeypatch, labelled_folder, converted_digit_model_file):
    """The labelled photos and a store with the tiny digit model, converted for LiteRT as after its
    first start."""
    return serving(tmp_path, monkeypatch, converted_digit_model_file, labelled_folder)


@pytest.fixture
def photos_and_a_new_model(tmp_path, monkeypatch, labelled_folder, digit_model_file):
    """The same, the model not converted yet: the first command that serves it converts it."""
    return serving(tmp_path, monkeypatch, digit_model_file, labelled_folder)


def serving(tmp_path, monkeypatch, model_file, labelled):
    """Point the commands at a store of their own in `tmp_path` holding `model_file`; give `labelled`."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("ENGINE_RELOAD_POLL_S", "0")
    add_version(ModelStore(tmp_path / "var" / "models"), "digits", model_file, digit_meta())
    return labelled


def _blank_page() -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (400, 300), 230).save(buffer, "PNG")
    return buffer.getvalue()


def test_classify_prints_percentages_like_label_image(photos, capsys):
    folder, _ = photos
    first = sorted((folder / "7").glob("*.jpg"))[0]
    assert main(["classify", str(first), "--mode", "digit", "--top", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"{first}  (digits v1, ")
    ranked = lines[1:4]
    assert len(ranked) == 3
    labels = [line.split()[0] for line in ranked]
    percents = [float(line.split("(")[1].rstrip("%)")) for line in ranked]
    assert labels[0] == "7"
    assert percents == sorted(percents, reverse=True)
    assert all(0 <= p <= 100 for p in percents)


def test_answers_are_handed_over_before_the_engine_closes(photos_and_a_new_model):
    """The first run of a model version converts it for LiteRT in the background, and the process waits
    for that at exit: `photobot classify` shows the answers through `on_answers`, before that wait."""
    folder, _ = photos_and_a_new_model
    files = sorted((folder / "7").glob("*.jpg"))[:2]
    handed: list[list] = []
    answers = asyncio.run(classify_files(files, "digit", Settings.from_env(), on_answers=handed.append))
    assert handed == [answers]
    assert [answer.model for answer in answers] == ["digits", "digits"]


def test_classify_json_has_one_object_per_photo_and_reports_bad_files(photos, tmp_path, capsys):
    folder, _ = photos
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff not a jpeg")
    files = [str(p) for p in sorted((folder / "7").glob("*.jpg"))[:2]] + [str(broken)]
    assert main(["classify", *files, "--mode", "digit", "--json", "--top", "2"]) == 1
    objects = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [o["file"] for o in objects] == files
    for answer in objects[:2]:
        assert set(answer) >= {"file", "model", "label", "confidence", "status", "top"}
        assert answer["model"] == "digits"
        assert answer["status"] in ("ok", "unsure", "not_recognized")
        assert len(answer["top"]) == 2 and answer["top"][0][1] >= answer["top"][1][1]
    assert objects[2]["kind"] == "UnsupportedImage"


def test_a_missing_photo_is_that_photos_error_and_the_others_are_classified(photos, tmp_path, capsys):
    folder, _ = photos
    first, second = (str(p) for p in sorted((folder / "7").glob("*.jpg"))[:2])
    missing = str(tmp_path / "nonexistent.jpg")

    assert main(["classify", first, missing, second, "--mode", "digit", "--json"]) == 1
    objects = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [o["file"] for o in objects] == [first, missing, second]
    assert objects[1] == {"file": missing, "error": "No such file or directory", "kind": "FileNotFoundError"}
    assert objects[0]["model"] == objects[2]["model"] == "digits"

    assert main(["classify", missing, first, "--mode", "digit"]) == 1
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [f"{missing}: No such file or directory"]
    assert captured.out.startswith(f"{first}  (digits v1, ")


def test_evaluate_report_to_a_file_is_one_line(photos, tmp_path, capsys):
    folder, _ = photos
    a_file = tmp_path / "some_file.png"
    a_file.write_bytes(_blank_page())
    assert main(["evaluate", "--model", "digits", "--images", str(folder), "--report", str(a_file)]) == 1
    assert capsys.readouterr().err == f"photobot evaluate: {a_file}: File exists\n"


def test_evaluate_images_ends_with_the_design_json(photos, capsys):
    folder, labels = photos
    assert main(["evaluate", "--model", "digits", "--images", str(folder), "--json"]) == 0
    report = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert set(report) == {
        "model",
        "version",
        "n",
        "accuracy",
        "unsure",
        "not_recognized",
        "ece",
        "per_class",
    }
    assert 0.0 <= report["ece"] < 0.25
    assert report["model"] == "digits" and report["version"] == 1
    assert report["n"] == len(labels) + 1
    assert report["accuracy"] >= 0.75
    assert report["per_class"]["none"] == 1.0
    assert report["not_recognized"] >= 1
    assert set(report["per_class"]) == {str(d) for d in set(labels.tolist())} | {"none"}


def test_evaluate_counts_an_unreadable_photo_apart(photos, tmp_path, capsys):
    folder, labels = photos
    damaged = tmp_path / "damaged"
    shutil.copytree(folder, damaged)
    label = str(labels[0])
    (damaged / label / "truncated.jpg").write_bytes((damaged / label / "0.jpg").read_bytes()[:200])
    assert main(["evaluate", "--model", "digits", "--images", str(damaged), "--json"]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out.splitlines()[-1])
    assert report["unreadable"] == 1 and report["n"] == len(labels) + 2
    assert "unreadable 1 (counted wrong)" in captured.out
    assert f"unreadable: {damaged / label / 'truncated.jpg'}" in captured.err


def test_evaluate_mnist_test_measures_the_serving_model(photos, capsys, mnist_path, monkeypatch):
    monkeypatch.setenv("PHOTOBOT_DATASETS", str(mnist_path.parent))
    assert main(["evaluate", "--model", "digits", "--mnist-test", "--json"]) == 0
    report = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert report["n"] == 10_000
    assert 0.85 <= report["accuracy"] <= 1.0  # a 4-epoch MLP on 3,000 digits
    assert len(report["per_class"]) == 10


def test_evaluate_report_writes_a_reliability_diagram_and_a_confusion_matrix(photos, tmp_path, capsys):
    from PIL import Image

    folder, _ = photos
    out = tmp_path / "report"
    assert main(["evaluate", "--model", "digits", "--images", str(folder), "--report", str(out)]) == 0
    assert "expected calibration error" in capsys.readouterr().out
    for name in ("reliability.png", "confusion.png"):
        with Image.open(out / name) as image:
            assert image.format == "PNG" and image.width > 300 and image.height > 300


def test_evaluate_mnist_test_on_a_fresh_install_seeds_the_shipped_model(
    tmp_path, monkeypatch, mnist_path, capsys
):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "fresh"))
    monkeypatch.setenv("PHOTOBOT_DATASETS", str(mnist_path.parent))
    assert main(["evaluate", "--model", "digits", "--mnist-test", "--json"]) == 0
    report = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert report["version"] == 1 and report["n"] == 10_000
    assert report["accuracy"] >= 0.99  # the shipped CNN
    assert report["ece"] < 0.02


def test_evaluate_images_on_a_fresh_install_seeds_the_shipped_model(photos, tmp_path, monkeypatch, capsys):
    folder, labels = photos
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "fresh"))
    assert main(["evaluate", "--model", "digits", "--images", str(folder), "--json"]) == 0
    report = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert report["version"] == 1 and report["n"] == len(labels) + 1
    assert report["accuracy"] >= 0.9  # the shipped CNN on photos of MNIST test digits
