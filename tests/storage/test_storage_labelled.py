"""The labelled data set: majority labels, ties, blocked users, a split that never moves, and readers
in other processes while the bot writes."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap

from storage import cap_per_contributor, read_labelled_set, split_of
from storage.images import is_sha256_hex
from storage.labelled import image_path
from tests.support.storage import execute, label_photo, open_store, png, predict


async def contribute(store, *, user_id: int, message_id: int, image: bytes, label: str, model="digits"):
    photo = await store.add_photo(image)
    await store.record_contribution(
        user_id=user_id,
        chat_id=user_id,
        message_id=message_id,
        photo_sha256=photo.sha256,
        model=model,
        label=label,
    )
    return photo.sha256


async def test_confirmed_corrected_and_captioned_photos_are_labelled(tmp_path, database):
    store = await open_store(tmp_path, database)
    try:
        await label_photo(store, user_id=1, message_id=1, image=png(1), true_label="7")  # confirmed
        await label_photo(store, user_id=1, message_id=2, image=png(2), true_label="2")  # corrected
        await contribute(store, user_id=1, message_id=3, image=png(3), label="5")  # caption
        await predict(store, user_id=1, message_id=4, image=png(4))  # no answer: not labelled
        await contribute(store, user_id=1, message_id=5, image=png(5), label="roses", model="flowers")
        labelled = await store.labelled_set("digits")
    finally:
        await store.close()
    assert sorted(e.label for e in labelled.examples) == ["2", "5", "7"]
    assert labelled.label_counts() == {"2": 1, "5": 1, "7": 1}
    assert all(e.path.read_bytes() in (png(1), png(2), png(3)) for e in labelled.examples)
    assert all(e.contributors == (1,) and e.votes == 1 and e.dissent == 0 for e in labelled.examples)


async def test_the_majority_label_wins_and_ties_are_left_out(tmp_path, database):
    store = await open_store(tmp_path, database)
    try:
        disputed, tied = png(10), png(11)
        for user_id, label in [(1, "3"), (2, "3"), (3, "8")]:
            await label_photo(store, user_id=user_id, message_id=1, image=disputed, true_label=label)
        await label_photo(store, user_id=1, message_id=2, image=tied, true_label="1")
        await contribute(store, user_id=2, message_id=2, image=tied, label="4")
        labelled = await store.labelled_set("digits")
    finally:
        await store.close()
    assert [(e.label, e.votes, e.dissent, e.contributors) for e in labelled.examples] == [("3", 2, 1, (1, 2))]
    assert labelled.ties == 1


async def test_one_person_counts_once_per_photo_with_their_latest_word(tmp_path, database):
    store = await open_store(tmp_path, database)
    try:
        image = png(20)
        for message_id in range(5):  # the same photo sent five times, each time "labelled" 9
            await label_photo(store, user_id=1, message_id=message_id, image=image, true_label="9")
        await label_photo(store, user_id=2, message_id=1, image=image, true_label="4")
        await label_photo(store, user_id=3, message_id=1, image=image, true_label="4")
        await contribute(store, user_id=3, message_id=2, image=image, label="1")  # 3 changes their mind
        labelled = await store.labelled_set("digits")
    finally:
        await store.close()
    assert labelled.examples == () and labelled.ties == 1  # 9 vs 4 vs 1: one person each


async def test_blocked_users_labels_are_left_out_until_unblocked(tmp_path, database):
    store = await open_store(tmp_path, database)
    try:
        await label_photo(store, user_id=1, message_id=1, image=png(1), true_label="1")
        await label_photo(store, user_id=66, message_id=1, image=png(2), true_label="2")
        await label_photo(store, user_id=66, message_id=2, image=png(1), true_label="6")
        await store.set_blocked(66, True)
        blocked = await store.labelled_set("digits")
        await store.set_blocked(66, False)
        unblocked = await store.labelled_set("digits")
    finally:
        await store.close()
    assert [(e.label, e.votes) for e in blocked.examples] == [("1", 1)]
    assert blocked.blocked_votes == 2 and blocked.ties == 0
    assert sorted(e.label for e in unblocked.examples) == ["2"]  # png(1) is now a 1-vs-6 tie
    assert unblocked.ties == 1


async def test_the_split_is_stable_as_the_data_grows(tmp_path, database):
    store = await open_store(tmp_path, database)
    try:
        await asyncio.gather(
            *(
                label_photo(store, user_id=1, message_id=n, image=png(n), true_label=str(n % 10))
                for n in range(40)
            )
        )
        before = {e.sha256: e.split for e in (await store.labelled_set("digits")).examples}
        await asyncio.gather(
            *(
                label_photo(store, user_id=2, message_id=n, image=png(n), true_label=str(n % 10))
                for n in range(40, 200)
            )
        )
        after = await store.labelled_set("digits")
    finally:
        await store.close()
    grown = {e.sha256: e.split for e in after.examples}
    assert len(before) == 40 and len(grown) == 200
    assert {sha: grown[sha] for sha in before} == before
    assert all(split == split_of(sha) for sha, split in grown.items())
    assert 20 <= len(after.validation) <= 60 and len(after.train) + len(after.validation) == 200
    assert set(e.sha256 for e in after.validation).isdisjoint(e.sha256 for e in after.train)


def test_split_of_depends_only_on_the_hash_and_the_percentage():
    sha = "00000005" + "0" * 56
    assert split_of(sha, 20) == "validation" and split_of(sha, 5) == "train"
    assert split_of("ffffffff" + "0" * 56, 20) == split_of("ffffffff" + "1" * 56, 20)  # 4294967295 % 100 = 95


async def test_new_since_counts_photos_labelled_after_a_moment(tmp_path, database):
    store = await open_store(tmp_path, database)
    try:
        await label_photo(store, user_id=1, message_id=1, image=png(1), true_label="1")
        promoted = await store.record_model_event("digits", "promote", from_version=1, to_version=2)
        moment = (await store.model_events("digits"))[0].created_at
        await label_photo(store, user_id=1, message_id=2, image=png(2), true_label="2")
        await label_photo(store, user_id=2, message_id=1, image=png(1), true_label="1")  # old photo, agreed
        labelled = await store.labelled_set("digits")
    finally:
        await store.close()
    assert promoted > 0
    assert [e.label for e in labelled.new_since(moment)] == ["2"]


async def test_a_cap_per_contributor_keeps_each_persons_earliest(tmp_path, database):
    store = await open_store(tmp_path, database)
    try:
        for n in range(6):
            await label_photo(store, user_id=1, message_id=n, image=png(n), true_label="1")
        for n in range(6, 8):
            await label_photo(store, user_id=2, message_id=n, image=png(n), true_label="2")
        labelled = await store.labelled_set("digits")
    finally:
        await store.close()
    kept, dropped = cap_per_contributor(labelled.examples, 3)
    assert dropped == {1: 3}
    assert labelled.contributor_counts() == {1: 6, 2: 2}
    ones = sorted((e for e in labelled.examples if e.contributor == 1), key=lambda e: e.labelled_at)
    assert {e.sha256 for e in kept} == {e.sha256 for e in ones[:3]} | {
        e.sha256 for e in labelled.examples if e.contributor == 2
    }


READER = textwrap.dedent(
    """
    import json, os, sys
    from storage import read_labelled_set
    database, images, stop = sys.argv[1], sys.argv[2], sys.argv[3]
    reads, sizes, problems = 0, [], []
    print("ready", flush=True)
    while not os.path.exists(stop):
        labelled = read_labelled_set(database, images, "digits")
        sizes.append(len(labelled.examples))
        problems += [e.sha256 for e in labelled.examples if not e.path.is_file()]
        reads += 1
    print(json.dumps({"reads": reads, "sizes": sizes, "problems": problems}))
    """
)

WRITER = textwrap.dedent(
    """
    import asyncio, sys
    from storage import Store
    async def main(database, images, count):
        store = await Store.open(database, images)
        print("ready", flush=True)
        for n in range(count):
            photo = await store.add_photo(b"other process %d" % n)
            prediction = await store.record_prediction(
                user_id=500, chat_id=500, message_id=n, photo_sha256=photo.sha256, model="digits",
                version=1, label="7", confidence=0.9, probabilities=[["7", 0.9]], status="ok")
            await store.record_feedback(prediction, user_id=500, verdict="correct")
        await store.close()
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
    """
)


async def test_other_processes_read_and_write_while_the_bot_writes(tmp_path, database):
    images = tmp_path / "images"
    store = await open_store(tmp_path, database)
    reader = subprocess.Popen(
        [sys.executable, "-c", READER, str(database), str(images), str(tmp_path / "stop")],
        stdout=subprocess.PIPE,
        text=True,
    )
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(database), str(images), "150"], stdout=subprocess.PIPE, text=True
    )
    assert reader.stdout.readline().strip() == "ready" and writer.stdout.readline().strip() == "ready"
    try:

        async def user(task: int) -> None:
            for n in range(30):
                await label_photo(
                    store, user_id=task + 1, message_id=n, image=png(task * 1000 + n), true_label=str(n % 10)
                )

        await asyncio.gather(*(user(task) for task in range(10)))
        await asyncio.to_thread(writer.wait, 60)
    finally:
        await store.close()
        (tmp_path / "stop").touch()
    reader_out, _ = await asyncio.to_thread(reader.communicate, timeout=60)
    await asyncio.to_thread(writer.communicate, timeout=60)
    assert writer.returncode == 0 and reader.returncode == 0
    seen = json.loads(reader_out.splitlines()[-1])
    assert seen["reads"] >= 3 and seen["problems"] == []
    assert seen["sizes"] == sorted(seen["sizes"])  # snapshots only grow
    assert len(set(seen["sizes"])) > 1  # it read while the set was growing
    final = read_labelled_set(database, images, "digits")
    assert len(final.examples) == 300 + 150
    assert final.contributor_counts() == {**{task + 1: 30 for task in range(10)}, 500: 150}


async def _tampered_rows(tmp_path, database) -> tuple[str, list[str]]:
    """One honest labelled photo, then rows a tampered database could hold, each with a label."""
    store = await open_store(tmp_path, database)
    try:
        honest = await contribute(store, user_id=1, message_id=1, image=png(1), label="1")
        moved = await contribute(store, user_id=1, message_id=2, image=png(2), label="2")
        linked = await contribute(store, user_id=1, message_id=3, image=png(3), label="3")
    finally:
        await store.close()
    secret = tmp_path / "secret.txt"
    secret.write_text("not an image of the store")
    (tmp_path / "images" / linked[:2] / linked).unlink()
    (tmp_path / "images" / linked[:2] / linked).symlink_to(secret)  # a planted symlink out
    traversal = ("../" * 22)[:62] + "ab"  # 64 characters, as the old length check wanted
    shouting = moved.upper()  # hex, but not lowercase
    execute(database, "UPDATE photos SET path = '../secret.txt' WHERE sha256 = ?", (moved,))
    for n, sha256 in enumerate((traversal, shouting), start=10):
        execute(
            database,
            "INSERT INTO photos (sha256, size, path, first_seen) VALUES (?, 1, ?, 0)",
            (sha256, "../secret.txt"),
        )
        execute(
            database,
            """INSERT INTO contributions (user_id, chat_id, message_id, photo_sha256, model, label,
               created_at) VALUES (1, 1, ?, ?, 'digits', '5', 0)""",
            (n, sha256),
        )
    return honest, [moved, linked, traversal, shouting]


async def test_rows_whose_hash_or_path_would_leave_the_image_folder_are_refused_and_counted(
    tmp_path, database
):
    honest, tampered = await _tampered_rows(tmp_path, database)
    labelled = read_labelled_set(database, tmp_path / "images", "digits")
    assert [e.sha256 for e in labelled.examples] == [honest]
    assert labelled.refused_paths == len(tampered) == 4
    images = (tmp_path / "images").resolve()
    assert labelled.examples[0].path == images / honest[:2] / honest
    assert labelled.missing_images == 0 and labelled.ties == 0


def test_image_paths_are_built_only_from_lowercase_hex_hashes(tmp_path):
    sha = "0123456789abcdef" * 4
    assert image_path(tmp_path, sha) == tmp_path.resolve() / "01" / sha
    assert image_path(tmp_path, sha, f"01/{sha}") == tmp_path.resolve() / "01" / sha
    assert image_path(tmp_path, sha, "../../etc/passwd") is None  # the row's path is not believed
    assert image_path(tmp_path, sha.upper()) is None
    assert image_path(tmp_path, sha[:-1]) is None and image_path(tmp_path, sha + "0") is None
    assert image_path(tmp_path, ("../" * 22)[:64]) is None
    assert image_path(tmp_path, sha[:-1] + "\n") is None
    assert not is_sha256_hex(sha + "\n") and is_sha256_hex(sha)
