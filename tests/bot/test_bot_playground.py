"""The playground in a real browser: headless Chromium (the system's, via Playwright) against the page,
the local Bot API server and the real bot, all on 127.0.0.1. A screenshot is saved under artifacts/."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import aiohttp
import pytest

from bot.playground.web import (
    ADMIN_ID,
    TOKEN_HEADER,
    USER_ID,
    start_playground,
    stop_playground,
    token_in_page,
)
from photobot.settings import Settings
from photobot.wiring import playground_bot
from tests.support import REPO
from tests.support.bot import digit_photo

ARTIFACTS = REPO / "artifacts"
CHROMIUM_PATHS = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
MODELS_V1_SERVING = "Models (the newest 5 versions of each):\ndigits v1 — serving now"
# Whether the chat overflows and its newest message (or keyboard) is fully inside the visible part.
NEWEST_IN_VIEW = """() => {
  const box = document.getElementById("chat");
  const items = box.querySelectorAll(".msg, .keyboard");
  const newest = items[items.length - 1].getBoundingClientRect();
  const shown = box.getBoundingClientRect();
  return newest.top >= shown.top - 1 && newest.bottom <= shown.bottom + 1;
}"""
CHAT_OVERFLOWS = (
    "() => document.getElementById('chat').scrollHeight > document.getElementById('chat').clientHeight"
)
# ✅/❌ buttons: what each shows in place of the glyph, and whether a glyph is left in its text.
VERDICT_BUTTONS = """(keyboard) => [...keyboard.querySelectorAll("button")]
  .filter((b) => /^[✅❌]/.test(b.getAttribute("aria-label") || ""))
  .map((b) => {
    const svg = b.querySelector("svg.icon");
    return {
      label: b.getAttribute("aria-label"),
      width: svg ? svg.getBoundingClientRect().width : 0,
      glyphInText: [...b.childNodes].some((n) => n.nodeType === 3 && /[✅❌]/.test(n.textContent)),
    };
  })"""


def chromium() -> str:
    found = next((p for p in CHROMIUM_PATHS if Path(p).exists()), None) or shutil.which("chromium")
    if found is None:
        pytest.fail("no system Chromium: install Debian's `chromium` package (`make test` does)")
    return found


@pytest.fixture
async def playground(tmp_path: Path, model_dir: Path):
    shutil.copytree(model_dir, tmp_path / "models")
    running, application = await start_playground(
        playground_bot(Settings(data_dir=tmp_path), names=("digits",)), port=0
    )
    yield running
    await stop_playground(running, application)


async def test_the_page_api_speaks_for_both_people(playground) -> None:
    async with aiohttp.ClientSession(playground.url) as http:
        async with http.get("/") as response:
            token = token_in_page(await response.text())
        http.headers[TOKEN_HEADER] = token  # what the page's script sends on every call
        async with http.get("/api/state") as response:
            state = await response.json()
        assert state["ready"] is True
        assert [(p["id"], p["role"]) for p in state["people"]] == [(USER_ID, "user"), (ADMIN_ID, "admin")]
        form = aiohttp.FormData({"user": str(ADMIN_ID), "text": "/models"})
        async with http.post("/api/send", data=form) as response:
            assert response.status == 200
        event = await playground.server.wait_for(
            ADMIN_ID, lambda e: e["type"] == "message" and e["message"]["from"]["is_bot"], timeout=20
        )
        assert event["message"]["text"].startswith(MODELS_V1_SERVING)
        async with http.post("/api/send", data={"user": "42", "text": "hi"}) as response:
            assert response.status == 400  # only the two people of the playground
        async with http.get("/", allow_redirects=False) as response:
            page = await response.text()
        assert '<script src="/static/playground.js">' in page


async def test_a_cross_site_rollback_never_reaches_the_bot(playground) -> None:
    """Issue 24: a form on another site posted "/rollback digits 1" as the admin and the bot ran it."""
    form = {"user": str(ADMIN_ID), "text": "/rollback digits 1"}
    async with aiohttp.ClientSession(playground.url) as http:
        async with http.post("/api/send", data=form, headers={"Origin": "http://evil.example"}) as response:
            assert response.status == 403
        async with http.get("/") as response:
            token = token_in_page(await response.text())
        async with http.post(
            "/api/send", data={"user": str(ADMIN_ID), "text": "/models"}, headers={TOKEN_HEADER: token}
        ) as response:
            assert response.status == 200
    event = await playground.server.wait_for(
        ADMIN_ID, lambda e: e["type"] == "message" and e["message"]["from"]["is_bot"], timeout=20
    )
    assert event["message"]["text"].startswith(MODELS_V1_SERVING)  # v1 still serves
    texts = [e["message"].get("text") for e in playground.server.chat(ADMIN_ID).events if "message" in e]
    assert "/rollback digits 1" not in texts
    assert texts[0] == "/models"


@pytest.mark.browser
async def test_a_photo_wrong_label_and_admin_models_in_a_real_browser(
    playground, glyphs, tmp_path: Path
) -> None:
    async_api = pytest.importorskip("playwright.async_api")
    photo = tmp_path / "three.jpg"
    photo.write_bytes(digit_photo(glyphs[3]))
    ARTIFACTS.mkdir(exist_ok=True)
    async with async_api.async_playwright() as driver:
        browser = await driver.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
        try:
            page = await browser.new_page(viewport={"width": 760, "height": 900})
            await page.goto(playground.url)
            await async_api.expect(page.locator("#bot-status")).to_have_text("bot", timeout=20_000)

            # Enough chat first that the photo pushes the answer below the fold unless the page follows it.
            for answers, command in enumerate(("/start", "/help"), start=1):
                await page.locator(".commands button", has_text=command).click()
                await async_api.expect(page.locator(".msg:not(.mine)")).to_have_count(answers, timeout=20_000)
            await page.set_input_files("#file", str(photo))
            await page.click("#send")
            answer = page.locator(".msg:not(.mine)").filter(has_text=re.compile(r"\d+ — \d+%")).last
            await async_api.expect(answer).to_be_visible(timeout=30_000)
            await async_api.expect(page.locator(".msg.mine img")).to_be_visible()
            # The photo comes through the API with the page's token (an <img src> alone gets 403).
            loaded = (
                "() => [...document.querySelectorAll('.msg.mine img')]"
                ".some(img => img.complete && img.naturalWidth > 0 && img.src.startsWith('blob:'))"
            )
            await page.wait_for_function(loaded, timeout=10_000)
            # Issue 23: the page scrolled before the photo loaded, leaving the newest answer off-screen.
            assert await page.evaluate(CHAT_OVERFLOWS)
            await page.wait_for_function(NEWEST_IN_VIEW, timeout=5_000)
            keyboard = page.locator(".keyboard").last
            # Issue 23: without an emoji font ✅/❌ were empty boxes; they are drawn as SVG icons.
            buttons = await keyboard.evaluate(VERDICT_BUTTONS)
            assert [b["label"][0] for b in buttons] == ["✅", "❌"], buttons
            assert all(b["width"] >= 12 and not b["glyphInText"] for b in buttons), buttons
            assert_drawn(await keyboard.locator("svg.icon").first.screenshot(), green=True)
            assert_drawn(await keyboard.locator("svg.icon").last.screenshot(), green=False)
            await keyboard.get_by_role("button", name="❌ Wrong").click()
            await async_api.expect(keyboard.get_by_role("button", name="Not a digit")).to_be_visible(
                timeout=15_000
            )
            await keyboard.get_by_role("button", name="3", exact=True).click()
            await async_api.expect(answer).to_contain_text("Thank you! Recorded: 3", timeout=15_000)
            await async_api.expect(page.locator(".keyboard")).to_have_count(
                0
            )  # edited in place: no buttons left
            await page.screenshot(path=str(ARTIFACTS / "playground-user.png"))

            await page.get_by_role("tab", name="Admin (admin)").click()
            await page.locator(".commands button", has_text="/models").click()
            await async_api.expect(page.locator(".msg:not(.mine)").last).to_contain_text(
                MODELS_V1_SERVING, timeout=20_000
            )
            await page.screenshot(path=str(ARTIFACTS / "playground-admin.png"))
        finally:
            await browser.close()
    feedback = [
        e
        for e in playground.server.chat(USER_ID).events
        if e["type"] == "edit" and "Thank you" in e["message"]["text"]
    ]
    assert len(feedback) == 1


@pytest.mark.browser
async def test_the_composer_keeps_a_draft_for_its_writer_and_a_restart_reloads_the_page(
    tmp_path: Path, model_dir: Path, glyphs
) -> None:
    """A command button leaves the chosen photo waiting; a double click sends it once; a failed send
    keeps the text; switching person clears the draft; a restarted playground (a new page token)
    reloads the open page instead of showing "playground stopped" for good."""
    async_api = pytest.importorskip("playwright.async_api")
    photo = tmp_path / "seven.jpg"
    photo.write_bytes(digit_photo(glyphs[7]))
    shutil.copytree(model_dir, tmp_path / "models")
    build = playground_bot(Settings(data_dir=tmp_path), names=("digits",))
    running, application = await start_playground(build, port=0)
    port = int(running.url.rsplit(":", 1)[1].strip("/"))
    try:
        async with async_api.async_playwright() as driver:
            browser = await driver.chromium.launch(executable_path=chromium(), args=["--no-sandbox"])
            try:
                page = await browser.new_page()
                await page.goto(running.url)
                await async_api.expect(page.locator("#bot-status")).to_have_text("bot", timeout=20_000)
                mine = page.locator(".msg.mine")

                await page.set_input_files("#file", str(photo))
                await page.locator(".commands button", has_text="/help").click()
                await async_api.expect(mine).to_have_count(1, timeout=10_000)
                await async_api.expect(mine.last).to_have_text(re.compile("/help"))
                await async_api.expect(page.locator("#preview")).to_be_visible()  # still waiting

                await page.dblclick("#send")
                await async_api.expect(page.locator(".msg:not(.mine)")).to_have_count(2, timeout=30_000)
                await async_api.expect(mine).to_have_count(2)  # one photo, not two

                await page.route("**/api/send", lambda route: route.abort())
                await page.fill("#text", "/stats")
                await page.click("#send")
                await async_api.expect(page.locator("#toast")).to_contain_text("not sent", timeout=10_000)
                assert await page.input_value("#text") == "/stats"  # kept, to send again
                await page.unroute("**/api/send")

                await page.set_input_files("#file", str(photo))
                await page.get_by_role("tab", name="Admin (admin)").click()
                assert await page.locator("#preview").is_hidden() and await page.input_value("#text") == ""

                await stop_playground(running, application)
                running, application = await start_playground(build, port=port)
                await async_api.expect(page.locator("#bot-status")).to_have_text("bot", timeout=30_000)
                await page.locator(".commands button", has_text="/help").click()
                await async_api.expect(page.locator(".msg:not(.mine)").last).to_contain_text(
                    "Send me a photo", timeout=20_000
                )

                await page.select_option("#language", "ru")  # the page's own words follow the person's
                await async_api.expect(page.locator("#text")).to_have_attribute(
                    "placeholder", "Сообщение, команда или подпись"
                )
                assert await page.locator("#as-file-label").text_content() == "отправить файлом"
            finally:
                await browser.close()
    finally:
        await stop_playground(running, application)


def assert_drawn(png: bytes, *, green: bool) -> None:
    """The icon has pixels of its colour (green ✅, red ❌): drawn, not an empty box."""
    import io

    import numpy as np
    from PIL import Image

    red, grn, blue = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=int).transpose(2, 0, 1)
    coloured = (grn > 150) & (red < 120) if green else (red > 180) & (grn < 120) & (blue < 140)
    assert coloured.sum() >= 10, f"{int(coloured.sum())} {'green' if green else 'red'} pixels"


@pytest.mark.process
async def test_photobot_playground_prints_its_url_and_stops_cleanly_on_ctrl_c(
    tmp_path: Path, served_models: Path
) -> None:
    import asyncio
    import os
    import signal
    import socket
    import sys

    shutil.copytree(served_models, tmp_path / "var" / "models")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k not in ("TELEGRAM_BOT_TOKEN", "DATA_DIR")}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "photobot",
        "playground",
        "--port",
        str(port),
        cwd=tmp_path,
        env={**env, "TF_CPP_MIN_LOG_LEVEL": "2"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    lines: list[str] = []
    try:
        while not any("the bot is ready" in line for line in lines):
            line = await asyncio.wait_for(process.stdout.readline(), 120)
            assert line, "\n".join(lines)
            lines.append(line.decode())
        assert any(f"PhotoBot playground: open http://127.0.0.1:{port}" in line for line in lines)
        assert any("listening on 127.0.0.1 only" in line for line in lines)
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as http:
            async with http.get("/") as response:
                token = token_in_page(await response.text())
            async with http.get("/api/state", headers={TOKEN_HEADER: token}) as response:
                assert (await response.json())["ready"] is True
        process.send_signal(signal.SIGINT)
        rest = (await asyncio.wait_for(process.stdout.read(), 60)).decode()
        assert await process.wait() == 0, rest
        assert "PhotoBot stopped" in rest
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
