"""The Store's API against a real database — a SQLite file and a PostgreSQL server, each test on both —:
predictions, feedback, captions, users, /forget, jobs."""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from inference.prediction import Prediction
from storage import NOT_A_DIGIT, JobAlreadyActive, NotPredictionOwner, PredictionNotFound, Store, SyncStore
from tests.support.storage import execute, label_photo, open_store, png, predict, rows


@pytest.fixture
async def store(tmp_path, database):
    opened = await open_store(tmp_path, database)
    yield opened
    await opened.close()


async def test_the_same_photo_sent_twice_is_stored_once(store, tmp_path, database):
    first = await store.add_photo(png(1), width=8, height=8, format="png")
    second = await store.add_photo(png(1))
    other = await store.add_photo(png(2))
    assert first.sha256 == second.sha256 != other.sha256
    assert rows(database, "SELECT count(*), sum(size) FROM photos") == [(2, len(png(1)) + len(png(2)))]
    assert store.images.read(first.sha256) == png(1)
    assert sorted(p.name for p in (tmp_path / "images").glob("[0-9a-f][0-9a-f]/*")) == sorted(
        [first.sha256, other.sha256]
    )
    stored = await store.get_photo(first.sha256)
    assert (stored.width, stored.height, stored.format) == (8, 8, "png")  # the second add kept them


async def test_a_prediction_is_stored_with_everything_the_bot_knows(store):
    photo = await store.add_photo(png(3), format="png")
    prediction_id = await store.record_prediction(
        user_id=42,
        chat_id=-100,
        message_id=7,
        photo_sha256=photo.sha256,
        model="flowers",
        version=3,
        label="tulips",
        confidence=0.61,
        probabilities={"tulips": 0.61, "roses": 0.3},
        status="unsure",
        latency_ms=48.0,
        mode="flower",
        reason="close call",
        language="ru",
    )
    record = await store.get_prediction(prediction_id)
    assert (record.user_id, record.chat_id, record.message_id, record.photo_sha256) == (
        42,
        -100,
        7,
        photo.sha256,
    )
    assert (record.model, record.version, record.label, record.status) == ("flowers", 3, "tulips", "unsure")
    assert record.probabilities == [("tulips", 0.61), ("roses", 0.3)]
    assert (record.confidence, record.latency_ms, record.mode, record.reason) == (
        0.61,
        48.0,
        "flower",
        "close call",
    )
    user = await store.get_user(42)
    assert user.language == "ru" and not user.blocked


async def test_a_photo_and_the_engines_answer_are_recorded_in_one_go(store, database):
    answer = Prediction(
        model="digits", version=2, label="4", confidence=0.8, status="unsure", top=(("4", 0.8), ("9", 0.15)),
        reason="close to a 9",
    )  # fmt: skip
    recorded = await store.record_photo_prediction(
        png(4), prediction=answer, user_id=5, chat_id=5, message_id=1, width=8, height=8, format="png",
        latency_ms=9.0, mode="digit", language="en",
    )  # fmt: skip
    again = await store.record_photo_prediction(png(4), prediction=answer, user_id=5, chat_id=5, message_id=1)
    assert again.prediction_id == recorded.prediction_id
    assert recorded.photo == await store.get_photo(recorded.photo.sha256)
    assert store.images.read(recorded.photo.sha256) == png(4)
    record = await store.get_prediction(recorded.prediction_id)
    assert (record.photo_sha256, record.model, record.version, record.label) == (
        recorded.photo.sha256, "digits", 2, "4",
    )  # fmt: skip
    assert (record.status, record.reason, record.mode, record.latency_ms) == (
        "unsure",
        "close to a 9",
        "digit",
        9.0,
    )
    assert record.probabilities == [("4", 0.8), ("9", 0.15)]
    assert rows(database, "SELECT count(*) FROM predictions") == [(1,)]


async def test_a_file_saved_ahead_gets_its_row_or_is_discarded(store, database):
    """The bot writes a photo's file while the models look at it, then records the row, or discards
    the file when the photo gets no answer."""
    answer = Prediction(model="digits", version=1, label="3", confidence=0.9, status="ok")
    saved = await store.save_image(png(20))
    assert saved.created and store.images.read(saved.sha256) == png(20)
    recorded = await store.record_photo_prediction(
        png(20), prediction=answer, user_id=6, chat_id=6, message_id=1, image=saved
    )
    assert recorded.photo.sha256 == saved.sha256
    assert rows(database, "SELECT count(*) FROM photos") == [(1,)]

    unanswered = await store.save_image(png(21))
    await store.discard_image(unanswered)
    assert not store.images.exists(unanswered.sha256)
    assert rows(database, "SELECT count(*) FROM photos") == [(1,)]

    # The same bytes as a recorded photo: the file was already there, and discarding keeps it.
    again = await store.save_image(png(20))
    assert not again.created
    await store.discard_image(again)
    assert store.images.read(saved.sha256) == png(20)


async def test_a_file_removed_before_its_row_commits_is_cached_again_from_the_database(store, database):
    """A concurrent discard (or /forget) of the same bytes between saving and recording: the bytes go
    into the database with the row, and the cache is written again from there when the photo is read."""
    answer = Prediction(model="digits", version=1, label="3", confidence=0.9, status="ok")
    saved = await store.save_image(png(22))
    store.images.delete(saved.sha256)
    recorded = await store.record_photo_prediction(
        png(22), prediction=answer, user_id=7, chat_id=7, message_id=1, image=saved
    )
    sha256 = recorded.photo.sha256
    assert rows(database, "SELECT data FROM photo_bytes WHERE sha256 = ?", (sha256,)) == [(png(22),)]
    assert await store.read_photo(sha256) == png(22)
    assert store.images.read(sha256) == png(22)


async def test_a_redelivered_update_records_no_second_prediction(store, database):
    first = await predict(store, user_id=1, message_id=5, image=png(1))
    again = await predict(store, user_id=1, message_id=5, image=png(1))
    assert again == first
    assert rows(database, "SELECT count(*) FROM predictions") == [(1,)]


async def test_bad_status_or_mode_is_refused(store):
    photo = await store.add_photo(png(1))
    with pytest.raises(ValueError, match="status"):
        await store.record_prediction(
            user_id=1, chat_id=1, message_id=1, photo_sha256=photo.sha256, model="digits", version=1,
            label="1", confidence=1.0, probabilities=[], status="great",
        )  # fmt: skip
    for bad in ("Cats!", "", "cats and dogs", "a" * 21, "1st"):
        with pytest.raises(ValueError, match="mode"):
            await store.set_chat_mode(1, bad)
    assert await store.chat_mode(1) == "auto"


async def test_feedback_is_stored_once_and_a_repeated_tap_gets_the_first_answer(store, database):
    prediction_id = await predict(store, user_id=1, message_id=1, image=png(1), label="7")
    first = await store.record_feedback(prediction_id, user_id=1, verdict="wrong", true_label="1")
    again = await store.record_feedback(prediction_id, user_id=1, verdict="wrong", true_label="1")
    other = await store.record_feedback(prediction_id, user_id=1, verdict="correct")
    assert first.created and not again.created and not other.created
    assert again.feedback == first.feedback == other.feedback
    assert (first.feedback.verdict, first.feedback.true_label, first.feedback.model) == (
        "wrong",
        "1",
        "digits",
    )
    assert rows(database, "SELECT count(*) FROM feedback") == [(1,)]


async def test_concurrent_taps_on_one_prediction_store_one_feedback(store, database):
    prediction_id = await predict(store, user_id=1, message_id=1, image=png(1))
    results = await asyncio.gather(
        *(store.record_feedback(prediction_id, user_id=1, verdict="correct") for _ in range(20))
    )
    assert sum(result.created for result in results) == 1
    assert rows(database, "SELECT count(*) FROM feedback") == [(1,)]


async def test_correct_means_the_predicted_label(store):
    prediction_id = await predict(
        store, user_id=1, message_id=1, image=png(1), model="flowers", label="roses"
    )
    result = await store.record_feedback(prediction_id, user_id=1, verdict="correct")
    assert (result.feedback.true_label, result.feedback.model) == ("roses", "flowers")


async def test_not_a_digit_is_a_true_label(store):
    prediction_id = await predict(store, user_id=1, message_id=1, image=png(1))
    result = await store.record_feedback(prediction_id, user_id=1, verdict="wrong", true_label=NOT_A_DIGIT)
    assert result.feedback.true_label == "not_a_digit"


async def test_feedback_on_an_unrecognised_photo_needs_its_model(store):
    prediction_id = await predict(
        store, user_id=1, message_id=1, image=png(1), model=None, label=None, status="not_recognized"
    )
    with pytest.raises(ValueError, match="true label"):
        await store.record_feedback(prediction_id, user_id=1, verdict="correct")
    result = await store.record_feedback(
        prediction_id, user_id=1, verdict="wrong", true_label="daisy", model="flowers"
    )
    assert (result.feedback.model, result.feedback.true_label) == ("flowers", "daisy")


async def test_only_the_sender_may_answer_for_a_photo(store, database):
    prediction_id = await predict(store, user_id=1, message_id=1, image=png(1))
    with pytest.raises(NotPredictionOwner):
        await store.record_feedback(prediction_id, user_id=2, verdict="wrong", true_label="1")
    assert rows(database, "SELECT count(*) FROM feedback") == [(0,)]
    assert (await store.record_feedback(prediction_id, user_id=1, verdict="correct")).created


async def test_feedback_for_a_missing_prediction_is_refused(store):
    with pytest.raises(PredictionNotFound):
        await store.record_feedback(12345, user_id=1, verdict="correct")


async def test_one_failing_write_does_not_undo_the_others_in_its_group_commit(store, database):
    prediction_id = await predict(store, user_id=1, message_id=1, image=png(1))
    outcomes = await asyncio.gather(
        store.record_feedback(prediction_id, user_id=2, verdict="correct"),  # forged
        store.set_chat_mode(10, "digit"),
        store.record_feedback(prediction_id, user_id=1, verdict="correct"),
        store.touch_user(11, language="en"),
        return_exceptions=True,
    )
    assert isinstance(outcomes[0], NotPredictionOwner)
    assert outcomes[2].created
    assert await store.chat_mode(10) == "digit"
    assert (await store.get_user(11)).language == "en"
    assert rows(database, "SELECT user_id FROM feedback") == [(1,)]


async def test_a_caption_is_a_labelled_contribution(store, database):
    photo = await store.add_photo(png(1))
    first = await store.record_contribution(
        user_id=3, chat_id=3, message_id=9, photo_sha256=photo.sha256, model="flowers", label="roses"
    )
    again = await store.record_contribution(
        user_id=3, chat_id=3, message_id=9, photo_sha256=photo.sha256, model="flowers", label="roses"
    )
    assert first == again
    assert rows(database, "SELECT user_id, model, label FROM contributions") == [(3, "flowers", "roses")]
    assert (await store.user_stats(3)).contributions == 1


async def test_an_edited_caption_replaces_its_messages_label_and_one_edited_away_withdraws_it(
    store, database
):
    photo, other = await store.add_photo(png(1)), await store.add_photo(png(2))
    first = await store.record_contribution(
        user_id=3, chat_id=3, message_id=9, photo_sha256=photo.sha256, model="flowers", label="roses"
    )
    edited = await store.record_contribution(
        user_id=3, chat_id=3, message_id=9, photo_sha256=other.sha256, model="digits", label="7", edited=True
    )
    assert edited == first
    assert rows(database, "SELECT photo_sha256, model, label FROM contributions") == [
        (other.sha256, "digits", "7")
    ]
    assert await store.withdraw_contribution(3, 9)
    assert not await store.withdraw_contribution(3, 9)
    assert rows(database, "SELECT label FROM contributions") == []


async def test_a_catalogue_models_own_mode_is_stored(store):
    """Storage does not know the models: any mode spelled as a mode is kept (a model added to the
    catalogue brings its own, e.g. "pets")."""
    await store.set_chat_mode(3, "pets")
    await store.set_chat_mode(4, "x_2")
    assert (await store.chat_mode(3), await store.chat_mode(4)) == ("pets", "x_2")


async def test_chat_mode_defaults_to_auto_and_is_remembered(store):
    assert await store.chat_mode(77) == "auto"
    await store.set_chat_mode(77, "flower")
    await store.set_chat_mode(78, "digit")
    assert (await store.chat_mode(77), await store.chat_mode(78)) == ("flower", "digit")


async def test_blocking_and_unblocking(store):
    assert not await store.is_blocked(9)
    user = await store.set_blocked(9, True)  # an admin may block someone not seen yet
    assert user.blocked and await store.is_blocked(9)
    assert await store.blocked_users() == [9]
    await store.set_blocked(9, False)
    assert await store.blocked_users() == []


async def test_user_stats_count_photos_and_how_often_the_bot_was_right(store):
    for message_id, true_label in enumerate(["7", "7", "7", "1"]):
        await label_photo(
            store, user_id=1, message_id=message_id, image=png(message_id), true_label=true_label
        )
    await predict(store, user_id=1, message_id=99, image=png(99))  # no answer given
    await predict(store, user_id=2, message_id=1, image=png(1))
    stats = await store.user_stats(1)
    assert (stats.photos, stats.feedback, stats.correct, stats.wrong) == (5, 4, 3, 1)
    assert stats.accuracy == 0.75
    nobody = await store.user_stats(404)
    assert (nobody.photos, nobody.accuracy) == (0, None)


async def test_global_stats(store):
    await label_photo(store, user_id=1, message_id=1, image=png(1), true_label="7")
    await label_photo(store, user_id=2, message_id=1, image=png(2), true_label="3")
    await predict(
        store, user_id=2, message_id=2, image=png(1), model="flowers", label="daisy", status="unsure"
    )
    await predict(
        store, user_id=3, message_id=1, image=png(3), model=None, label=None, status="not_recognized"
    )
    await store.set_blocked(3, True)
    stats = await store.global_stats()
    assert (stats.users, stats.blocked_users, stats.active_users_24h) == (3, 1, 3)
    # Photos: each person's distinct photos (png(1) was sent by two people: two photos, as their /stats say).
    assert (stats.photos, stats.predictions, stats.predictions_24h, stats.feedback) == (4, 4, 4, 2)
    assert stats.by_status == {"not_recognized": 1, "ok": 2, "unsure": 1}
    assert set(stats.by_model) == {"digits", "flowers", "none"}
    digits = stats.by_model["digits"]
    assert (digits.predictions, digits.feedback, digits.correct, digits.accuracy) == (2, 2, 1, 0.5)
    assert stats.median_latency_ms == 12.5


async def test_forget_deletes_the_users_rows_and_only_the_photos_nobody_else_sent(store, database):
    shared, own = png(1), png(2)
    mine = await label_photo(store, user_id=1, message_id=1, image=shared, true_label="3")
    await label_photo(store, user_id=1, message_id=2, image=own, true_label="4")
    photo = await store.add_photo(own)
    await store.record_contribution(
        user_id=1, chat_id=1, message_id=3, photo_sha256=photo.sha256, model="digits", label="4"
    )
    await store.set_chat_mode(1, "digit")
    theirs = await label_photo(store, user_id=2, message_id=1, image=shared, true_label="3")

    report = await store.forget(1)

    # Two photos were theirs (as /stats counted them); the one nobody else sent loses its file too.
    assert (report.predictions, report.feedback, report.contributions, report.photos) == (2, 2, 1, 2)
    assert report.files == 1
    assert await store.get_user(1) is None
    assert await store.get_prediction(mine) is None
    assert await store.chat_mode(1) == "auto"
    for table in ("predictions", "feedback", "contributions"):
        assert rows(database, f"SELECT count(*) FROM {table} WHERE user_id = 1") == [(0,)]
    shared_sha, own_sha = (await store.add_photo(shared)).sha256, photo.sha256
    assert store.images.exists(shared_sha) and not store.images.exists(own_sha)
    assert await store.get_photo(own_sha) is None
    assert (await store.get_prediction(theirs)).user_id == 2
    assert rows(database, "SELECT count(*) FROM image_deletions") == [(0,)]
    with pytest.raises(PredictionNotFound):  # a stale button after /forget
        await store.record_feedback(mine, user_id=1, verdict="correct")


async def test_forget_keeps_a_blocked_users_block_and_nothing_else(store, database):
    await label_photo(store, user_id=5, message_id=1, image=png(11), true_label="3")
    await store.touch_user(5, language="ru")
    await store.set_blocked(5, True)
    before = time.time()

    report = await store.forget(5)

    assert report.kept_block and (report.predictions, report.photos) == (1, 1)
    user = await store.get_user(5)
    assert user.blocked and user.language is None
    assert user.first_seen == user.last_seen >= before  # the history of visits is gone
    assert await store.is_blocked(5) and await store.blocked_users() == [5]
    assert (await store.global_stats()).blocked_users == 1
    for table in ("predictions", "feedback", "contributions"):
        assert rows(database, f"SELECT count(*) FROM {table} WHERE user_id = 5") == [(0,)]
    # What they label after forgetting is still left out of training.
    photo = await store.add_photo(png(12))
    await store.record_contribution(
        user_id=5, chat_id=5, message_id=2, photo_sha256=photo.sha256, model="digits", label="4"
    )
    labelled = await store.labelled_set("digits")
    assert labelled.examples == () and labelled.blocked_votes == 1


async def test_forget_of_an_unblocked_user_keeps_no_row(store):
    await predict(store, user_id=6, message_id=1, image=png(13))
    await store.set_blocked(6, True)
    await store.set_blocked(6, False)
    report = await store.forget(6)
    assert not report.kept_block
    assert await store.get_user(6) is None and await store.blocked_users() == []


async def test_the_photos_of_an_album_are_noted_for_every_replica_and_swept_and_forgotten(store, database):
    assert await store.album_first_photo(-100123, "g1") is None
    await store.note_album_photo(-100123, "g1", 42, 7, None)
    await store.note_album_photo(-100123, "g1", 41, 8, "dog")  # the first photo, noted later
    await store.note_album_photo(-100123, "g1", 41, 8, "cat")  # the same message again: kept as it was
    assert await store.album_first_photo(-100123, "g1") == (41, "dog")
    assert await store.album_first_photo(-100123, "g2") is None
    await store.forget(8)
    assert await store.album_first_photo(-100123, "g1") == (42, None)
    execute(database, "UPDATE album_photos SET arrived_at = arrived_at - 3600")
    await store.note_album_photo(5, "g3", 1, 5, None)  # a later write sweeps albums long past
    assert rows(database, "SELECT chat_id, media_group_id FROM album_photos") == [(5, "g3")]


async def test_forget_removes_copies_before_and_after_the_rows_with_every_photo_of_the_user(
    tmp_path, database
):
    calls: list[tuple[list[str], bool]] = []
    hashes: list[str] = []

    def remove_copies(sha256s: list[str]) -> None:  # the copies this machine made, as opened with
        calls.append((list(sha256s), all(store.images.exists(sha256) for sha256 in hashes)))

    store = await Store.open(database, tmp_path / "images", remove_copies=remove_copies)
    try:
        shared, own = png(14), png(15)
        await label_photo(store, user_id=7, message_id=1, image=shared, true_label="3")
        await label_photo(store, user_id=7, message_id=2, image=own, true_label="4")
        await label_photo(store, user_id=8, message_id=1, image=shared, true_label="3")
        hashes += sorted([(await store.add_photo(shared)).sha256, (await store.add_photo(own)).sha256])
        await store.forget(7)
    finally:
        await store.close()

    # First while every photo is still stored, then once the photos nobody else sent are gone.
    assert calls == [(hashes, True), (hashes, False)]


async def test_a_forgotten_photo_sent_again_is_stored_again(store):
    await predict(store, user_id=1, message_id=1, image=png(5))
    await store.forget(1)
    prediction_id = await predict(store, user_id=2, message_id=1, image=png(5))
    record = await store.get_prediction(prediction_id)
    assert store.images.read(record.photo_sha256) == png(5)


async def test_an_interrupted_forget_removes_its_images_at_the_next_start(tmp_path, database):
    store = await open_store(tmp_path, database)
    prediction_id = await predict(store, user_id=1, message_id=1, image=png(6))
    sha = (await store.get_prediction(prediction_id)).photo_sha256
    await store.close()
    # What a crash right after forget's commit leaves: the rows gone, the file queued for deletion.
    execute(database, "DELETE FROM predictions")
    execute(database, "DELETE FROM photos")
    execute(database, "INSERT INTO image_deletions (sha256, path) VALUES (?, ?)", (sha, f"{sha[:2]}/{sha}"))
    store = await open_store(tmp_path, database)
    try:
        assert not store.images.exists(sha)
        assert rows(database, "SELECT count(*) FROM image_deletions") == [(0,)]
    finally:
        await store.close()


async def test_old_image_files_no_row_refers_to_are_removed_at_start(tmp_path, database):
    store = await open_store(tmp_path, database)
    kept = await store.add_photo(png(1))
    orphan, young = store.images.put(png(2)), store.images.put(png(3))  # a crash before their rows
    await store.close()
    for sha256 in (kept.sha256, orphan.sha256):
        os.utime(store.images.path(sha256), (time.time() - 7200, time.time() - 7200))
    store = await open_store(tmp_path, database)
    try:
        assert store.images.exists(kept.sha256) and store.images.exists(young.sha256)
        assert not store.images.exists(orphan.sha256)
    finally:
        await store.close()


async def test_one_retrain_job_at_a_time_and_its_lifecycle(store):
    job = await store.create_retrain_job("digits", requested_by=1, chat_id=1, message_id=50)
    assert (job.status, job.model, job.message_id) == ("queued", "digits", 50)
    with pytest.raises(JobAlreadyActive) as refused:
        await store.create_retrain_job("flowers", requested_by=2)
    assert refused.value.job.id == job.id
    running = await store.start_retrain_job(job.id, pid=4321)
    assert (running.status, running.pid) == ("running", 4321)
    assert (await store.active_retrain_job()).id == job.id
    progressed = await store.update_retrain_job(job.id, stage="training", progress=0.5, detail={"epoch": 2})
    assert (progressed.stage, progressed.progress, progressed.detail) == ("training", 0.5, {"epoch": 2})
    done = await store.finish_retrain_job(
        job.id, status="rejected", metrics={"base": 0.99}, candidate_version=4, decision="keep v3",
        reason="lost 0.5 points on MNIST",
    )  # fmt: skip
    assert (done.status, done.metrics, done.candidate_version, done.reason) == (
        "rejected", {"base": 0.99}, 4, "lost 0.5 points on MNIST",
    )  # fmt: skip
    assert done.finished_at is not None and not done.active
    assert await store.active_retrain_job() is None
    second = await store.create_retrain_job("flowers")
    assert [j.id for j in await store.recent_retrain_jobs()] == [second.id, job.id]
    assert [j.id for j in await store.recent_retrain_jobs("digits")] == [job.id]


async def test_a_job_whose_process_died_is_marked_failed(store):
    process = await asyncio.create_subprocess_exec("true")
    await process.wait()  # a pid that no longer runs
    job = await store.create_retrain_job("digits")
    await store.start_retrain_job(job.id, pid=process.pid)
    assert await store.fail_abandoned_jobs() == [job.id]
    failed = await store.get_retrain_job(job.id)
    assert failed.status == "failed" and "ended without finishing" in failed.error
    assert not await store.fail_retrain_job(job.id, "again")  # already finished


async def test_a_running_job_with_a_live_process_is_left_alone(store):
    import os

    job = await store.create_retrain_job("digits")
    await store.start_retrain_job(job.id, pid=os.getpid())
    assert await store.fail_abandoned_jobs() == []
    assert (await store.get_retrain_job(job.id)).status == "running"


async def test_a_job_process_reports_through_the_sync_store_while_the_bot_reads(store, tmp_path, database):
    job = await store.create_retrain_job("digits", requested_by=1)
    with SyncStore(database, tmp_path / "images") as jobs:
        jobs.start_retrain_job(job.id, pid=99)
        jobs.update_retrain_job(job.id, stage="evaluating", progress=0.9)
        assert (await store.get_retrain_job(job.id)).stage == "evaluating"
        jobs.finish_retrain_job(job.id, status="succeeded", candidate_version=5, decision="promoted")
        jobs.record_model_event("digits", "promote", from_version=4, to_version=5, job_id=job.id)
    finished = await store.get_retrain_job(job.id)
    assert (finished.status, finished.candidate_version) == ("succeeded", 5)
    events = await store.model_events("digits")
    assert [(e.action, e.from_version, e.to_version, e.job_id) for e in events] == [("promote", 4, 5, job.id)]


async def test_model_events_newest_first_and_filtered(store):
    await store.record_model_event("digits", "seed", from_version=None, to_version=1)
    await store.record_model_event("digits", "promote", from_version=1, to_version=2, reason="better")
    await store.record_model_event("flowers", "seed", from_version=None, to_version=1)
    await store.record_model_event("digits", "rollback", from_version=2, to_version=1, actor=7, reason="bad")
    events = await store.model_events("digits")
    assert [e.action for e in events] == ["rollback", "promote", "seed"]
    assert (events[0].actor, events[0].reason) == (7, "bad")
    promotions = await store.model_events("digits", action="promote")
    assert [(e.to_version, e.reason) for e in promotions] == [(2, "better")]
    assert len(await store.model_events()) == 4


async def test_writes_after_close_are_refused_and_earlier_ones_are_on_disk(tmp_path, database):
    store = await open_store(tmp_path, database)
    pending = [asyncio.ensure_future(store.touch_user(n)) for n in range(30)]
    await asyncio.sleep(0)
    await store.close()
    await asyncio.gather(*pending)
    assert rows(database, "SELECT count(*) FROM users") == [(30,)]
    with pytest.raises(Exception, match="closed"):
        await store.touch_user(99)


async def test_a_pending_number_correction_survives_a_reopen_and_goes_with_forget(tmp_path, database):
    store = await open_store(tmp_path, database)
    first = await predict(store, user_id=6, message_id=1, image=png(61), label="2026")
    second = await predict(store, user_id=6, message_id=2, image=png(62), label="15")
    await store.ask_for_number(6, first, chat_id=6, answer_message_id=10, question_message_id=11)
    await store.ask_for_number(6, second, chat_id=6, answer_message_id=20, question_message_id=21)
    await store.close()

    store = await open_store(tmp_path, database)  # a restart: the question is still open, the latest one
    pending = await store.pending_correction(6)
    assert (pending.prediction_id, pending.answer_message_id, pending.question_message_id) == (second, 20, 21)
    assert not await store.drop_pending_correction(6, first)  # not the open question: kept
    assert (await store.pending_correction(6)).prediction_id == second
    await store.forget(6)
    assert await store.pending_correction(6) is None
    assert rows(database, "SELECT count(*) FROM pending_corrections") == [(0,)]
    await store.close()


async def test_stats_and_forget_count_a_photo_sent_twice_once(store):
    await predict(store, user_id=8, message_id=1, image=png(81))
    await predict(store, user_id=8, message_id=2, image=png(81))  # the same photo again
    await label_photo(store, user_id=8, message_id=3, image=png(82), true_label="3")
    assert (await store.user_stats(8)).photos == 2
    assert (await store.global_stats()).photos == 2
    assert (await store.forget(8)).photos == 2
