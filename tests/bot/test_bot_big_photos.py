"""Big images sent as files, end to end through the fake Bot API: a 48 MP phone JPEG is answered, a
small PNG that would be expensive to decode is refused in the user's language with the next step."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import pytest_asyncio
from PIL import Image

from tests.support.bot import BotHarness, start_bot, stop_bot

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def bot(tmp_path_factory: pytest.TempPathFactory, model_dir: Path):
    harness = await start_bot(tmp_path_factory.mktemp("data"), model_dir)  # the default limits
    yield harness
    await stop_bot(harness)


def phone_jpeg() -> bytes:
    """8000×6000 at quality 90: a noisy 1000×750 picture enlarged, as a phone file is in size."""
    rng = np.random.default_rng(48)
    small = np.clip(rng.normal(150, 40, (750, 1000, 3)), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(small).resize((8000, 6000), Image.BICUBIC).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def transparent_png(width: int, height: int) -> bytes:
    """An RGBA PNG written row by row (~150 KB at 6300×6300, ~160 MB once decoded)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    row = b"\0" + bytes([255, 0, 0, 128]) * width
    compressor = zlib.compressobj(9)
    data = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


async def test_a_48_megapixel_phone_jpeg_sent_as_a_file_is_answered(bot: BotHarness) -> None:
    user = bot.user(5001)
    data = phone_jpeg()
    assert 1_000_000 < len(data) < bot.settings.max_image_bytes
    answer = await bot.document(user, data, "IMG_0001.jpg", "image/jpeg", timeout=60.0)
    assert "too large" not in answer["text"] and "can't read" not in answer["text"], answer["text"]
    assert len(await bot.services.store.user_predictions(user)) == 1  # classified and recorded


async def test_an_expensive_png_is_refused_in_russian_with_the_next_step(bot: BotHarness) -> None:
    user = bot.user(5002, "Оля", "ru")
    answer = await bot.document(user, transparent_png(6300, 6300), "sticker.png", "image/png")
    assert answer["text"].startswith("Это изображение для меня слишком большое: это PNG размером 6300×6300")
    assert "отправьте его как фото, а не файлом" in answer["text"].lower()
    assert "меньше чем до 16 мегапикселей" in answer["text"]
    assert await bot.services.store.user_predictions(user) == []
