"""/forget end to end: a blocked person stays blocked, and no copy of their photos or id stays under
DATA_DIR (cached features, report pictures, report text). A real bot over HTTP against the local Bot
API server, a real SQLite file, real image files, real report PNGs and a real feature cache."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import pytest_asyncio
from PIL import Image

from tests.support.bot import (
    ADMIN_ID,
    BotHarness,
    button_data,
    digit_photo,
    start_bot,
    stop_bot,
)
from training.flower_data import BottleneckCache, Pixels, bottlenecks, forget_bottlenecks, load_pixels
from training.report import MISTAKES_FILE, Mistake, ReportData, write_report

module_loop = pytest.mark.asyncio(loop_scope="module")
DONE_ONE_PHOTO = (
    "Done: I deleted the photos you sent (1, as /stats counted them) and everything else I stored about you."
)
NOT_UNDONE = (
    "What deleting cannot take back: models already trained on your photos, retraining reports "
    "already sent to the admins, and copies an admin has already exported."
)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def bot(tmp_path_factory: pytest.TempPathFactory, model_dir: Path):
    harness = await start_bot(tmp_path_factory.mktemp("data"), model_dir)
    yield harness
    await stop_bot(harness)


async def forget(bot: BotHarness, user: int) -> str:
    """/forget, check the question says what cannot be undone, confirm; return the final message."""
    ask = await bot.say(user, "/forget")
    assert ask["text"].endswith("This cannot be undone.\n\n" + NOT_UNDONE)
    _, done = await bot.press(user, ask, button_data(ask, "Yes, delete"))
    return done["text"]


def mean_features(pixels: np.ndarray) -> np.ndarray:
    """A stand-in backbone: real arrays, the shape the cache stores (one row per photo)."""
    return pixels.mean(axis=(1, 2))


@module_loop
async def test_a_blocked_user_who_forgets_stays_blocked(bot: BotHarness, glyphs) -> None:
    user, admin = bot.user(7_300_000_001), bot.user(ADMIN_ID, "Root")
    await bot.say(admin, f"/block {user}")
    refused = await bot.photo(user, digit_photo(glyphs[4], seed=1), caption="4")
    assert "Your labels are not being accepted" in refused["text"]

    done = await forget(bot, user)

    assert done == (
        "Done: I deleted the photos you sent (1, as /stats counted them) and everything else I stored "
        "about you.\n"
        "I kept your user id, and nothing else, to remember that an admin stopped accepting your labels."
        "\n\n" + NOT_UNDONE
    )
    store = bot.services.store
    assert await store.is_blocked(user) and user in await store.blocked_users()
    assert await store.user_predictions(user) == []
    assert "Blocked users: 1" in (await bot.say(admin, "/stats"))["text"]
    again = await bot.photo(user, digit_photo(glyphs[4], seed=2), caption="4")
    assert "Your labels are not being accepted" in again["text"]
    assert (await store.user_stats(user)).contributions == 0


@module_loop
async def test_forget_leaves_no_copy_of_the_photos_or_id_under_data_dir(bot: BotHarness, glyphs) -> None:
    user, other = bot.user(7_300_000_002), bot.user(7_300_000_003)
    store, data_dir = bot.services.store, Path(bot.settings.data_dir)
    await bot.photo(user, digit_photo(glyphs[3], seed=5), caption="3")
    await bot.photo(other, digit_photo(glyphs[8], seed=6), caption="8")
    my_sha = (await store.user_predictions(user))[0].photo_sha256
    their_sha = (await store.user_predictions(other))[0].photo_sha256
    mine = bot.services.images.read(my_sha)  # the bytes as stored (Telegram re-encodes photos)
    examples = {
        e.sha256: e
        for e in (await store.labelled_set("digits", validation_percent=0)).examples
        if e.sha256 in (my_sha, their_sha)
    }
    assert set(examples) == {my_sha, their_sha}
    # What retraining jobs leave behind: the photos' cached features and reports that show them.
    cache = BottleneckCache(data_dir / "cache" / "bottlenecks", "backbone-x")
    chat = [Pixels.of_photo(e.sha256, load_pixels(e.path), e.path) for e in examples.values()]
    bottlenecks(chat, cache, mean_features)
    for job, shown in (("digits-job1", [my_sha, their_sha]), ("digits-job2", [their_sha])):
        data = ReportData(
            model="digits",
            job_id=int(job[-1]),
            serving_version=1,
            candidate_version=2,
            used_per_label={"3": 1, "8": 1},
            used_per_contributor={user: 1, other: 1},
            capped={user: 4},
            mistakes=[Mistake(examples[sha].path, examples[sha].label, "1", "train") for sha in shown],
        )
        write_report(data, data_dir / "reports" / job)
    assert cache.get(my_sha) is not None
    assert any(mine_thumbnail_shown(data_dir, my_sha))

    done = await forget(bot, user)

    assert done == DONE_ONE_PHOTO + "\n\n" + NOT_UNDONE
    files = [p for p in data_dir.rglob("*") if p.is_file()]
    for path in files:
        content = path.read_bytes()
        assert mine not in content, path
        if "cache" in path.parts:
            assert my_sha not in path.name and my_sha.encode() not in content, path
        if "reports" in path.parts:
            assert str(user).encode() not in content and my_sha.encode() not in content, path
    assert cache.get(my_sha) is None and cache.get(their_sha) is not None
    assert not (data_dir / "reports" / "digits-job1" / MISTAKES_FILE).exists()
    assert (data_dir / "reports" / "digits-job1" / "report.txt").is_file()
    assert (data_dir / "reports" / "digits-job2" / MISTAKES_FILE).is_file()  # shows only the other's photo
    assert not any(mine_thumbnail_shown(data_dir, my_sha))


def mine_thumbnail_shown(data_dir: Path, sha256: str):
    """Report folders whose photo list names this photo."""
    for listed in (data_dir / "reports").glob("*/photos.txt"):
        if sha256 in listed.read_text(encoding="utf-8").split():
            yield listed.parent


def test_features_of_a_photo_forgotten_while_they_were_computed_are_not_cached(tmp_path: Path) -> None:
    photo = tmp_path / "photo.png"
    Image.new("RGB", (40, 30), (20, 160, 40)).save(photo)
    sha = hashlib.sha256(photo.read_bytes()).hexdigest()
    cache = BottleneckCache(tmp_path / "cache", "backbone-x")

    def extract_while_forgotten(pixels: np.ndarray) -> np.ndarray:
        photo.unlink()  # /forget removes the photo while the job computes its features
        return mean_features(pixels)

    found = bottlenecks([Pixels.of_photo(sha, load_pixels(photo), photo)], cache, extract_while_forgotten)
    assert found.features.shape == (1, 3)  # the job may still use them...
    assert cache.get(sha) is None  # ...but they are not kept


def test_forget_bottlenecks_covers_every_backbone_and_refuses_non_hashes(tmp_path: Path) -> None:
    root = tmp_path / "bottlenecks"
    mine, theirs = "ab" + "1" * 62, "cd" + "2" * 62
    for key in ("backbone-x", "backbone-y"):
        for digest in (mine, theirs):
            BottleneckCache(root, key).put(digest, np.ones(4, np.float32))
    assert forget_bottlenecks(root, [mine]) == 2
    assert [BottleneckCache(root, k).get(mine) for k in ("backbone-x", "backbone-y")] == [None, None]
    assert BottleneckCache(root, "backbone-y").get(theirs) is not None
    assert forget_bottlenecks(tmp_path / "missing", [mine]) == 0
    with pytest.raises(ValueError, match="not a SHA-256"):
        forget_bottlenecks(root, ["../../etc/passwd"])
