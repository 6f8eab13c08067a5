"""The retraining job itself (no bot): what it uses, what it refuses, and how it fails.

Real tiny digit model, real SQLite file and image store, real MNIST subsets, real job processes.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from inference.model_store import ModelStore
from photobot.wiring import retrain_settings
from storage import Store, SyncStore
from tests.support.retrain import ONE_PERSON, ONE_PERSON_ENV, digit_photos, label_photos
from training.chat_examples import MAX_CHAT_WEIGHT
from training.retrain import RetrainError, RetrainOptions, chat_weight, run_retrain

SMALL = {"limit": 2000, "test_limit": 1000, "epochs": 1}


@pytest.fixture
def settings(digit_settings):
    return digit_settings(retrain_min_new_labels=10, **ONE_PERSON)


def test_chat_photos_weigh_a_bounded_share_and_one_photo_never_counts_many_times() -> None:
    # Many chat examples: together they are the share asked for (15%) of the training weight.
    many = chat_weight(20_000, 5_000, 0.15)
    assert 5_000 * many / (5_000 * many + 20_000) == pytest.approx(0.15)
    # A few: each weighs at most MAX_CHAT_WEIGHT base examples (oversampling showed 26 photos 136x an
    # epoch, so one wrong label outweighed what the base data says about the same pixels).
    assert chat_weight(20_000, 26, 0.15) == MAX_CHAT_WEIGHT == 5.0
    assert chat_weight(60_000, 1, 0.5) == 5.0
    assert chat_weight(30_000, 0, 0.15) == 0.0
    assert chat_weight(100, 80, 0.15) == pytest.approx(0.15 / 0.85 * 100 / 80)  # less than a base example


@pytest.mark.slow  # a real retrain: fits a model
def test_the_report_and_the_candidate_say_what_the_chat_photos_weighed(settings, mnist_path: Path) -> None:
    label_photos(settings, digit_photos(mnist_path, 12, seed=7), user_id=41)
    outcome = run_retrain(retrain_settings(settings), RetrainOptions(model="digits", force=True, **SMALL))
    data = ModelStore(settings.models_dir).get("digits", outcome.candidate_version).meta["data"]
    assert data["chat_weight"] == 5.0 and data["mnist_train"] == 2000
    line = next(line for line in outcome.report.text.splitlines() if "chat examples, weight" in line)
    n = int(line.split("trained on ")[1].split(" ")[0])
    assert 1 <= n <= 12
    assert line == (
        f"  trained on {n} chat examples, weight 5.0 each "
        f"({5 * n / (5 * n + 2000):.1%} of the training weight, beside 2000 base examples of weight 1)"
    )


@pytest.mark.slow  # a real retrain: fits a model
def test_too_few_new_labels_explain_and_change_nothing_unless_forced(settings, mnist_path: Path) -> None:
    label_photos(settings, digit_photos(mnist_path, 6, seed=3), user_id=21)
    outcome = run_retrain(retrain_settings(settings), RetrainOptions(model="digits", **SMALL))
    assert (outcome.status, outcome.decision, outcome.candidate_version) == ("succeeded", "skipped", None)
    assert outcome.reason.startswith(  # the shipped version was never promoted from chat photos
        "only 6 photos have been labelled in chat yet; retraining needs at least 10."
    )
    assert [v.version for v in ModelStore(settings.models_dir).versions("digits")] == [1]
    forced = run_retrain(retrain_settings(settings), RetrainOptions(model="digits", force=True, **SMALL))
    assert forced.decision in ("promote", "reject") and forced.candidate_version == 2
    with SyncStore(settings.database_path, settings.images_dir) as store:
        jobs = store.recent_retrain_jobs("digits")
    assert [(j.id, j.status, j.decision) for j in jobs][1] == (1, "succeeded", "skipped")
    assert jobs[0].metrics["report_dir"].endswith("digits-job2")
    again = run_retrain(retrain_settings(settings), RetrainOptions(model="digits", **SMALL))
    promoted = forced.decision == "promote"  # the labels after a promotion are the new ones
    found = "no photos have been labelled in chat since the last promotion" if promoted else "only 6 photos"
    assert again.reason.startswith(found), again.reason


@pytest.mark.slow  # a real retrain: fits a model
def test_the_per_user_cap_and_blocked_users_limit_what_one_person_can_teach(
    settings, mnist_path: Path
) -> None:
    settings = replace(settings, retrain_max_labels_per_user=8)
    label_photos(settings, digit_photos(mnist_path, 20, seed=4), user_id=31)
    label_photos(settings, digit_photos(mnist_path, 5, seed=5, offset=50), user_id=32, first_message=100)
    label_photos(settings, digit_photos(mnist_path, 6, seed=6, offset=80), user_id=33, first_message=200)

    async def block() -> None:
        store = await Store.open(settings.database_path, settings.images_dir)
        await store.set_blocked(33, True)
        await store.close()

    asyncio.run(block())
    outcome = run_retrain(retrain_settings(settings), RetrainOptions(model="digits", force=True, **SMALL))
    text = outcome.report.text
    # Photos per person, most first (31's, then 32's): the report names nobody.
    used = [int(n) for n in text.split("  from 2 people, most first: ")[1].split("\n")[0].split(", ")]
    assert 6 <= used[0] <= 8 and 3 <= used[1] <= 5  # an unreadable photo is also left out, counted
    assert "  left out by the per-user cap: 12 from 1 person" in text
    assert "  left out, votes of blocked users: 6" in text


def test_a_job_that_crashes_is_failed_with_its_error_and_serving_is_untouched(settings) -> None:
    models = ModelStore(settings.models_dir)
    with models.new_version("digits", {**models.active("digits").meta}) as staged:
        (staged.path / "model.keras").write_bytes(b"not a keras file")
    models.promote("digits", staged.version)
    with pytest.raises(Exception) as raised:
        run_retrain(retrain_settings(settings), RetrainOptions(model="digits", force=True, **SMALL))
    assert not isinstance(raised.value, RetrainError)
    with SyncStore(settings.database_path, settings.images_dir) as store:
        job = store.recent_retrain_jobs("digits")[0]
        assert store.active_retrain_job() is None
    assert job.status == "failed" and type(raised.value).__name__ in job.error
    assert models.active_version("digits") == 2 and len(models.versions("digits")) == 2


def test_one_job_at_a_time_and_a_job_id_must_match(settings) -> None:
    with SyncStore(settings.database_path, settings.images_dir) as store:
        queued = store.create_retrain_job("flowers")
    with pytest.raises(RetrainError, match=r"retrain job 1 \(flowers\) is queued; one job runs at a time"):
        run_retrain(retrain_settings(settings), RetrainOptions(model="digits"))
    with pytest.raises(RetrainError, match="retrain job 1 is for flowers, not digits"):
        run_retrain(retrain_settings(settings), RetrainOptions(model="digits", job_id=queued.id))


@pytest.mark.slow  # a real retrain: fits a model
def test_sigterm_midway_fails_the_job_and_leaves_no_version_behind(settings, mnist_path: Path) -> None:
    label_photos(settings, digit_photos(mnist_path, 12, seed=7), user_id=41)
    env = {
        **os.environ,
        "DATA_DIR": str(settings.data_dir),
        "PHOTOBOT_DATASETS": str(mnist_path.parent),
        "RETRAIN_MIN_NEW_LABELS": "10",
        **ONE_PERSON_ENV,
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    command = [sys.executable, "-m", "photobot", "retrain", "--model", "digits", "--limit", "10000"]
    process = subprocess.Popen(
        [*command, "--test-limit", "500", "--epochs", "50"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        with SyncStore(settings.database_path, settings.images_dir) as store:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                job = store.get_retrain_job(1)
                if job is not None and job.stage == "training":
                    break
                time.sleep(0.1)
            assert job is not None and job.stage == "training", (
                process.stdout.read() if process.poll() else job
            )
            process.send_signal(signal.SIGTERM)
            output = process.communicate(timeout=60)[0].decode()
            job = store.get_retrain_job(1)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode != 0
    assert (job.status, job.error) == ("failed", "stopped by signal SIGTERM"), output
    models = ModelStore(settings.models_dir)
    assert models.active_version("digits") == 1 and [v.version for v in models.versions("digits")] == [1]
    assert not [p for p in (settings.models_dir / "digits").iterdir() if p.name.startswith(".staging")]
