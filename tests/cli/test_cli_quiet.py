"""`photobot classify` as people run it: its own process, the default environment, a fresh DATA_DIR.

The shipped models are seeded by the first run (which may convert them for LiteRT and say so on
stderr); every later run prints the answer and nothing else: no logs, no TensorFlow lines, no LiteRT
delegate notice. The later runs serve the cached conversions without importing Keras at all.

The first run is tested once, from an empty DATA_DIR; the later runs start from a copy of the store it
leaves (`shipped_models`: seeded and converted once per test run, ~30 s of CPU less per module).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from inference.lite import TF_LOAD_LINE
from training.synth_photos import random_style, render_photo

NUMBER = "2026"


def classify(tmp_path: Path, *args: str, python_args: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """`python -m photobot classify ARGS` with the environment a person has: no log settings of ours."""
    env = {k: v for k, v in os.environ.items() if k not in ("LOG_LEVEL", "TF_CPP_MIN_LOG_LEVEL")}
    env["DATA_DIR"] = str(tmp_path / "data")
    return subprocess.run(
        [sys.executable, *python_args, "-m", "photobot", "classify", *args],
        env=env,
        cwd=tmp_path,  # no .env of the checkout
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def daisy(flowers_path) -> Path:
    return sorted((flowers_path / "daisy").glob("*.jpg"))[0]


@pytest.mark.process
def test_the_first_run_seeds_the_shipped_models_and_answers_as_every_later_run(tmp_path, daisy):
    """From an empty DATA_DIR: the first run seeds (and converts) both shipped models; the second one
    serves the conversions and prints nothing but the same answer."""
    first = classify(tmp_path, str(daisy))
    assert first.returncode == 0, first.stderr
    # The conversions run in processes of their own: TensorFlow's load-time lines stay out there too.
    assert [line for line in first.stderr.splitlines() if TF_LOAD_LINE.match(line.encode())] == []
    assert "oneDNN" not in first.stderr and "cuda" not in first.stderr
    second = classify(tmp_path, str(daisy))
    assert second.returncode == 0
    assert second.stderr == ""
    assert second.stdout == first.stdout  # the same answer, converted or not


@pytest.fixture(scope="module")
def seeded(tmp_path_factory, daisy, shipped_models):
    """A DATA_DIR as the first run in auto mode leaves it (both shipped models seeded and converted),
    and one run's answer for `daisy` there."""
    folder = tmp_path_factory.mktemp("quiet")
    shutil.copytree(shipped_models, folder / "data" / "models")
    first = classify(folder, str(daisy))
    assert first.returncode == 0, first.stderr
    return folder, daisy, first


@pytest.mark.process
def test_one_photo_prints_nothing_but_the_answer(seeded):
    folder, daisy, first = seeded
    second = classify(folder, str(daisy))
    assert second.returncode == 0
    assert second.stderr == ""
    assert second.stdout == first.stdout  # the same answer every run
    lines = second.stdout.splitlines()
    assert lines[0] == f"{daisy}  (flowers v1, ok)"
    assert len(lines) == 1 + 5  # the answer and the default top 5, each "  label (p%)"
    assert lines[1].startswith("  daisy (") and lines[1].endswith("%)")
    assert all(line.startswith("  ") and line.endswith("%)") for line in lines[1:])


@pytest.mark.process
def test_a_converted_model_is_served_without_importing_keras(seeded):
    folder, daisy, _ = seeded
    timed = classify(folder, str(daisy), python_args=("-X", "importtime"))
    assert timed.returncode == 0
    imported = {line.split("|")[-1].strip() for line in timed.stderr.splitlines() if "|" in line}
    assert "numpy" in imported  # the import log is there
    assert not {"keras", "tensorflow"} & imported


@pytest.mark.process
def test_verbose_keeps_the_logs(seeded):
    folder, daisy, first = seeded
    verbose = classify(folder, "--verbose", str(daisy))
    assert verbose.stdout == first.stdout
    assert "INFO inference.classifier: flowers v1 serving" in verbose.stderr


@pytest.mark.process
def test_a_refusal_is_in_words_and_its_figures_in_json(seeded, flowers_path):
    folder, _, _ = seeded
    banjo = flowers_path.parent / "other_photos" / "n02787622_banjo.jpg"
    text = classify(folder, "--mode", "flower", str(banjo))
    assert text.returncode == 0 and text.stderr == ""
    assert text.stdout.splitlines()[0].endswith("(flowers v1, not_recognized)")
    assert text.stdout.splitlines()[-1] == "  not one of the known flowers"
    assert "distance" not in text.stdout
    answer = json.loads(classify(folder, "--mode", "flower", "--json", str(banjo)).stdout)
    assert answer["status"] == "not_recognized"
    assert answer["reason"].startswith("not one of the known flowers (distance ")


def number_photo(mnist_path: Path, number: str) -> bytes:
    """A phone-like photo of `number` written with MNIST test digits."""
    with np.load(mnist_path) as data:
        x, y = data["x_test"], data["y_test"]
    chosen = [int(np.flatnonzero(y == int(d))[i]) for i, d in enumerate(number)]
    rng = np.random.default_rng(7)
    style = random_style(rng, size=(960, 720), digit_height=0.2, rotation=0.0, tilt=0.0)
    photo, label = render_photo([x[i] for i in chosen], rng, style, labels=y[chosen])
    assert label == number
    return photo


@pytest.mark.process
def test_json_for_a_number_gives_every_digits_alternatives(seeded, mnist_path):
    folder, _, _ = seeded
    photo = folder / "number.jpg"
    photo.write_bytes(number_photo(mnist_path, NUMBER))
    done = classify(folder, "--mode", "digit", "--json", "--top", "3", str(photo))
    assert done.returncode == 0 and done.stderr == ""
    answer = json.loads(done.stdout)
    assert answer["label"] == NUMBER
    assert set(answer) >= {"file", "model", "version", "label", "confidence", "status", "top", "reason"}
    digits = answer["digits"]
    assert [d["label"] for d in digits] == list(NUMBER)
    for digit in digits:
        assert len(digit["top"]) == 3
        assert digit["top"][0] == [digit["label"], digit["confidence"]]
        assert [p for _, p in digit["top"]] == sorted((p for _, p in digit["top"]), reverse=True)
    # the number's confidence is its digits' product
    assert answer["confidence"] == pytest.approx(np.prod([d["confidence"] for d in digits]), abs=1e-5)


@pytest.mark.parametrize("top", ["0", "-3", "five"])
def test_top_must_be_a_positive_whole_number(tmp_path, top):
    done = classify(tmp_path, "--top", top, "photo.jpg")
    assert done.returncode == 2
    assert done.stdout == ""
    assert "argument --top: expected a positive whole number" in done.stderr


@pytest.mark.process
def test_a_command_that_imports_tensorflow_prints_none_of_its_log_lines(seeded, mnist_path):
    folder, _, _ = seeded
    env = {k: v for k, v in os.environ.items() if k not in ("LOG_LEVEL", "TF_CPP_MIN_LOG_LEVEL")}
    env.update(DATA_DIR=str(folder / "data"), PHOTOBOT_DATASETS=str(mnist_path.parent))
    done = subprocess.run(
        [sys.executable, "-m", "photobot", "evaluate", "--model", "digits", "--mnist-test", "--quiet"],
        env=env,
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("digits (v1): accuracy ")
    assert done.stderr == ""


def evaluate(folder: Path, images: Path, datasets: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("LOG_LEVEL", "TF_CPP_MIN_LOG_LEVEL")}
    env.update(DATA_DIR=str(folder / "data"), PHOTOBOT_DATASETS=str(datasets))
    return subprocess.run(
        [sys.executable, "-m", "photobot", "evaluate", "--model", "flowers", "--images", str(images)],
        env=env,
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=600,
    )


def labelled_folder(root: Path, flowers_path: Path) -> Path:
    """daisy/ with two flower photos and cats/, a label the flower model does not know."""
    for name, sources in {
        "daisy": sorted((flowers_path / "daisy").glob("*.jpg"))[:2],
        "cats": [flowers_path.parent / "other_photos" / "n02787622_banjo.jpg"],
    }.items():
        (root / name).mkdir(parents=True)
        for source in sources:
            shutil.copy(source, root / name / source.name)
    return root


@pytest.mark.process
def test_evaluate_reports_an_unknown_label_folder_and_leaves_it_out(seeded, flowers_path, tmp_path):
    folder, _, _ = seeded
    images = labelled_folder(tmp_path / "photos", flowers_path)
    done = evaluate(folder, images, tmp_path / "no-datasets")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # not inside the training photos, no progress bar off a terminal
    lines = done.stdout.splitlines()
    assert lines[0].startswith("flowers (v1): accuracy ") and lines[0].endswith(" on 2 photos")
    assert "  left out: cats/ (1 photo): not a label flowers knows" in lines
    assert not any(line.split()[0] == "cats" and line.endswith("%") for line in lines[1:])


@pytest.mark.process
def test_evaluate_with_only_unknown_label_folders_is_an_error(seeded, flowers_path, tmp_path):
    folder, _, _ = seeded
    images = labelled_folder(tmp_path / "photos", flowers_path)
    shutil.rmtree(images / "daisy")
    done = evaluate(folder, images, tmp_path / "no-datasets")
    assert done.returncode == 1
    assert done.stderr.strip() == (
        f"photobot evaluate: {images}: no sub-folder is a label flowers knows (cats/); "
        "name each after a label, or none/ for photos it must refuse"
    )


@pytest.mark.process
def test_evaluate_on_the_training_photos_warns(seeded, flowers_path, tmp_path):
    folder, _, _ = seeded
    datasets = tmp_path / "datasets"
    images = labelled_folder(datasets / "flower_photos", flowers_path)
    done = evaluate(folder, images, datasets)
    assert done.returncode == 0, done.stderr
    assert done.stderr.startswith(f"warning: {images} is inside the training photos (")
    assert "on 2 photos" in done.stdout.splitlines()[0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["retrain", "--model", "digits", "--epochs", "0"], "argument --epochs: expected a positive"),
        (["retrain", "--model", "digits", "--limit", "-5"], "argument --limit: expected a positive"),
        (["retrain", "--model", "digits", "--chat-share", "1.5"], "argument --chat-share: expected a share"),
    ],
)
def test_nonsense_numbers_are_refused_by_the_parser(args, message, capsys):
    from photobot.cli import main

    with pytest.raises(SystemExit) as refused:
        main(args)
    assert refused.value.code == 2
    assert message in capsys.readouterr().err
