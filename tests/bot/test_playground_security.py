"""The playground answers only its own page: the Host must name it, an Origin must be its own, and every
API call must carry the session token embedded in the page it served. Anything else gets 403 and
changes nothing (issue 24, item 10: a cross-site form queued "/rollback digits 1" as the admin).

The page's API is exercised over real HTTP on 127.0.0.1, without a bot polling: whatever a request
managed to send would stay in the server's update queue and in the chat's event log, so an empty
queue and log prove that no command can have run.
"""

from __future__ import annotations

import ipaddress

import aiohttp
import pytest

from bot.playground.web import ADMIN_ID, TOKEN_HEADER, USER_ID, Playground, token_in_page

FOREIGN_ORIGIN = "http://evil.example"


@pytest.fixture
async def playground():
    running = Playground(port=0)
    await running.start()
    yield running
    await running.stop()


@pytest.fixture
async def http(playground: Playground):
    async with aiohttp.ClientSession(playground.url) as session:
        yield session


def own_origin(playground: Playground) -> str:
    return playground.url


def nothing_happened(playground: Playground) -> bool:
    server = playground.server
    return not server.pending_updates and not any(server.chat(p).events for p in (USER_ID, ADMIN_ID))


async def page_token(http: aiohttp.ClientSession) -> str:
    async with http.get("/") as response:
        assert response.status == 200
        return token_in_page(await response.text())


async def test_the_served_page_holds_the_session_token_and_cannot_be_framed(
    playground: Playground, http: aiohttp.ClientSession
) -> None:
    async with http.get("/") as response:
        page = await response.text()
        assert response.headers["X-Frame-Options"] == "DENY"
        assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]
        assert response.headers["Cache-Control"] == "no-store"
    assert token_in_page(page) == playground.session_token
    assert len(playground.session_token) >= 40
    assert "{{PLAYGROUND_TOKEN}}" not in page
    assert Playground(port=0).session_token != playground.session_token  # one per start


async def test_a_cross_site_form_post_as_the_admin_is_refused_and_queues_nothing(
    playground: Playground, http: aiohttp.ClientSession
) -> None:
    form = {"user": str(ADMIN_ID), "text": "/rollback digits 1"}
    async with http.post("/api/send", data=form, headers={"Origin": FOREIGN_ORIGIN}) as response:
        assert response.status == 403
        assert "refused" in await response.text()
    token = await page_token(http)  # even the right token does not make a foreign origin right
    headers = {"Origin": FOREIGN_ORIGIN, TOKEN_HEADER: token}
    async with http.post("/api/send", data=form, headers=headers) as response:
        assert response.status == 403
        assert "cross-origin" in await response.text()
    assert nothing_happened(playground)


async def test_a_post_without_the_token_or_with_a_wrong_one_is_refused(
    playground: Playground, http: aiohttp.ClientSession
) -> None:
    token = await page_token(http)
    wrong = ("x" if token[0] != "x" else "y") + token[1:]
    form = {"user": str(ADMIN_ID), "text": "/rollback digits 1"}
    for headers in ({}, {TOKEN_HEADER: ""}, {TOKEN_HEADER: wrong}, {TOKEN_HEADER: token[:-1]}):
        for origin in ({}, {"Origin": own_origin(playground)}):
            async with http.post("/api/send", data=form, headers={**headers, **origin}) as response:
                assert response.status == 403, (headers, origin)
                assert "session token" in await response.text()
    assert nothing_happened(playground)


async def test_every_api_call_needs_the_token(playground: Playground, http: aiohttp.ClientSession) -> None:
    calls = [
        ("GET", "/api/state", None),
        ("GET", f"/api/events?user={ADMIN_ID}&after=0", None),
        ("GET", "/api/file/1", None),
        ("POST", "/api/press", {"user": ADMIN_ID, "message_id": 1, "data": "x"}),
        ("POST", "/api/language", {"user": ADMIN_ID, "language": "ru"}),
    ]
    for method, path, body in calls:
        async with http.request(method, path, json=body) as response:
            assert response.status == 403, path
    assert playground.server.users[ADMIN_ID]["language_code"] == "en"
    assert nothing_happened(playground)


async def test_a_foreign_host_is_refused_even_with_the_token(
    playground: Playground, http: aiohttp.ClientSession
) -> None:
    """DNS rebinding: a foreign name that resolves to 127.0.0.1 reaches the port with its own Host."""
    token = await page_token(http)
    foreign = {"Host": f"evil.example:{playground.server.port}"}
    async with http.get("/", headers=foreign) as response:
        assert response.status == 403
        assert "playground-token" not in await response.text()
    form = {"user": str(ADMIN_ID), "text": "/rollback digits 1"}
    async with http.post("/api/send", data=form, headers={**foreign, TOKEN_HEADER: token}) as response:
        assert response.status == 403
        assert "Host" in await response.text()
    other_port = {"Host": f"127.0.0.1:{playground.server.port + 1}", TOKEN_HEADER: token}
    async with http.get("/api/state", headers=other_port) as response:
        assert response.status == 403
    bot_api = f"/bot{playground.server.token}/getUpdates"
    async with http.get(bot_api, headers=foreign) as response:
        assert response.status == 403
    assert "getUpdates" not in playground.server.method_calls
    assert nothing_happened(playground)


async def test_a_cross_site_fetch_is_refused_by_its_fetch_metadata(
    playground: Playground, http: aiohttp.ClientSession
) -> None:
    token = await page_token(http)
    form = {"user": str(ADMIN_ID), "text": "/models"}
    headers = {TOKEN_HEADER: token, "Sec-Fetch-Site": "cross-site"}
    async with http.post("/api/send", data=form, headers=headers) as response:
        assert response.status == 403
    assert nothing_happened(playground)


async def test_the_page_token_and_its_own_origin_work_under_every_loopback_name(
    playground: Playground, http: aiohttp.ClientSession
) -> None:
    token = await page_token(http)
    port = playground.server.port
    for number, name in enumerate(("127.0.0.1", "localhost", "[::1]"), start=1):
        headers = {"Host": f"{name}:{port}", "Origin": f"http://{name}:{port}", TOKEN_HEADER: token}
        form = {"user": str(ADMIN_ID), "text": f"/models {number}"}
        async with http.post("/api/send", data=form, headers=headers) as response:
            assert response.status == 200, await response.text()
    sent = [u["message"]["text"] for u in playground.server.pending_updates]
    assert sent == ["/models 1", "/models 2", "/models 3"]
    async with http.get("/api/state", headers={TOKEN_HEADER: token}) as response:
        assert response.status == 200
        assert [p["id"] for p in (await response.json())["people"]] == [USER_ID, ADMIN_ID]
    assert [u["message"]["from"]["id"] for u in playground.server.pending_updates] == [ADMIN_ID] * 3


async def test_the_playground_listens_on_loopback_only(playground: Playground) -> None:
    addresses = playground.server._runner.addresses
    assert addresses
    assert all(ipaddress.ip_address(address[0]).is_loopback for address in addresses)
