"""The retraining report: its text says the numbers and why; its pictures are real PNGs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from training import gate
from training.report import Mistake, ReportData, confusion_matrix, report_text, write_report


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
        chat_repeats=66,
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
    assert "  each shown 66× per epoch beside 30000 base examples" in text
    assert "  per label: 2 30, 7 70" in text
    assert "  per contributor: 1001: 95, 1002: 5" in text
    assert "  left out by the per-user cap: 1002: 12" in text
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
