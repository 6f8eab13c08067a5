"""The playground's chats outlive it (issue 23, item 10): a restart on the same DATA_DIR shows the earlier
conversation through the page's API, with its photos stored once, and a /forget drops the playground's copy.

Everything is real: the bot, its database and model, the local Bot API server, the page's API over HTTP
on 127.0.0.1 with the session token the served page holds.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest

from bot.playground.web import (
    TOKEN_HEADER,
    USER_ID,
    Playground,
    start_playground,
    stop_playground,
    token_in_page,
)
from photobot.settings import Settings
from photobot.wiring import playground_bot
from tests.support.bot import digit_photo


@pytest.fixture
def data_dir(tmp_path: Path, model_dir: Path) -> Path:
    shutil.copytree(model_dir, tmp_path / "models")
    return tmp_path


@pytest.fixture
def photo(glyphs) -> bytes:
    return digit_photo(glyphs[3])


@asynccontextmanager
async def running(data_dir: Path) -> AsyncIterator[tuple[Playground, aiohttp.ClientSession]]:
    """`photobot playground` on `data_dir`, and a client that calls its API as the served page does."""
    playground, application = await start_playground(
        playground_bot(Settings(data_dir=data_dir), names=("digits",)),
        port=0,
        history_dir=data_dir / "playground",
    )
    try:
        async with aiohttp.ClientSession(playground.url) as http:
            async with http.get("/") as response:
                http.headers[TOKEN_HEADER] = token_in_page(await response.text())
            yield playground, http
    finally:
        await stop_playground(playground, application)


async def send(
    playground: Playground, http: aiohttp.ClientSession, text: str = "", photo: bytes | None = None
) -> dict:
    """Send as the user through the page's API; the bot's next message in the chat."""
    mark = playground.server.chat(USER_ID).revision
    form = aiohttp.FormData({"user": str(USER_ID), "text": text})
    if photo is not None:
        form.add_field("file", photo, filename="three.jpg", content_type="image/jpeg")
    async with http.post("/api/send", data=form) as response:
        assert response.status == 200, await response.text()
    event = await playground.server.wait_for(
        USER_ID,
        lambda e: e["type"] == "message" and e["message"]["from"]["is_bot"],
        after=mark,
        timeout=30,
    )
    return event["message"]


async def history(http: aiohttp.ClientSession) -> list[dict]:
    """The chat as the page loads it: every event from the start, folded into the messages shown."""
    async with http.get("/api/events", params={"user": str(USER_ID), "after": "0"}) as response:
        assert response.status == 200
        events = (await response.json())["events"]
    shown: dict[int, dict] = {}
    for event in events:
        if event["type"] in ("message", "edit"):
            shown[event["message"]["message_id"]] = event["message"]
        elif event["type"] == "delete":
            shown.pop(event["message_id"], None)
        elif event["type"] == "clear":
            shown = {i: m for i, m in shown.items() if i in event["keep"]}
    return [shown[i] for i in sorted(shown)]


def button(message: dict, starts_with: str) -> str:
    rows = message["reply_markup"]["inline_keyboard"]
    return next(b["callback_data"] for row in rows for b in row if b["text"].startswith(starts_with))


async def test_the_chat_survives_a_restart_of_the_playground(data_dir: Path, photo: bytes) -> None:
    async with running(data_dir) as (playground, http):
        answer = await send(playground, http, photo=photo)
        assert "❌" in str(answer["reply_markup"])
        await send(playground, http, photo=photo)  # the same photo twice: its files are kept once
        async with http.post("/api/language", json={"user": USER_ID, "language": "ru"}) as response:
            assert response.status == 200
        before = await history(http)
        shown_photo = before[0]["photo"][-1]

    async with running(data_dir) as (playground, http):
        after = await history(http)
        assert [m["message_id"] for m in after] == [m["message_id"] for m in before]
        assert after[0]["photo"] == before[0]["photo"]
        assert after[1]["text"] == answer["text"]
        async with http.get("/api/state") as response:
            people = {p["id"]: p["language"] for p in (await response.json())["people"]}
        assert people[USER_ID] == "ru"  # the page's language choice is kept too
        async with http.get(f"/api/file/{shown_photo['file_id']}") as response:
            assert response.status == 200
            assert len(await response.read()) == shown_photo["file_size"]
        stored = sorted(p.name for p in (data_dir / "playground" / "files").iterdir())
        assert len(stored) == len(before[0]["photo"])  # one file per photo size, not per sending

        # The bot works on with the earlier messages: a button of a restored answer, a new message after them.
        async with http.post(
            "/api/press",
            json={"user": USER_ID, "message_id": answer["message_id"], "data": button(answer, "❌")},
        ) as response:
            assert response.status == 200
        edited = await playground.server.wait_for(
            USER_ID,
            lambda e: e["type"] == "edit" and e["message"]["message_id"] == answer["message_id"],
            timeout=30,
        )
        offered = [b["text"] for row in edited["message"]["reply_markup"]["inline_keyboard"] for b in row]
        assert {str(digit) for digit in range(10)} <= set(offered), offered  # the digits to pick from
        newer = await send(playground, http, "/help")
        assert newer["message_id"] > max(m["message_id"] for m in before) + 1


async def test_forget_drops_the_playground_copy_of_the_chat(data_dir: Path, photo: bytes) -> None:
    async with running(data_dir) as (playground, http):
        await send(playground, http, photo=photo)
        question = await send(playground, http, "/forget")
        mark = playground.server.chat(USER_ID).revision
        async with http.post(
            "/api/press",
            json={"user": USER_ID, "message_id": question["message_id"], "data": button(question, "Yes")},
        ) as response:
            assert response.status == 200
        await playground.server.wait_for(USER_ID, lambda e: e["type"] == "clear", after=mark, timeout=30)
        left = await history(http)
        assert [m["message_id"] for m in left] == [question["message_id"]]
        assert left[0]["text"].startswith("Done:")
        assert not any("photo" in m for m in playground.server.chat(USER_ID).messages.values())

    async with running(data_dir) as (playground, http):
        assert [m["message_id"] for m in await history(http)] == [question["message_id"]]
        assert list((data_dir / "playground" / "files").iterdir()) == []
