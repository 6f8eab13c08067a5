"""The bot's test harness: the local Bot API server on 127.0.0.1 and a real Application talking to it.

Only the outer boundary is fake (Telegram itself). The bot runs with a real SQLite file, a real image
store and a real Keras digit model trained here on real MNIST (a small MLP: a second or two), so the
tests do not depend on which model is shipped.
"""

from __future__ import annotations

import asyncio
import io
import shutil
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageFilter
from telegram.ext import Application

from bot.playground.bot_api_server import BotApiServer
from bot.services import KEY, Services
from inference.catalogue import DEFAULT_CATALOGUE, Catalogue
from inference.engine import EngineConfig
from photobot.settings import Settings
from photobot.wiring import build_bot

TOKEN = "5555:bot-under-test"
ADMIN_ID = 900_001
Json = dict[str, Any]


def train_digit_model(models_dir: Path, mnist_path: Path) -> None:
    """Put a real (small) digit model trained on MNIST into a model store and make it serve."""
    import keras

    from inference import digits
    from inference.model_store import ModelStore

    with np.load(mnist_path) as data:
        x, y = data["x_train"][:20000], data["y_train"][:20000]
        x_test, y_test = data["x_test"][:2000], data["y_test"][:2000]
    keras.utils.set_random_seed(7)
    model = keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(128, activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x[..., None] / 255.0, y, epochs=2, batch_size=200, verbose=0)
    accuracy = float(model.evaluate(x_test[..., None] / 255.0, y_test, verbose=0)[1])
    store = ModelStore(models_dir)
    meta = {
        "labels": list(digits.LABELS),
        "preprocessing": digits.PREPROCESSING_ID,
        "metrics": {"mnist_accuracy": accuracy},
        "command": "tests/support/bot.py",
    }
    with store.new_version("digits", meta) as staged:
        model.save(staged.path / "model.keras")
    store.promote("digits", staged.version)


def mnist_digits(mnist_path: Path) -> dict[int, np.ndarray]:
    """One real handwritten MNIST test digit (28×28, light ink on black) per label."""
    with np.load(mnist_path) as data:
        x, y = data["x_test"], data["y_test"]
    return {d: x[np.flatnonzero(y == d)[0]] for d in range(10)}


def digit_photo(
    glyph: np.ndarray, *, size: tuple[int, int] = (640, 480), seed: int = 0, quality: int = 90
) -> bytes:
    """A phone-like photo of a handwritten digit: dark ink on slightly uneven paper, blurred, noisy, JPEG."""
    rng = np.random.default_rng(seed)
    width, height = size
    side = min(width, height) // 2
    ink = Image.fromarray(glyph).resize((side, side), Image.Resampling.BICUBIC)
    paper = np.full((height, width), 225.0) + np.linspace(-12, 12, width)[None, :]
    x0, y0 = (width - side) // 2, (height - side) // 2
    patch = np.asarray(ink, dtype=np.float64) / 255.0
    paper[y0 : y0 + side, x0 : x0 + side] = paper[y0 : y0 + side, x0 : x0 + side] * (1 - 0.8 * patch)
    paper += rng.normal(0, 3, paper.shape)
    gray = Image.fromarray(np.clip(paper, 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(1.0))
    buffer = io.BytesIO()
    Image.merge("RGB", (gray, gray, gray)).save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def encoded(image: Image.Image, fmt: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


@dataclass
class BotHarness:
    server: BotApiServer
    application: Application
    settings: Settings

    @property
    def services(self) -> Services:
        return self.application.bot_data[KEY]

    def user(self, user_id: int, first_name: str = "Ann", language_code: str | None = "en") -> int:
        self.server.add_user(user_id, first_name, language_code=language_code)
        return user_id

    async def say(self, user_id: int, text: str, timeout: float = 15.0) -> Json:
        """Send a text (or /command) and return the bot's next message."""
        after = self.server.chat(user_id).revision
        await self.server.send_text(user_id, text)
        return await self.next_message(user_id, after, timeout)

    async def photo(
        self, user_id: int, data: bytes, caption: str | None = None, timeout: float = 30.0
    ) -> Json:
        after = self.server.chat(user_id).revision
        await self.server.send_photo(user_id, data, caption)
        return await self.next_message(user_id, after, timeout)

    async def album(
        self,
        user_id: int,
        photos: list[bytes],
        captions: list[str | None],
        timeout: float = 30.0,
        group_id: str | None = None,
    ) -> list[Json]:
        """Send photos as one album (or more of album `group_id`); return the bot's answer to each (the
        message quoting it), in order."""
        sent = await self.server.send_album(user_id, photos, captions, group_id)

        def answers(message_id: int) -> Callable[[Json], bool]:
            return lambda e: (
                e["type"] == "message"
                and e["message"]["from"]["is_bot"]
                and e["message"].get("reply_to_message", {}).get("message_id") == message_id
            )

        found = [
            await self.server.wait_for(user_id, answers(message["message_id"]), timeout=timeout)
            for message in sent
        ]
        return [event["message"] for event in found]

    async def document(
        self, user_id: int, data: bytes, name: str, mime: str | None, timeout: float = 30.0
    ) -> Json:
        after = self.server.chat(user_id).revision
        await self.server.send_document(user_id, data, name, mime)
        return await self.next_message(user_id, after, timeout)

    async def next_message(self, user_id: int, after: int, timeout: float = 15.0) -> Json:
        event = await self.server.wait_for(
            user_id,
            lambda e: e["type"] == "message" and e["message"]["from"]["is_bot"],
            after=after,
            timeout=timeout,
        )
        return event["message"]

    async def press(
        self,
        user_id: int,
        message: Json,
        data: str,
        *,
        check: bool = True,
        edited: bool = True,
        timeout: float = 10.0,
    ) -> tuple[Json, Json | None]:
        """Press a button; return the callback answer and (when `edited`) the message as edited, each
        waited for up to `timeout` seconds (a button that loads a model needs more than the default)."""
        after = self.server.chat(user_id).revision
        await self.server.press_button(user_id, message["message_id"], data, check=check)
        answer = await self.server.wait_for(
            user_id, lambda e: e["type"] == "callback_answer", after=after, timeout=timeout
        )
        if not edited:
            return answer, None
        edit = await self.server.wait_for(
            user_id,
            lambda e: e["type"] == "edit" and e["message"]["message_id"] == message["message_id"],
            after=after,
            timeout=timeout,
        )
        return answer, edit["message"]

    async def quiet_for(self, user_id: int, seconds: float) -> list[Json]:
        """Bot messages that arrive in the next `seconds` (to check that nothing is sent)."""
        after = self.server.chat(user_id).revision
        await asyncio.sleep(seconds)
        return [
            e["message"]
            for e in self.server.chat(user_id).events[after:]
            if e["type"] == "message" and e["message"]["from"]["is_bot"]
        ]


def buttons(message: Json) -> list[tuple[str, str]]:
    """(text, callback_data) of every inline button under a message, row by row."""
    rows = message.get("reply_markup", {}).get("inline_keyboard", [])
    return [(b["text"], b["callback_data"]) for row in rows for b in row]


def asks_feedback(message: Json) -> bool:
    """Whether an answer carries its feedback keyboard: ✅ / ❌ under a sure answer or a refusal, or,
    under an unsure one, the labels it offers (its guess first), "Not a digit" and "Something else…"."""
    texts = [text for text, _ in buttons(message)]
    if texts == ["✅ Correct", "❌ Wrong"]:
        return True
    guess = message.get("text", "").split(" — ", 1)[0]
    return len(texts) >= 3 and texts[0] == guess and texts[-2:] == ["Not a digit", "Something else…"]


def button_data(message: Json, caption: str) -> str:
    return next(data for text, data in buttons(message) if text == caption)


async def start_bot(
    data_dir: Path,
    model_dir: Path,
    *,
    names: tuple[str, ...] = ("digits",),
    catalogue: Catalogue = DEFAULT_CATALOGUE,
    **overrides: Any,
) -> BotHarness:
    """Start the server and the real bot (initialize → post_init → start → start_polling), serving the
    models `names` of `catalogue` (a test may add a model to the catalogue, as a deployment would)."""
    shutil.copytree(model_dir, data_dir / "models", dirs_exist_ok=True)
    server = BotApiServer(TOKEN)
    await server.start()
    settings = Settings(
        telegram_bot_token=TOKEN,
        telegram_api_url=server.url,
        admin_ids=frozenset({ADMIN_ID}),
        data_dir=data_dir,
        engine=EngineConfig(workers=1),  # one decode process: a test's few photos need no more
    )
    settings = replace(settings, **overrides)
    application = build_bot(settings, names=names, catalogue=catalogue)
    await application.initialize()
    await application.post_init(application)
    await application.start()
    await application.updater.start_polling(timeout=1, poll_interval=0)
    return BotHarness(server, application, settings)


async def stop_bot(harness: BotHarness) -> None:
    """updater.stop → stop → shutdown → post_shutdown, then the server."""
    application = harness.application
    await application.updater.stop()
    await application.stop()
    await application.shutdown()
    await application.post_shutdown(application)
    await harness.server.stop()
