"""The bot with INFERENCE_URL set and the inference service down: a clear answer in the person's
language, nothing stored for a photo there is no answer to, a labelled photo kept with its label."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytest_asyncio

from bot.texts import text
from inference.remote.client import RemoteClassifier
from tests.remote.conftest import free_port
from tests.support.bot import BotHarness, digit_photo, start_bot, stop_bot

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def bot(tmp_path_factory: pytest.TempPathFactory, model_dir: Path):
    nothing_there = f"http://127.0.0.1:{free_port()}"  # a port nobody listens on: connection refused
    harness = await start_bot(
        tmp_path_factory.mktemp("data"), model_dir, inference_url=nothing_there, inference_timeout_s=2.0
    )
    yield harness
    await stop_bot(harness)


async def test_the_bot_asks_the_service_not_its_own_engine(bot: BotHarness) -> None:
    assert isinstance(bot.services.classifier, RemoteClassifier)


async def test_a_photo_is_answered_inference_is_down_and_not_kept(bot: BotHarness, glyphs) -> None:
    english, russian = bot.user(501, "Ann", "en"), bot.user(502, "Иван", "ru")
    reply = await bot.photo(english, digit_photo(glyphs[3]))
    assert reply["text"] == text("en", "inference_down")
    assert "reply_markup" not in reply  # no answer, so nothing to say ✅ / ❌ about
    assert (await bot.photo(russian, digit_photo(glyphs[5])))["text"] == text("ru", "inference_down")
    stats = await bot.services.store.global_stats()
    assert (stats.photos, stats.predictions) == (0, 0)


async def test_a_labelled_photo_is_kept_with_its_label_while_the_service_is_down(
    bot: BotHarness, glyphs
) -> None:
    user = bot.user(503, "Bea", "en")
    reply = await bot.photo(user, digit_photo(glyphs[7], seed=3), caption="7")
    assert reply["text"] == text("en", "inference_down_kept", label="7")
    labelled = await bot.services.store.labelled_set("digits", validation_percent=0)
    kept = [e for e in labelled.examples if e.label == "7"]
    assert len(kept) == 1
    assert bot.services.images.read(kept[0].sha256)
