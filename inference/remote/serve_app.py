"""The Ray Serve application: `photobot serve inference` runs it, the bot reaches it at INFERENCE_URL.

    POST /classify?mode=…  (the photo's bytes, through Ray Serve's HTTP proxy)
        │
        ▼
    PhotoAnswers — the ingress, CPU replicas: decoding and preprocessing in its pool (`prepare_photo`)
        │          and the chat modes' and auto mode's decisions (`inference.answering`): the embedded
        │          Classifier's own code, so both engines answer a photo alike
        ▼ prepared rows, through a DeploymentHandle
    ModelServer — one deployment per catalogue model ("model-digits", "model-flowers", taught ones): the
                   model store's active version, loaded as the Classifier loads it (`load_version`:
                   LiteRT on a CPU, Keras on a GPU), rows from every ingress replica gathered by
                   `@serve.batch` into one model call, the adapter's answer (the flowers' refusal, the
                   digit reader's rules) → Prediction. It follows promotions by polling the store's
                   pointer, like the Classifier, and each answer names the version that gave it.

One deployment per model rather than one per backbone: every version is its own `.keras` file, with its
own promotions and rollbacks, and the flower model and each taught model carry their backbone inside it;
a replica per model scales with that model's load, and on a GPU node holds one model on its GPU.

This is the only module that imports Ray; nothing on the embedded path imports it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast

import numpy as np
from ray import serve
from ray.serve.handle import DeploymentHandle
from starlette.requests import Request
from starlette.responses import Response

from inference.answering import Answering
from inference.catalogue import Catalogue
from inference.classifier import ModelStatus, StoreLooks
from inference.engine import BatchStats, EngineConfig, Timed, slice_outputs
from inference.errors import DeadlineExceeded, EngineBusy, InferenceError, ModelUnavailable
from inference.loading import LoadedModel, load_version
from inference.model_store import ModelStore, ModelVersion
from inference.pool import Pool, make_pool
from inference.prediction import Prediction
from inference.preparation import (
    Adapter,
    Plan,
    adapter_for,
    check_fits,
    fit_rows,
    prepare_photo,
    preprocessing_id,
)
from inference.remote.config import ServeConfig
from inference.remote.metrics import IngressMetrics, ModelMetrics
from inference.remote.protocol import (
    CLASSIFY_PATH,
    HEALTH_PATH,
    MODELS_PATH,
    dumps,
    error_json,
    prediction_json,
    status_json,
)

log = logging.getLogger(__name__)

INGRESS = "photo-answers"
MODEL_DEPLOYMENT = "model-{name}"


# ------------------------------------------------------------------------------------ one model


@dataclass(frozen=True)
class Ask:
    """One photo's rows for a model, prepared for the preprocessing named."""

    inputs: np.ndarray
    preprocessing: str
    enqueued: float = field(default_factory=time.monotonic)


@dataclass(frozen=True)
class _Loaded:
    loaded: LoadedModel
    adapter: Adapter

    @property
    def version(self) -> ModelVersion:
        return self.loaded.version


Answer = Timed[Prediction] | InferenceError


def _rows(asks: list[Ask]) -> int:
    """A batch's size in model rows, as the embedded engine counts it (a number is a row per digit)."""
    return sum(len(ask.inputs) for ask in asks)


class ModelServer:
    """One catalogue model: its serving version, answering batches of prepared photos."""

    def __init__(
        self,
        name: str,
        open_store: Callable[[], ModelStore],
        catalogue: Catalogue,
        engine: EngineConfig,
        config: ServeConfig,
    ) -> None:
        self.name = name
        self.store = open_store()
        self.catalogue = catalogue
        self.engine = engine
        batched = cast(Any, self.answer_batch)
        batched.set_max_batch_size(max(1, config.max_batch))
        batched.set_batch_wait_timeout_s(config.batch_wait_s)
        self._serving: _Loaded | None = None
        self._refused: dict[int, str] = {}
        self._swaps = 0
        self._stats = BatchStats()
        self._metrics = ModelMetrics(name)
        self._store_looks = StoreLooks()
        self.follow()  # a replica is healthy once it serves: loading (and converting) happens here
        if engine.reload_poll_s > 0:
            threading.Thread(target=self._poll, name=f"follow-{name}", daemon=True).start()

    async def answer(self, inputs: np.ndarray, preprocessing: str) -> Answer:
        """One photo's rows → its answer (or the error of this photo alone), batched with others."""
        return await self.answer_batch(Ask(inputs, preprocessing))

    @serve.batch(batch_size_fn=_rows)
    async def answer_batch(self, asks: list[Ask]) -> list[Answer]:
        # In a thread: the replica's event loop keeps taking requests, which form the next batch.
        return await asyncio.to_thread(self._run, asks)

    def describe(self) -> tuple[ModelVersion | None, ModelStatus]:
        """The version this replica serves, and its status as `Classifier.models()` reports one."""
        serving = self._serving
        loaded = serving.loaded if serving else None
        status = ModelStatus.of(
            self.name,
            loaded,
            swaps=self._swaps,
            queued=0,
            batches=self._stats.snapshot(),
            refused=self._refused,
        )
        return (loaded.version if loaded else None), status

    def follow(self) -> None:
        """Serve the store's active version when it changed: loaded and warmed beside the old one, then
        one reference switches (a version that does not load is refused and the old one keeps serving)."""
        active = self.store.active_version(self.name)
        current = self._serving
        if active is None or active in self._refused or (current and current.version.version == active):
            return
        still = f"v{current.version.version} keeps serving" if current else "nothing serves it"
        try:
            target = self.store.get(self.name, active)
            adapter = adapter_for(target, self.catalogue)
            loaded = load_version(
                target,
                max_batch=self.engine.max_batch,
                padded_sizes=self.engine.padded_sizes(),
                runtime=self.engine.runtime,
            )
            check_fits(loaded, adapter)
        except ModelUnavailable as error:
            self._refused[active] = str(error)
            log.error("%s v%d refused (%s): %s", self.name, active, still, error)
            return
        self._serving = _Loaded(loaded, adapter)
        self._swaps += current is not None
        self._metrics.serving(active)
        log.info("%s v%d serving on %s %s", self.name, active, loaded.backend, loaded.device)

    def _poll(self) -> None:
        while True:
            time.sleep(self.engine.reload_poll_s)
            self.follow_store()

    def follow_store(self) -> None:
        """`follow`, as the poller does: a store that cannot be read is logged once when that starts and
        once when it ends, and the version loaded keeps serving."""
        try:
            self.follow()
        except Exception as error:
            self._store_looks.went(error, f"{self.name}: ")
        else:
            self._store_looks.went(None, f"{self.name}: ")

    def _run(self, asks: list[Ask]) -> list[Answer]:
        serving = self._serving  # one version for the whole batch, even if a swap happens meanwhile
        answers: list[Answer | None] = [None] * len(asks)
        live = []
        for i, ask in enumerate(asks):
            if serving is None:
                answers[i] = ModelUnavailable(f"{self.name}: no version is loaded on this replica")
            elif ask.preprocessing != preprocessing_id(serving.version, self.catalogue):
                answers[i] = ModelUnavailable(
                    f"{self.name} v{serving.version.version} takes other inputs than the photo was "
                    "prepared for (a new version took over); try again"
                )
            else:
                live.append(i)
        if serving is not None and live:
            for i, answer in zip(live, self._run_group(serving, [asks[i] for i in live]), strict=True):
                answers[i] = answer
        return [a if a is not None else ModelUnavailable(self.name) for a in answers]

    def _run_group(self, serving: _Loaded, asks: list[Ask]) -> list[Answer]:
        """One model call for the batch; a batch that fails is retried one photo at a time, so a photo
        that breaks the model fails alone (as in the embedded engine)."""
        started = time.monotonic()
        inputs = [fit_rows(ask.inputs, serving.loaded.row_shape) for ask in asks]
        try:
            outputs = serving.loaded.run(inputs[0] if len(inputs) == 1 else np.concatenate(inputs))
        except Exception as error:
            if len(asks) > 1:
                log.warning("%s: a batch of %d failed (%s); one by one", self.name, len(asks), error)
                return [answer for ask in asks for answer in self._run_group(serving, [ask])]
            log.exception("%s: the model call failed", self.name)
            self._stats.failed += 1
            self._metrics.failed()
            return [ModelUnavailable(f"the model could not answer this photo ({type(error).__name__})")]
        model_ms = (time.monotonic() - started) * 1000.0
        rows = sum(len(rows) for rows in inputs)
        self._stats.batches += 1
        self._stats.requests += len(asks)
        self._stats.rows += rows
        self._stats.sizes[rows] += 1
        self._metrics.batch(rows, model_ms / 1000.0)
        answers: list[Answer] = []
        offset = 0
        for ask, mine in zip(asks, inputs, strict=True):
            part = slice_outputs(outputs, offset, offset + len(mine))
            offset += len(mine)
            try:
                prediction = serving.adapter.answer(part, serving.version)
            except Exception as error:
                log.exception("%s: turning model outputs into an answer failed", self.name)
                self._stats.failed += 1
                self._metrics.failed()
                answers.append(ModelUnavailable(f"the answer could not be made ({type(error).__name__})"))
                continue
            answers.append(Timed(prediction, (started - ask.enqueued) * 1000.0, model_ms, rows))
        return answers


# ---------------------------------------------------------------------------------- the ingress


@dataclass(frozen=True)
class _Remote:
    """A model deployment's serving version, as the ingress prepares photos for it."""

    version: ModelVersion
    adapter: Adapter


class PhotoAnswers(Answering[_Remote]):
    """The HTTP ingress: photo bytes → Prediction JSON, the models answered by their deployments."""

    def __init__(
        self,
        models: Mapping[str, DeploymentHandle[Any]],
        catalogue: Catalogue,
        engine: EngineConfig,
        *,
        decode_workers: int,
        max_image_bytes: int,
        max_image_pixels: int,
    ) -> None:
        self.catalogue = catalogue
        self.engine = engine
        self.max_image_bytes = max_image_bytes
        self.max_image_pixels = max_image_pixels
        self._handles = dict(models)
        self._known: dict[str, _Remote | None] = dict.fromkeys(models)
        self._statuses: dict[str, ModelStatus] = {}
        self._checked = float("-inf")
        self._checking = asyncio.Lock()
        self._decode_workers = decode_workers
        self._pool: Pool | None = None
        self._pending = 0
        self._metrics = IngressMetrics()

    async def __call__(self, request: Request) -> Response:
        path = request.url.path.rstrip("/")
        if path.endswith(CLASSIFY_PATH) and request.method == "POST":
            return await self._classify_request(request)
        if path.endswith(MODELS_PATH):
            await self._check(force=True)
            return _json(200, {"models": {name: status_json(s) for name, s in self._statuses.items()}})
        if path.endswith(HEALTH_PATH) or not path:
            return Response(b"ok", media_type="text/plain")
        return _json(404, {"error": "NotFound", "message": f"no such path: {request.url.path}"})

    async def _classify_request(self, request: Request) -> Response:
        mode = request.query_params.get("mode", "auto")
        if mode not in self.catalogue.modes:
            error = ModelUnavailable(f"this service has no {mode!r} mode ({', '.join(self.catalogue.modes)})")
            return _json(*error_json(error))
        data = await request.body()
        started = time.monotonic()
        try:
            prediction = await self.classify(data, mode)
        except InferenceError as error:
            self._metrics.failed(error)
            return _json(*error_json(error))
        self._metrics.answered(prediction, time.monotonic() - started)
        return _json(200, prediction_json(prediction))

    async def classify(self, data: bytes, mode: str) -> Prediction:
        """As `Classifier.classify`: bounded waiting, one deadline for the whole answer."""
        if self._pending >= self.engine.queue_size:
            raise EngineBusy(f"{self._pending} photos are being answered; try again in a moment")
        self._pending += 1
        self._metrics.in_progress(self._pending)
        started = time.monotonic()
        try:
            await self._start()
            await self._check()
            async with asyncio.timeout(self.engine.deadline_s):
                prediction = await self._classify(data, mode, started + self.engine.deadline_s)
        except TimeoutError:
            raise DeadlineExceeded(f"no answer within {self.engine.deadline_s:g} s") from None
        finally:
            self._pending -= 1
            self._metrics.in_progress(self._pending)
        timings = {**prediction.timings_ms, "total": (time.monotonic() - started) * 1000.0}
        return replace(prediction, timings_ms={k: round(v, 3) for k, v in timings.items()})

    # The engine's parts (inference.answering).

    def _serving(self) -> dict[str, _Remote | None]:
        return self._known

    async def _prepare(self, data: bytes | Path, target: str | None, servings: dict[str, _Remote]) -> Plan:
        preprocessing = {name: preprocessing_id(s.version, self.catalogue) for name, s in servings.items()}
        pool = self._pool
        if pool is None:
            raise ModelUnavailable("the ingress is not started")
        return await pool.run(
            prepare_photo,
            data,
            target,
            preprocessing,
            max_bytes=self.max_image_bytes,
            max_pixels=self.max_image_pixels,
        )

    async def _answer(
        self, plan: Plan, servings: dict[str, _Remote], deadline: float, timings: dict[str, float]
    ) -> dict[str, Prediction]:
        answers: dict[str, Prediction] = {}
        asked: dict[str, Any] = {}
        for name, (inputs, reason) in plan.items.items():
            serving = servings[name]
            if inputs is None:
                answers[name] = serving.adapter.nothing(serving.version, reason)
                continue
            preprocessing = preprocessing_id(serving.version, self.catalogue)
            asked[name] = self._handles[name].answer.remote(inputs, preprocessing)
        results = await asyncio.gather(*asked.values())
        for name, result in zip(asked, results, strict=True):
            if isinstance(result, InferenceError):
                raise result
            answered = cast(Timed[Prediction], result)
            answers[name] = answered.value
            timings["queue"] = max(timings.get("queue", 0.0), answered.queue_ms)
            timings["model"] = max(timings.get("model", 0.0), answered.model_ms)
            timings["batch"] = max(timings.get("batch", 0.0), float(answered.batch_rows))
        return answers

    # What serves: read from the model deployments, at most once per poll interval.

    async def _start(self) -> None:
        if self._pool is not None:
            return
        async with self._checking:
            if self._pool is None:
                # Threads, whatever ENGINE_POOL says: a replica is Ray's unit of CPU (more photos, more
                # replicas), and decode processes spawned inside one were lost under load here (the
                # pool watches their pipes from the loop it started on, and Serve's request handling is
                # not bound to one). The decoder's byte and pixel limits hold in threads too.
                pool = make_pool("thread", self._decode_workers)
                await pool.start()
                self._pool = pool

    async def _check(self, *, force: bool = False) -> None:
        now = time.monotonic()
        poll = self.engine.reload_poll_s or 2.0
        if not force and now - self._checked < poll and any(self._known.values()):
            return
        self._checked = now
        described = await asyncio.gather(
            *(handle.describe.remote() for handle in self._handles.values()), return_exceptions=True
        )
        for name, found in zip(self._handles, described, strict=True):
            if isinstance(found, BaseException):
                log.warning("%s: its deployment did not say what it serves: %r", name, found)
                continue
            version, status = found
            self._statuses[name] = status
            self._known[name] = (
                _Remote(version, adapter_for(version, self.catalogue)) if version is not None else None
            )


def _json(status: int, body: dict[str, Any]) -> Response:
    return Response(dumps(body), status_code=status, media_type="application/json")


# ------------------------------------------------------------------------------- the application


def build_app(
    open_store: Callable[[], ModelStore],
    catalogue: Catalogue,
    engine: EngineConfig,
    config: ServeConfig,
    *,
    gpus: float,
    max_image_bytes: int,
    max_image_pixels: int,
    log_format: str = "text",
) -> serve.Application:
    """The application graph: a ModelServer deployment per catalogue model behind the ingress.

    `gpus` per model replica (0: CPU replicas); autoscaling between the config's bounds, each replica
    taking up to twice a batch of requests at once so that `@serve.batch` has a batch to gather.
    """
    autoscaling = {
        "min_replicas": config.min_replicas,
        "max_replicas": max(config.min_replicas, config.max_replicas),
        "target_ongoing_requests": config.target_ongoing_requests,
    }
    threads = str(max(1, int(config.cpus_per_replica)))
    # One TensorFlow inter-op thread and as many intra-op threads as the replica has CPUs (see
    # photobot.serving: the models are chains of layers).
    environment = {"TF_NUM_INTEROP_THREADS": "1", "TF_NUM_INTRAOP_THREADS": threads}
    # No line per request in the replicas' logs: at hundreds of photos a second that is CPU and disk.
    # LOG_FORMAT=json: the replicas' log files are JSON lines too (Ray Serve's own encoding).
    quiet = {"enable_access_log": False, "encoding": "JSON" if log_format == "json" else "TEXT"}
    models = {}
    for spec in catalogue:
        deployment = serve.deployment(
            name=MODEL_DEPLOYMENT.format(name=spec.name),
            autoscaling_config=autoscaling,
            # Photos wait in the replica's batch queue (as in the engine's, up to ENGINE_QUEUE_SIZE), not
            # in the callers' routers, which retry a full replica with a growing backoff.
            max_ongoing_requests=max(2 * config.max_batch, engine.queue_size),
            logging_config=quiet,
            ray_actor_options={
                "num_cpus": config.cpus_per_replica,
                "num_gpus": gpus,
                "runtime_env": {"env_vars": environment},
            },
        )(ModelServer)
        # Its own entry only: all it needs, so another model joining the catalogue changes nothing here.
        own = catalogue.only([spec.name])
        models[spec.name] = deployment.bind(spec.name, open_store, own, engine, config)
    ingress = serve.deployment(
        name=INGRESS,
        autoscaling_config=autoscaling,
        max_ongoing_requests=max(2, engine.queue_size),
        max_queued_requests=engine.queue_size,
        logging_config=quiet,
        ray_actor_options={"num_cpus": config.cpus_per_replica, "runtime_env": {"env_vars": environment}},
    )(PhotoAnswers)
    app: serve.Application = ingress.bind(
        models,
        catalogue,
        engine,
        decode_workers=engine.workers or max(1, math.ceil(config.cpus_per_replica)),
        max_image_bytes=max_image_bytes,
        max_image_pixels=max_image_pixels,
    )
    return app


def cluster_gpus() -> float:
    """GPUs the Ray cluster has (0 on a CPU-only cluster)."""
    import ray

    resources: dict[str, float] = ray.cluster_resources()  # type: ignore[no-untyped-call]
    return float(resources.get("GPU", 0.0))
