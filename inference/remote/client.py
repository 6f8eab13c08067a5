"""The bot's side of inference on Ray Serve: the Classifier's interface over HTTP (INFERENCE_URL).

    classifier = RemoteClassifier(RemoteConfig("http://inference:8000"), store, catalogue=…)
    await classifier.start()
    prediction = await classifier.classify(path, "auto")   # the same Prediction the engine gives

Each photo is one POST with a timeout; after a connection error, a timeout or a 5xx it is sent once
more, and Ray Serve's proxy routes the retry anew (a replica that died is out of its routing table).
A photo the service refuses (unreadable, too large) keeps its error's class and reason, so the bot
answers with the same words as with its own engine; a service that cannot answer at all, also on the
retry, is `InferenceUnavailable`. The service's models follow the model store's pointers themselves;
`models()` reports what they serve, read every few seconds. Imports no Ray.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp

from inference.catalogue import DEFAULT_CATALOGUE, Catalogue, ModelSpec
from inference.classifier import ModelStatus
from inference.errors import EngineBusy, InferenceError, InferenceUnavailable, ModelUnavailable
from inference.model_store import ModelStore, ModelVersion
from inference.prediction import Mode, Prediction
from inference.preparation import read_photo
from inference.remote.config import RemoteConfig
from inference.remote.protocol import (
    CLASSIFY_PATH,
    MODELS_PATH,
    RETRIED,
    error_from_json,
    prediction_from_json,
    status_from_json,
)

log = logging.getLogger(__name__)

# How long `reload` waits for the service's replicas to serve a promoted version (they poll the store's
# pointer every ENGINE_RELOAD_POLL_S, and a version new to a replica is loaded and converted first).
RELOAD_WAIT_S = 60.0


class RemoteClassifier:
    """Photo → Prediction by the Ray Serve application at `config.url`."""

    def __init__(
        self,
        config: RemoteConfig,
        store: ModelStore,
        *,
        catalogue: Catalogue = DEFAULT_CATALOGUE,
        names: Iterable[str] | None = None,
        queue_size: int = 256,
        max_image_bytes: int = 20 * 1024 * 1024,
    ) -> None:
        self.config = config
        self.store = store
        self.catalogue = catalogue if names is None else catalogue.only(names)
        self.queue_size = queue_size
        self.max_image_bytes = max_image_bytes
        self._url = config.url.rstrip("/")
        self._statuses: dict[str, ModelStatus] = {}
        self._session: aiohttp.ClientSession | None = None
        self._pending = 0
        self._poller: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Open the connection pool and read what the service serves. A service that is down is logged,
        not fatal: the bot starts, and tells people inference is down until it is back."""
        if self._session is not None:
            return
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=self.queue_size))
        await self._assume_store_versions()
        try:
            await self.refresh()
        except InferenceUnavailable as error:
            log.warning("The inference service is not answering yet (%s); photos wait for it", error)
        if self.config.status_poll_s > 0:
            self._poller = asyncio.create_task(self._poll(), name="photobot-inference-status")

    async def close(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
            self._poller = None
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    async def __aenter__(self) -> RemoteClassifier:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # Serving.

    def has_room(self, coming: int = 0) -> bool:
        """Whether one more photo may be sent now (the service bounds its own queues too)."""
        return self._session is not None and self._pending + coming < self.queue_size

    async def classify(self, data: bytes | Path, mode: Mode = "auto") -> Prediction:
        """Answer one photo as `Classifier.classify` does; raises InferenceUnavailable when the service
        cannot answer, also on the retry."""
        if mode not in self.catalogue.modes:
            raise ValueError(f"mode must be one of {', '.join(self.catalogue.modes)}, not {mode!r}")
        if self._session is None:
            raise ModelUnavailable("the classifier is not started")
        if self._pending >= self.queue_size:
            raise EngineBusy(f"{self._pending} photos are being answered; try again in a moment")
        self._pending += 1
        started = time.monotonic()
        try:
            body = (
                data
                if isinstance(data, bytes)
                else await asyncio.to_thread(read_photo, data, self.max_image_bytes)
            )
            prediction = await self._post(body, mode)
        finally:
            self._pending -= 1
        timings = {**prediction.timings_ms, "remote_total": (time.monotonic() - started) * 1000.0}
        return replace(prediction, timings_ms={k: round(v, 3) for k, v in timings.items()})

    async def _read(self, path: Path) -> bytes:
        return await asyncio.to_thread(read_photo, path, self.max_image_bytes)

    async def _post(self, body: bytes, mode: Mode) -> Prediction:
        failure: InferenceError | None = None
        for attempt in range(1 + max(0, self.config.retries)):
            if attempt:
                log.warning("Inference failed (%s); trying again", failure)
            try:
                status, payload = await self._request("POST", CLASSIFY_PATH, params={"mode": mode}, data=body)
            except InferenceUnavailable as unreachable:
                failure = unreachable
                continue
            if status == 200 and payload is not None and "prediction" in payload:
                return prediction_from_json(payload)
            if payload is not None and "error" in payload:
                refused = error_from_json(payload)
                if type(refused) not in RETRIED:
                    raise refused  # this photo's own problem, or its deadline spent: not sent again
                failure = refused
            elif status == 503 and payload is None:
                failure = EngineBusy(f"{self._url} refused the photo: its queues are full (HTTP 503)")
            else:
                failure = InferenceUnavailable(f"{self._url} answered HTTP {status}")
        assert failure is not None
        raise failure

    async def _request(self, method: str, path: str, **kwargs: Any) -> tuple[int, dict[str, Any] | None]:
        """One HTTP call: the status and the JSON body (None if it is not JSON); a connection error or
        the timeout is InferenceUnavailable."""
        session = self._session
        if session is None:
            raise ModelUnavailable("the classifier is not started")
        timeout = aiohttp.ClientTimeout(total=self.config.timeout_s)
        try:
            async with session.request(method, self._url + path, timeout=timeout, **kwargs) as response:
                try:
                    payload = await response.json(content_type=None)
                except ValueError:
                    payload = None
                return response.status, payload if isinstance(payload, dict) else None
        except TimeoutError:
            raise InferenceUnavailable(
                f"{self._url} did not answer within {self.config.timeout_s:g} s"
            ) from None
        except aiohttp.ClientError as error:
            raise InferenceUnavailable(f"{self._url} cannot be reached: {error}") from error

    # What serves.

    def models(self) -> dict[str, ModelStatus]:
        """What the service serves, per model name of this bot (as last read)."""
        return {name: status for name, status in self._statuses.items() if name in self.catalogue}

    async def reload(self, name: str) -> ModelVersion:
        """Wait until the service serves the store's active version of `name` (its replicas follow the
        pointer themselves); raises ModelUnavailable when they refused it. A service that is down, or
        still switching after RELOAD_WAIT_S, is logged: its replicas take the version when they can."""
        if name not in self.catalogue:
            raise ModelUnavailable(f"no model called {name!r} (known: {', '.join(self.catalogue.names)})")
        active = await asyncio.to_thread(self.store.active, name)
        if active is None:
            raise ModelUnavailable(f"{name} has no active version in {self.store.root}")
        until = time.monotonic() + RELOAD_WAIT_S
        while True:
            try:
                await self.refresh()
            except InferenceUnavailable as error:
                log.warning(
                    "%s v%d: the inference service will load it when it is back (%s)",
                    name,
                    active.version,
                    error,
                )
                return active
            status = self._statuses.get(name)
            if status is not None and status.version == active.version:
                return active
            if status is not None and active.version in status.refused:
                raise ModelUnavailable(status.refused[active.version])
            if time.monotonic() > until:
                log.warning("%s v%d: the inference service is still switching to it", name, active.version)
                return active
            await asyncio.sleep(0.5)

    async def add_model(self, spec: ModelSpec) -> None:
        """A model taught from the chat: known here at once; the service answers for it once it has a
        deployment for it (`photobot serve inference` adds one when the model appears)."""
        self.catalogue = self.catalogue.with_model(spec)

    async def remove_model(self, name: str) -> None:
        self.catalogue = Catalogue(spec for spec in self.catalogue if spec.name != name)
        self._statuses.pop(name, None)

    async def refresh(self) -> None:
        """Read what the service serves now (`models()` reports it); InferenceUnavailable if it is down."""
        status, payload = await self._request("GET", MODELS_PATH)
        if status != 200 or payload is None or "models" not in payload:
            raise InferenceUnavailable(f"{self._url}{MODELS_PATH} answered HTTP {status}")
        for name, data in payload["models"].items():
            self._statuses[name] = status_from_json(data)

    async def _assume_store_versions(self) -> None:
        """Until the service is reached, each model is taken to serve the store's active version, so a
        labelled photo goes to the service (and is kept when it is down) rather than being taken for a
        model still learning."""
        for name in self.catalogue.names:
            version = await asyncio.to_thread(self.store.active_version, name)
            if version is not None:
                self._statuses[name] = ModelStatus(
                    name, version, None, (), "remote", None, None, 0, 0, {}, {}
                )

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.config.status_poll_s)
            try:
                await self.refresh()
            except InferenceUnavailable:
                pass  # each photo finds out, and says so
            except Exception:
                log.exception("Reading the inference service's models failed; will try again")
