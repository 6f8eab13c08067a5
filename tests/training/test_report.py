"""The retraining report: its text says the numbers and why; its pictures are real PNGs."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from PIL import Image

from training import gate
from training.report import (
    MISTAKES_FILE,
    PHOTOS_FILE,
    Mistake,
    ReportData,
    confusion_matrix,
    redact_reports,
    report_text,
    write_report,
)


def _data(tmp_path: Path) -> ReportData:
    photo = tmp_path / "photo.jpg"
    Image.new("RGB", (64, 48), (240, 230, 150)).save(photo)
    decision = gate.decide(
        gate.SetScore(gate.BASE, "MNIST test", 10_000, 0.9912, 0.9905),
        gate.SetScore(gate.CHAT, "held-out chat photos", 20, 0.35, 0.80),
        margin_points=0.3,
    )
    return ReportData(
        model="digits",
        job_id=7,
        serving_version=3,
        candidate_version=4,
        decision=decision,
        labels=[str(d) for d in range(10)],
        used_per_label={"2": 30, "7": 70},
        used_per_contributor={1001: 95, 1002: 5},
        split_counts={"train": 80, "validation": 20},
        capped={1002: 12},
        dropped={"no digit found on the photo": 3},
        base_examples=30_000,
        chat_examples=80,
        chat_weight=5.0,
        history={
            "loss": [0.4, 0.2, 0.1],
            "accuracy": [0.9, 0.95, 0.97],
            "chat_validation_accuracy": [0.5, 0.7, 0.8],
        },
        confusion={"MNIST test": confusion_matrix([0, 1, 2, 2], [0, 1, 2, 1], 10)},
        mistakes=[Mistake(photo, "2", "1", "validation"), Mistake(photo, "7", "1", "train")],
        seconds=93.4,
    )


def test_the_report_text_gives_old_and_new_accuracy_the_decision_and_the_photos_used(tmp_path: Path) -> None:
    text = report_text(_data(tmp_path))
    assert text.splitlines()[:3] == [
        "Retraining digits (job 7)",
        "PROMOTED: v4 now serves (was v3).",
        "Why: MNIST test 99.12% → 99.05% (within the 0.3 points allowed); "
        "held-out chat photos 35.0% → 80.0% (on 20 photos)",
    ]
    assert "  MNIST test (10000): 99.12% → 99.05% (-0.07 pts)" in text
    assert "  held-out chat photos (20): 35.00% → 80.00% (+45.00 pts)" in text
    assert "Chat photos used: 100 (80 train, 20 validation)" in text
    assert (
        "  trained on 80 chat examples, weight 5.0 each (1.3% of the training weight, "
        "beside 30000 base examples of weight 1)"
    ) in text
    assert "  per label: 2 30, 7 70" in text
    assert "  from 2 people, most first: 95, 5" in text
    assert "  left out by the per-user cap: 12 from 1 person" in text
    assert "1001" not in text and "1002" not in text  # sent to the admin chat: no user ids
    assert "  left out, no digit found on the photo: 3" in text
    assert "Chat photos the new model still gets wrong: 2" in text


def test_write_report_draws_the_confusion_matrix_curves_and_mistakes(tmp_path: Path) -> None:
    report = write_report(_data(tmp_path), tmp_path / "report")
    assert [p.name for p in report.images] == ["confusion.png", "curves.png", "mistakes.png"]
    for path in report.images:
        with Image.open(path) as image:
            assert image.format == "PNG" and image.width > 300 and image.height > 200
            assert np.asarray(image.convert("L")).std() > 5  # not a blank canvas
    assert (tmp_path / "report" / "report.txt").read_text(encoding="utf-8").strip() == report.text


def test_a_skipped_job_explains_itself_and_draws_nothing(tmp_path: Path) -> None:
    data = ReportData(model="flowers", job_id=2, serving_version=1, skipped="only 3 new labelled photos")
    report = write_report(data, tmp_path / "skipped")
    assert (
        report.text
        == "Retraining flowers (job 2)\nNothing done: only 3 new labelled photos\nv1 keeps serving."
    )
    assert report.images == ()


def test_confusion_matrix_counts_rows_as_truth_and_columns_as_answers() -> None:
    matrix = confusion_matrix([0, 0, 1, 2], [0, 1, 1, 0], 3)
    assert matrix.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 0]]


def _photo(path: Path, color: tuple[int, int, int]) -> Path:
    Image.new("RGB", (64, 48), color).save(path, "JPEG")
    return path


def test_the_mistakes_picture_lists_its_photos_and_leaves_out_unreadable_ones(tmp_path: Path) -> None:
    mine, theirs = _photo(tmp_path / "a.jpg", (200, 30, 30)), _photo(tmp_path / "b.jpg", (30, 30, 200))
    data = _data(tmp_path)
    data.mistakes = [
        Mistake(mine, "2", "1", "train"),
        Mistake(tmp_path / "forgotten.jpg", "3", "8", "train"),  # removed by /forget while the job ran
        Mistake(theirs, "7", "1", "validation"),
    ]
    report = write_report(data, tmp_path / "report")
    assert report.images[-1].name == MISTAKES_FILE
    listed = (tmp_path / "report" / PHOTOS_FILE).read_text(encoding="utf-8").split()
    assert listed == [hashlib.sha256(p.read_bytes()).hexdigest() for p in (mine, theirs)]


def test_no_mistakes_means_no_picture_and_no_list(tmp_path: Path) -> None:
    data = _data(tmp_path)
    data.mistakes = [Mistake(tmp_path / "gone.jpg", "2", "1", "train")]
    report = write_report(data, tmp_path / "report")
    assert [p.name for p in report.images] == ["confusion.png", "curves.png"]
    assert not (tmp_path / "report" / PHOTOS_FILE).exists()


def test_redact_reports_removes_only_the_pictures_showing_forgotten_photos(tmp_path: Path) -> None:
    mine, theirs = _photo(tmp_path / "a.jpg", (200, 30, 30)), _photo(tmp_path / "b.jpg", (30, 30, 200))
    reports = tmp_path / "reports"
    for name, photo in (("digits-job1", mine), ("digits-job2", theirs)):
        data = _data(tmp_path)
        data.mistakes = [Mistake(photo, "2", "1", "train")]
        write_report(data, reports / name)
    mine_sha = hashlib.sha256(mine.read_bytes()).hexdigest()

    assert redact_reports(reports, [mine_sha]) == 1

    assert not (reports / "digits-job1" / MISTAKES_FILE).exists()
    assert not (reports / "digits-job1" / PHOTOS_FILE).exists()
    assert (reports / "digits-job1" / "report.txt").is_file()  # the numbers stay
    assert (reports / "digits-job2" / MISTAKES_FILE).is_file()
    assert redact_reports(reports, [mine_sha]) == 0


def test_redact_reports_clears_reports_written_before_photos_and_ids_were_kept_out(tmp_path: Path) -> None:
    old = tmp_path / "reports" / "flowers-job3"
    old.mkdir(parents=True)
    _photo(old / MISTAKES_FILE, (1, 2, 3))  # no photos.txt: it may show anyone's photo
    (old / "report.txt").write_text(
        "Retraining flowers (job 3)\nChat photos used: 9\n  per contributor: 4242: 5, 77: 4\n"
        "  left out by the per-user cap: 4242: 3\nTime: 5 s\n",
        encoding="utf-8",
    )
    assert redact_reports(tmp_path / "reports", []) == 1
    assert not (old / MISTAKES_FILE).exists()
    assert (old / "report.txt").read_text(encoding="utf-8") == (
        "Retraining flowers (job 3)\nChat photos used: 9\nTime: 5 s\n"
    )


def test_many_contributors_are_counted_not_listed() -> None:
    data = ReportData(
        model="digits", job_id=1, serving_version=1, used_per_contributor={i: i for i in range(1, 13)}
    )
    text = report_text(data)
    assert "  from 12 people, most first: 12, 11, 10, 9, 8, 7, 6, 5, 4, 3 and 2 more" in text


def test_the_confusion_matrix_has_a_title_and_a_count_in_every_non_empty_cell(tmp_path: Path) -> None:
    from training.report import _confusion_figure

    data = _data(tmp_path)
    data.confusion = {"held-out chat photos": confusion_matrix([0, 0, 1, 2, 2, 2], [0, 0, 1, 2, 1, 2], 10)}
    figure = _confusion_figure(data)
    axes = figure.axes[0]
    cells = [(t.get_position(), t.get_text()) for t in axes.texts]
    counts = sorted((round(y), round(x), count) for (x, y), count in cells)
    assert counts == [(0, 0, "2"), (1, 1, "1"), (2, 1, "1"), (2, 2, "2")]  # rows are true labels
    title = f"Confusion matrix of v{data.candidate_version} on held-out chat photos"
    assert axes.get_title().startswith(title)


def test_a_first_version_is_reported_without_a_version_before_it(tmp_path: Path) -> None:
    held_out = gate.SetScore(gate.CHAT, "held-out chat photos", 12, None, 0.75)
    decision = gate.GateDecision(True, "75.0% against chance's 50.0%", (held_out,), 0.3)
    promoted = report_text(
        ReportData(model="pets", job_id=3, serving_version=None, candidate_version=1, decision=decision)
    )
    assert "PROMOTED: v1 now serves (its first version)." in promoted
    assert "Accuracy, v1:" in promoted.splitlines()
    assert "  held-out chat photos (12): 75.00%" in promoted.splitlines()
    assert "vNone" not in promoted and "no photos" not in promoted
    skipped = report_text(ReportData(model="pets", job_id=4, serving_version=None, skipped="only 4 photos"))
    assert skipped == "Retraining pets (job 4)\nNothing done: only 4 photos\nNo version serves yet."
