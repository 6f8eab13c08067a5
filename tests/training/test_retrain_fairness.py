"""Who may teach a retrain: no one account is most of it, copies count once, held out means other people.

Real SQLite file and image store, photos stored and labelled through the real storage API, real images
(drawn with Pillow, MNIST digits rendered as phone photos, real flower photos), the real job.
"""

from __future__ import annotations

import io
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from inference.model_store import ModelStore
from photobot.settings import Settings, SettingsError
from photobot.wiring import retrain_settings
from storage import SyncStore, split_of
from storage.labelled import share_cap, split_by_contributor
from tests.support.retrain import digit_photos, label_photos, store_labels
from training.near_duplicates import collapse_near_duplicates, fingerprint
from training.retrain import ChatRules, RetrainOptions, run_retrain, select_chat_examples

SMALL = {"limit": 2000, "test_limit": 1000, "epochs": 1}
FAIR = ChatRules(max_per_user=200, max_share=0.25, min_contributors=4)
SHARE_REASON = "over one person's share (at most 25% of the chat photos used)"


def picture(seed: int, size: tuple[int, int] = (160, 120)) -> bytes:
    """A real JPEG, different for every seed: a smooth random colour field with a random ellipse."""
    from PIL import ImageDraw

    rng = np.random.default_rng(seed)
    field = Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)).resize(size, Image.BICUBIC)
    draw = ImageDraw.Draw(field)
    x, y = int(rng.integers(0, size[0] // 2)), int(rng.integers(0, size[1] // 2))
    draw.ellipse(
        (x, y, x + size[0] // 3, y + size[1] // 3), fill=tuple(int(v) for v in rng.integers(0, 256, 3))
    )
    return _jpeg(field, 92)


def _jpeg(image: Image.Image, quality: int) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def reencoded(data: bytes, quality: int) -> bytes:
    with Image.open(io.BytesIO(data)) as image:
        return _jpeg(image, quality)


def resized(data: bytes, factor: float) -> bytes:
    with Image.open(io.BytesIO(data)) as image:
        return _jpeg(image.resize((round(image.width * factor), round(image.height * factor))), 88)


def as_png(data: bytes) -> bytes:
    with Image.open(io.BytesIO(data)) as image:
        buffer = io.BytesIO()
        image.save(buffer, "PNG")
        return buffer.getvalue()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path)


def select(settings: Settings, rules: ChatRules, model: str = "flowers"):
    with SyncStore(settings.database_path, settings.images_dir) as store:
        return select_chat_examples(store, model, rules)


def label(settings: Settings, user_id: int, seeds, name: str = "daisy") -> None:
    store_labels(settings, [(picture(seed), name) for seed in seeds], model="flowers", user_id=user_id)


# ------------------------------------------------------------------------------------- the share


def test_one_account_with_250_photos_gets_at_most_its_share_against_honest_people(settings) -> None:
    label(settings, 7, range(100_000, 100_250))  # one busy account
    for user_id in (11, 12, 13):
        label(settings, user_id, range(user_id * 100, user_id * 100 + 5))  # three honest people, 5 each
    chat = select(settings, FAIR)
    per_person = Counter(e.contributor for e in chat.examples)
    assert chat.refused is None and chat.contributors == 4
    assert per_person == {7: 5, 11: 5, 12: 5, 13: 5}
    assert per_person[7] / len(chat.examples) <= FAIR.max_share
    assert chat.capped == {7: 50} and chat.dropped[SHARE_REASON] == 195  # 200 per user, then 25%


def test_the_share_leaves_honest_people_alone_and_cuts_only_the_one_over_it(settings) -> None:
    for user_id, count in ((21, 30), (22, 12), (23, 10), (24, 10), (25, 9)):
        label(settings, user_id, range(user_id * 100, user_id * 100 + count))
    chat = select(settings, FAIR)
    per_person = Counter(e.contributor for e in chat.examples)
    assert per_person == {21: 13, 22: 12, 23: 10, 24: 10, 25: 9}  # 13 of 54: 24%
    assert max(per_person.values()) <= FAIR.max_share * len(chat.examples)
    assert chat.dropped[SHARE_REASON] == 17


def test_the_share_cap_is_the_largest_that_keeps_everyone_within_it() -> None:
    assert share_cap([250, 5, 5, 5], 0.25) == 5
    assert share_cap([250, 5, 5, 1], 0.25) == 1  # 4 photos, one each: all that is fair
    assert share_cap([250, 5, 5], 0.25) is None  # three people cannot each be at most a quarter
    assert share_cap([10, 10, 10, 10], 0.25) == 10
    assert share_cap([250, 5], 1.0) == 250
    with pytest.raises(ValueError, match="max_share"):
        share_cap([1], 0)


# ------------------------------------------------------------------------------ too few people


def test_250_against_5_is_refused_with_its_reason_even_when_forced(mnist_path: Path, digit_settings) -> None:
    settings = digit_settings(retrain_min_new_labels=10)
    label_photos(settings, digit_photos(mnist_path, 250, seed=1), user_id=71)
    label_photos(settings, digit_photos(mnist_path, 5, seed=2, offset=300), user_id=72, first_message=1000)
    for force in (False, True):
        outcome = run_retrain(
            retrain_settings(settings), RetrainOptions(model="digits", force=force, **SMALL)
        )
        assert (outcome.status, outcome.decision, outcome.candidate_version) == ("succeeded", "skipped", None)
        assert outcome.reason.startswith("the 205 usable chat photos come from 2 people; chat photos count")
        assert "at least 4 different people labelled them (RETRAIN_MIN_CONTRIBUTORS=4" in outcome.reason
        assert f"Nothing done: {outcome.reason}" in outcome.report.text
    assert [v.version for v in ModelStore(settings.models_dir).versions("digits")] == [1]


def test_too_few_people_for_the_setting_is_refused_even_when_the_share_would_allow_it(settings) -> None:
    for user_id in (31, 32, 33, 34):
        label(settings, user_id, range(user_id * 100, user_id * 100 + 3))
    chat = select(settings, replace(FAIR, min_contributors=5))
    assert chat.refused is not None and chat.contributors == 4
    assert "come from 4 people; chat photos count only once at least 5 different people" in chat.refused
    assert select(settings, FAIR).refused is None


def test_the_settings_read_the_share_and_the_minimum_and_refuse_a_share_that_cannot_work() -> None:
    settings = Settings.from_env({"RETRAIN_MAX_USER_SHARE": "0.2", "RETRAIN_MIN_CONTRIBUTORS": "6"}, None)
    assert (settings.retrain_max_user_share, settings.retrain_min_contributors) == (0.2, 6)
    assert retrain_settings(settings).rules.people_needed == 6
    assert retrain_settings(replace(settings, retrain_min_contributors=2)).rules.people_needed == 5  # 1 / 0.2
    assert (Settings().retrain_max_user_share, Settings().retrain_min_contributors) == (0.25, 4)
    for bad in ("0", "1.5", "nan"):
        with pytest.raises(SettingsError, match="RETRAIN_MAX_USER_SHARE must be a fraction"):
            Settings.from_env({"RETRAIN_MAX_USER_SHARE": bad}, None)


# --------------------------------------------------------------------------------- held out


def test_the_held_out_chat_photos_come_from_people_not_trained_on(settings) -> None:
    people = (41, 42, 43, 44, 45, 46, 47, 48)
    for user_id in people:
        label(settings, user_id, range(user_id * 100, user_id * 100 + 4))
    chat = select(settings, FAIR)
    trained = {e.contributor for e in chat.examples if e.split == "train"}
    held_out = {e.contributor for e in chat.examples if e.split == "validation"}
    assert trained and held_out and trained.isdisjoint(held_out)
    assert trained | held_out == set(people)
    # A person never changes sides as more people arrive.
    for user_id in (49, 50, 51, 52):
        label(settings, user_id, range(user_id * 100, user_id * 100 + 4))
    grown = select(settings, FAIR)
    sides = {e.contributor: e.split for e in grown.examples}
    assert {u: sides[u] for u in people} == {u: ("train" if u in trained else "validation") for u in people}


def test_two_people_are_one_on_each_side_and_one_person_keeps_the_photo_split(settings) -> None:
    label(settings, 61, range(6100, 6110))
    alone = select(settings, ChatRules(max_share=1.0, min_contributors=1))
    assert len(alone.examples) == 10 and all(e.split == split_of(e.sha256) for e in alone.examples)
    label(settings, 62, range(6200, 6210))
    two = select(settings, ChatRules(max_share=1.0, min_contributors=1)).examples
    assert split_by_contributor(two) == two
    sides = {(e.contributor, e.split) for e in two}
    assert len(sides) == 2 and {split for _, split in sides} == {"train", "validation"}


# ---------------------------------------------------------------------------- near-duplicates


def test_reencoded_and_resized_copies_collapse_to_the_first_one(settings) -> None:
    original = picture(1)
    copies = [reencoded(original, 60), reencoded(original, 75), resized(original, 0.9), as_png(original)]
    store_labels(
        settings, [(original, "daisy"), *[(c, "daisy") for c in copies]], model="flowers", user_id=81
    )
    store_labels(settings, [(resized(original, 0.5), "roses")], model="flowers", user_id=82)  # a later copy
    label(settings, 83, range(8300, 8305))  # five different pictures
    chat = select(settings, ChatRules(max_share=1.0, min_contributors=1))
    kept = {e.sha256: e for e in chat.examples}
    assert len(kept) == 6 and chat.dropped["near-duplicate of another photo"] == 5
    first = [e for e in chat.examples if e.contributor == 81]
    assert len(first) == 1 and first[0].path.read_bytes() == original and first[0].label == "daisy"


def test_real_flower_photos_collapse_with_their_copies_and_stay_apart_from_each_other(
    tmp_path: Path, flowers_path: Path
) -> None:
    photos = sorted((flowers_path / "sunflowers").glob("*.jpg"))[:12]
    settings = Settings(data_dir=tmp_path)
    originals = [(path.read_bytes(), "sunflowers") for path in photos]
    store_labels(settings, originals, model="flowers", user_id=91)
    copies = [(reencoded(data, 70), name) for data, name in originals[:4]]
    copies += [(resized(data, 0.92), name) for data, name in originals[4:8]]
    store_labels(settings, copies, model="flowers", user_id=92)
    chat = select(settings, ChatRules(max_share=1.0, min_contributors=1))
    assert sorted(e.path.read_bytes() for e in chat.examples) == sorted(data for data, _ in originals)
    assert chat.dropped["near-duplicate of another photo"] == 8


def test_a_fingerprint_tells_different_digit_photos_apart(tmp_path: Path, mnist_path: Path) -> None:
    """The 64-bit hash alone sees the paper, not the digit: the thumbnail check must keep them apart."""
    photos = digit_photos(mnist_path, 40, seed=3)
    paths = []
    for n, (data, _) in enumerate(photos):
        paths.append(tmp_path / f"{n}.jpg")
        paths[-1].write_bytes(data)
    prints = [fingerprint(path, 40_000_000) for path in paths]
    same_hash = sum((a.hash ^ b.hash).bit_count() <= 8 for i, a in enumerate(prints) for b in prints[i + 1 :])
    assert same_hash > 0  # this is why the hash is not enough on its own
    assert not any(a.same_picture(b) for i, a in enumerate(prints) for b in prints[i + 1 :])


def test_a_photo_that_cannot_be_read_is_left_out_and_counted(settings) -> None:
    label(settings, 95, range(9500, 9503))
    with SyncStore(settings.database_path, settings.images_dir) as store:
        victim = store.labelled_set("flowers").examples[0]
    victim.path.write_bytes(b"\xff\xd8\xff not really a JPEG")
    chat = select(settings, ChatRules(max_share=1.0, min_contributors=1))
    assert victim.sha256 not in {e.sha256 for e in chat.examples}
    assert len(chat.examples) == 2 and chat.dropped["photo cannot be decoded"] == 1
    unique = collapse_near_duplicates([*chat.examples, victim], 10**8)
    assert (len(unique.kept), unique.unreadable, unique.duplicates) == (2, 1, 0)


# ------------------------------------------------------------------------------- the report


@pytest.mark.slow  # a real retrain: fits a model
def test_the_report_counts_what_the_rules_left_out(mnist_path: Path, digit_settings) -> None:
    settings = digit_settings(retrain_min_new_labels=10)
    label_photos(settings, digit_photos(mnist_path, 60, seed=5), user_id=101)
    first = 1000
    for index, user_id in enumerate((102, 103, 104, 105)):
        photos = digit_photos(mnist_path, 6, seed=6 + index, offset=100 + 10 * index)
        label_photos(settings, photos, user_id=user_id, first_message=first)
        first += 100
    copy = digit_photos(mnist_path, 1, seed=5)[0]  # the busy account sends its first photo again …
    label_photos(settings, [(reencoded(copy[0], 70), copy[1])], user_id=101, first_message=first)
    outcome = run_retrain(retrain_settings(settings), RetrainOptions(model="digits", force=True, **SMALL))
    text = outcome.report.text
    assert outcome.decision in ("promote", "reject"), text
    assert "  left out, near-duplicate of another photo: 1" in text  # … and it counts once
    share = int(text.split(f"  left out, {SHARE_REASON}: ")[1].split("\n")[0])
    used = int(text.split("Chat photos used: ")[1].split(" ")[0])
    assert share >= 60 - 8 and used <= 8 + 4 * 6
    candidate = ModelStore(settings.models_dir).get("digits", outcome.candidate_version)
    assert candidate.meta["data"]["chat_photos"] == used
