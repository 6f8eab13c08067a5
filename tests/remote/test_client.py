"""The bot's client of the inference service when the service is not there: refused connections, a
proxy that hangs or fails, one retry each, then InferenceUnavailable. (Fakes stand for the network and
a failing proxy only; the answers themselves come from the real service in test_serve_inference.py.)"""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from inference.errors import (
    DeadlineExceeded,
    EngineBusy,
    ImageTooLarge,
    InferenceUnavailable,
    ModelUnavailable,
    UnsupportedImage,
)
from inference.model_store import ModelStore
from inference.prediction import DigitAnswer, Prediction
from inference.remote.client import RemoteClassifier
from inference.remote.config import RemoteConfig
from inference.remote.protocol import dumps, error_from_json, error_json
from tests.remote.conftest import free_port


class Front:
    """An HTTP server on 127.0.0.1 that counts requests and answers each with `answer(n)`."""

    def __init__(self, answer) -> None:
        self.answer = answer
        self.requests = 0
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def __aenter__(self) -> Front:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        port = free_port()
        await web.TCPSite(self.runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self.runner is not None
        await self.runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.path == "/models":
            return web.Response(status=502, text="bad gateway")
        self.requests += 1
        return await self.answer(self.requests, request)


def client(url: str, tmp_path, **changes) -> RemoteClassifier:
    config = RemoteConfig(url, **{"timeout_s": 5.0, "status_poll_s": 0, **changes})
    return RemoteClassifier(config, ModelStore(tmp_path / "models"))


async def test_a_refused_connection_is_inference_unavailable(tmp_path):
    async with client(f"http://127.0.0.1:{free_port()}", tmp_path) as remote:
        with pytest.raises(InferenceUnavailable, match="cannot be reached"):
            await remote.classify(b"photo", "digit")
        assert remote.has_room()


async def test_a_hanging_service_times_out_and_is_tried_once_more(tmp_path):
    over = asyncio.Event()

    async def hang(n, request):
        # Hangs past both tries, until the test is over: the server's shutdown waits for its handlers.
        await over.wait()
        return web.Response(text="late")

    async with Front(hang) as front, client(front.url, tmp_path, timeout_s=0.5) as remote:
        try:
            with pytest.raises(InferenceUnavailable, match=r"did not answer within 0\.5 s"):
                await remote.classify(b"photo", "digit")
        finally:
            over.set()
    assert front.requests == 2


async def test_a_failing_proxy_is_tried_once_more_then_unavailable(tmp_path):
    async def fail(n, request):
        return web.Response(status=500, text="Internal Server Error")

    async with Front(fail) as front, client(front.url, tmp_path) as remote:
        with pytest.raises(InferenceUnavailable, match="HTTP 500"):
            await remote.classify(b"photo", "auto")
    assert front.requests == 2


async def test_a_failed_first_try_is_answered_by_the_retry(tmp_path):
    answer = Prediction("digits", 3, "7", 0.9, "ok", (("7", 0.9), ("1", 0.05)), (DigitAnswer("7", 0.9, ()),))

    async def flaky(n, request):
        if n == 1:
            return web.Response(status=503, text="no replica")  # a replica that died mid-request
        assert request.query["mode"] == "digit"
        assert await request.read() == b"photo"
        return web.Response(body=dumps({"prediction": answer.to_json()}), content_type="application/json")

    async with Front(flaky) as front, client(front.url, tmp_path) as remote:
        got = await remote.classify(b"photo", "digit")
    assert front.requests == 2
    assert (got.model, got.version, got.label, got.status) == ("digits", 3, "7", "ok")
    assert got.digits == answer.digits


async def test_a_photo_the_service_refuses_is_not_sent_again(tmp_path):
    refused = UnsupportedImage("not an image", reason="not_image")

    async def refuse(n, request):
        status, body = error_json(refused)
        return web.Response(status=status, body=dumps(body), content_type="application/json")

    async with Front(refuse) as front, client(front.url, tmp_path) as remote:
        with pytest.raises(UnsupportedImage) as caught:
            await remote.classify(b"text", "auto")
    assert front.requests == 1
    assert caught.value.reason == "not_image"


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (UnsupportedImage("x", reason="too_small", width=3, height=4), 422),
        (ImageTooLarge("x", reason="pixels_jpeg", width=1, height=2, megapixels=0.5, limit=1.0), 422),
        (EngineBusy("full"), 503),
        (ModelUnavailable("none"), 503),
        (DeadlineExceeded("late"), 504),
    ],
)
def test_errors_keep_their_class_reason_and_values_over_the_wire(error, status):
    code, body = error_json(error)
    again = error_from_json(body)
    assert code == status
    assert (type(again), str(again), again.reason, again.values) == (
        type(error),
        str(error),
        error.reason,
        error.values,
    )
