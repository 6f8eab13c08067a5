"""The Classifier: photo bytes → Prediction, for the bot and the command line.

    classifier = Classifier(ModelStore(models_dir), EngineConfig(...), max_image_bytes=…, max_image_pixels=…)
    await classifier.start()                      # seed shipped defaults, load + warm every model
    prediction = await classifier.classify(data, "auto")
    await classifier.reload("digits")             # hot swap to the store's active version
    classifier.models()                           # what serves: versions, backend, device, batch stats
    await classifier.close()

The event loop only admits, submits and awaits: decoding and preprocessing run in a pool of worker
processes sized to the cores (`inference.pool`; threads on request), the models in one batching worker
per model (`inference.engine`) — except a small model served by LiteRT (the digit CNN, see
IN_DECODE_WORKERS), which the decode processes run themselves right after preparing the photo.
Which preprocessing a version needs is read from its meta.json ("preprocessing"), so a model and its
adapter always match.

Hot swap: `reload` loads and warms the new version beside the old (in a thread, while the old one
keeps serving), then switches one reference. A request already prepared for the old version is
answered by it; a new request goes to the new one. A version that fails to load or to warm up is
reported (ModelUnavailable) and the old one keeps serving. A background task polls the store's
`active` pointers, so a promotion made by another process (`photobot models promote`, a retraining
job) is picked up without a restart.

LiteRT (`inference.lite`, the default on the CPU) needs a version converted once, ~11 s for the flower
model. A version with no cached conversion yet is therefore served by Keras at once, converted in the
background, and switched to LiteRT in place when the conversion checks out, the same way as a hot swap.
The conversion runs in a process of its own that `close` kills, so stopping never waits for it
(`inference.converting`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from inference.answering import Answering
from inference.catalogue import DEFAULT_CATALOGUE, Catalogue, ModelKind, ModelSpec
from inference.converting import convert_in_process
from inference.decode import limit_memory
from inference.engine import BatchWorker, EngineConfig, Timed
from inference.errors import DeadlineExceeded, EngineBusy, ModelUnavailable
from inference.lite import LiteModel, has_conversion, wants_lite
from inference.loading import LoadedModel, load_conversion, load_version
from inference.model_store import ModelStore, ModelVersion
from inference.pool import Pool, ProcessPool, Setup, make_pool
from inference.prediction import Mode, Prediction
from inference.preparation import (
    ADAPTERS,
    Adapter,
    Plan,
    WorkerModel,
    adapter_for,
    check_fits,
    fit_rows,
    prepare_photo,
    preprocessing_id,
    read_photo,
)
from inference.seeding import SHIPPED_DIR, Seeder, seed_model, seed_shipped

# Re-exported: the rest of the code and the tests reach these through the classifier.
__all__ = [
    "ADAPTERS",
    "SHIPPED_DIR",
    "Adapter",
    "Classifier",
    "ModelStatus",
    "Seeder",
    "adapter_for",
    "prepare_photo",
    "preprocessing_id",
    "read_photo",
    "seed_model",
    "seed_shipped",
]

log = logging.getLogger(__name__)

# Kinds of model the decode processes run themselves, right after preparing a photo, when LiteRT serves
# them: a digit CNN takes ~0.3 ms, less than handing its crops to a batching thread in the bot's process
# and back (~1 ms of that process's CPU and GIL, and waiting under load). An image classifier (~15 ms)
# stays with its engine, where photos batch.
IN_DECODE_WORKERS = frozenset({ModelKind.DIGIT_READER})


# --------------------------------------------------------------------------------------- the state


@dataclass
class _Serving:
    """A loaded version with its adapter: what one request is prepared for and answered by."""

    loaded: LoadedModel
    adapter: Adapter
    worker_model: WorkerModel | None = None  # how a decode process runs it itself (IN_DECODE_WORKERS)

    @property
    def version(self) -> ModelVersion:
        return self.loaded.version


@dataclass
class _Slot:
    name: str
    worker: BatchWorker
    serving: _Serving | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    refused: dict[int, str] = field(default_factory=dict)  # version → why it could not be loaded
    swaps: int = 0
    in_workers: int = 0  # photos whose model the decode processes ran (IN_DECODE_WORKERS)


@dataclass(frozen=True)
class ModelStatus:
    """What `models()` reports for one model name."""

    name: str
    version: int | None  # None: nothing serves this name
    preprocessing: str | None
    labels: tuple[str, ...]
    backend: str | None
    device: str | None
    load_ms: float | None
    swaps: int
    queued: int
    batches: dict[str, Any]
    refused: dict[int, str]  # versions that could not be loaded, and why
    in_workers: int = 0  # photos whose model ran in the decode processes, not in `batches`

    @classmethod
    def of(
        cls,
        name: str,
        loaded: LoadedModel | None,
        *,
        swaps: int,
        queued: int,
        batches: dict[str, Any],
        refused: Mapping[int, str],
        in_workers: int = 0,
    ) -> ModelStatus:
        """The status of `name` served by `loaded` (None: nothing serves it); the Classifier and a Ray
        Serve replica report alike."""
        return cls(
            name=name,
            version=loaded.version.version if loaded else None,
            preprocessing=loaded.version.meta.get("preprocessing") if loaded else None,
            labels=tuple(loaded.version.labels) if loaded else (),
            backend=loaded.backend if loaded else None,
            device=loaded.device if loaded else None,
            load_ms=round(loaded.load_ms, 1) if loaded else None,
            swaps=swaps,
            queued=queued,
            batches=batches,
            refused=dict(refused),
            in_workers=in_workers,
        )


@dataclass
class StoreLooks:
    """How a poller's looks at the model store go: a store that cannot be read (a shared store's
    database down) is logged in one line when that starts and one when it ends, not at every poll."""

    failing: bool = False

    def went(self, failed: Exception | None, where: str = "") -> None:
        """After a look: `failed` is the error it met, None when it read the store."""
        if failed is not None and not self.failing:
            why = " ".join(f"{type(failed).__name__}: {failed}".split())  # one line
            log.warning("%sthe model store cannot be read (%s); what is loaded keeps serving", where, why)
        elif failed is None and self.failing:
            log.warning("%sthe model store can be read again", where)
        self.failing = failed is not None


# ----------------------------------------------------------------------------------- the classifier


class Classifier(Answering[_Serving]):
    """Photo bytes → Prediction with micro-batched models, hot-swappable versions and bounded queues."""

    def __init__(
        self,
        store: ModelStore,
        config: EngineConfig | None = None,
        *,
        max_image_bytes: int = 20 * 1024 * 1024,
        max_image_pixels: int = 40_000_000,
        catalogue: Catalogue = DEFAULT_CATALOGUE,
        names: Iterable[str] | None = None,
        shipped_dir: Path | None = SHIPPED_DIR,
        seeders: Mapping[str, Seeder] | None = None,
    ) -> None:
        self.store = store
        self.catalogue = catalogue  # every mode is known; `names` limits what serves
        self.config = config or EngineConfig()
        self.max_image_bytes = max_image_bytes
        self.max_image_pixels = max_image_pixels
        self.shipped_dir = shipped_dir
        self._seeders = dict(seeders or {})
        self._preparing = 0  # photos in decoding/preprocessing: they may join the next batch
        self._slots = {
            name: _Slot(name, BatchWorker(name, self.config, coming=self._photos_coming))
            for name in (self.catalogue.names if names is None else self.catalogue.only(names).names)
        }
        self._pool: Pool | None = None
        self._pending = 0
        self._poller: asyncio.Task[None] | None = None
        self._conversions: set[asyncio.Task[None]] = set()
        self._started = False
        self._closing = False  # no conversion starts once closing has begun
        self._store_looks = StoreLooks()  # the poller's: an outage is said once, not at every poll

    # Life cycle.

    async def start(self) -> None:
        """Seed shipped defaults into an empty store, load and warm every model, start the workers.

        A model that cannot be loaded is logged and left out (classify then raises ModelUnavailable
        for it); the others serve.
        """
        if self._started:
            return
        # The workers run this module's functions (prepare_photo): they import it before the first photo.
        pool = make_pool(
            self.config.pool, self.config.decode_workers(), preload=(__name__,), setup=self._decode_setup()
        )
        await pool.start()
        self._pool = pool
        try:
            for slot in self._slots.values():
                await asyncio.to_thread(self._seed, slot.name)
                if await asyncio.to_thread(self._still_learning, slot.name):
                    log.info("%s: no version yet (a model taught from the chat before its first)", slot.name)
                else:
                    try:
                        await self.reload(slot.name)
                    except ModelUnavailable as error:
                        log.error("%s: nothing to serve: %s", slot.name, error)
                slot.worker.start()
        except BaseException:  # cut short (cancelled: stopped while starting): leave no process behind
            await self.close()
            raise
        self._started = True
        if self.config.reload_poll_s > 0:
            self._poller = asyncio.create_task(self._poll_store(), name="photobot-model-poller")

    async def add_model(self, spec: ModelSpec) -> None:
        """Serve a model created after the start (taught from the chat): it joins the catalogue at once,
        and serves as soon as the store has an active version of it (now, or when one is promoted)."""
        self.catalogue = self.catalogue.with_model(spec)
        if spec.name in self._slots:
            return
        slot = _Slot(spec.name, BatchWorker(spec.name, self.config, coming=self._photos_coming))
        self._slots[spec.name] = slot
        if not self._started:
            return  # start() starts its worker and loads it
        slot.worker.start()
        if await asyncio.to_thread(self.store.active_version, spec.name) is not None:
            try:
                await self.reload(spec.name)
            except ModelUnavailable as error:
                log.error("%s: nothing to serve: %s", spec.name, error)

    async def remove_model(self, name: str) -> None:
        """Stop serving a model that was deleted (its versions stay in the store)."""
        self.catalogue = Catalogue(spec for spec in self.catalogue if spec.name != name)
        slot = self._slots.pop(name, None)
        if slot is not None and self._started:
            await asyncio.to_thread(slot.worker.close)

    def _decode_setup(self) -> Setup | None:
        """A decode process's memory cap: a decompression bomb past the pixel caps fails its photo, not
        the machine (see `decode.limit_memory`)."""
        budget = self.config.decode_memory_mb << 20
        return (limit_memory, (budget,)) if budget > 0 else None

    async def close(self) -> None:
        """Stop polling and converting, answer what is queued, stop the workers and the decode pool."""
        self._closing = True
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
            self._poller = None
        for task in list(self._conversions):
            task.cancel()  # kills its converting process at once (inference.converting)
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for slot in self._slots.values():
            await asyncio.to_thread(slot.worker.close)
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()
        self._started = False
        self._closing = False

    async def __aenter__(self) -> Classifier:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # Serving.

    def has_room(self, coming: int = 0) -> bool:
        """Whether `classify` would take one more photo now, with `coming` more on their way to it (the
        bot's downloads): asked before a photo is downloaded, so a busy bot downloads nothing."""
        return self._pool is not None and self._pending + coming < self.config.queue_size

    async def classify(self, data: bytes | Path, mode: Mode = "auto") -> Prediction:
        """Answer one photo, given as bytes or as a file the decode processes read themselves. Raises
        UnsupportedImage / ImageTooLarge (this photo only), EngineBusy (too many photos waiting: try
        again), DeadlineExceeded, ModelUnavailable."""
        if mode not in self.catalogue.modes:
            raise ValueError(f"mode must be one of {', '.join(self.catalogue.modes)}, not {mode!r}")
        if self._pool is None:
            raise ModelUnavailable("the classifier is not started")
        if self._pending >= self.config.queue_size:
            raise EngineBusy(f"{self._pending} photos are being answered; try again in a moment")
        self._pending += 1
        started = time.monotonic()
        deadline = started + self.config.deadline_s
        try:
            async with asyncio.timeout(self.config.deadline_s):
                prediction = await self._classify(data, mode, deadline)
        except TimeoutError:
            raise DeadlineExceeded(f"no answer within {self.config.deadline_s:g} s") from None
        finally:
            self._pending -= 1
        timings = {**prediction.timings_ms, "total": (time.monotonic() - started) * 1000.0}
        return replace(prediction, timings_ms={k: round(v, 3) for k, v in timings.items()})

    async def _prepare(self, data: bytes | Path, target: str | None, servings: dict[str, _Serving]) -> Plan:
        """Decode and preprocess in the pool (threads, or processes where the GIL would serialise them)."""
        preprocessing = {name: preprocessing_id(s.version, self.catalogue) for name, s in servings.items()}
        run_here = {name: s.worker_model for name, s in servings.items() if s.worker_model is not None}
        pool = self._pool
        if pool is None:  # closed while this photo was on its way
            raise ModelUnavailable("the classifier is closed")
        self._preparing += 1
        try:
            return await pool.run(
                prepare_photo,
                data,
                target,
                preprocessing,
                max_bytes=self.max_image_bytes,
                max_pixels=self.max_image_pixels,
                run_here=run_here,
            )
        finally:
            self._preparing -= 1

    def _serving(self) -> dict[str, _Serving | None]:
        return {name: slot.serving for name, slot in self._slots.items()}

    def _photos_coming(self) -> int:
        """Read by the batching workers' threads: photos still being prepared (an int read is atomic)."""
        return self._preparing

    async def _answer(
        self, plan: Plan, servings: dict[str, _Serving], deadline: float, timings: dict[str, float]
    ) -> dict[str, Prediction]:
        """Submit every prepared input to its model's worker; await the answers together.

        Each input goes to the version it was prepared for (taken before preprocessing), so a hot swap
        in between cannot pair an input with a model that expects another preprocessing.
        """
        futures: dict[str, asyncio.Future[Timed[Prediction]]] = {}
        answers: dict[str, Prediction] = {}
        for name, (inputs, reason) in plan.items.items():
            serving = servings[name]
            if inputs is None:
                answers[name] = serving.adapter.nothing(serving.version, reason)
                continue
            if name in plan.outputs:  # the decode process ran this model itself
                answers[name] = serving.adapter.answer(plan.outputs[name], serving.version)
                timings["model"] = max(timings.get("model", 0.0), plan.model_ms)
                self._slots[name].in_workers += 1
                continue
            finish = functools.partial(serving.adapter.answer, version=serving.version)
            inputs = fit_rows(inputs, serving.loaded.row_shape)
            futures[name] = self._slots[name].worker.submit(serving.loaded, inputs, finish, deadline=deadline)
        try:
            results = await asyncio.gather(*futures.values())
        except BaseException:
            for future in futures.values():
                future.cancel()
            raise
        for name, result in zip(futures, results, strict=True):
            answers[name] = result.value
            timings["queue"] = max(timings.get("queue", 0.0), result.queue_ms)
            timings["model"] = max(timings.get("model", 0.0), result.model_ms)
            timings["batch"] = max(timings.get("batch", 0.0), float(result.batch_rows))
        return answers

    # Versions.

    async def reload(self, name: str) -> ModelVersion:
        """Serve the store's active version of `name`: load and warm it beside the old one, then switch.

        Returns the version now serving. Raises ModelUnavailable (and keeps serving the old version)
        when the active version is missing, corrupt, or cannot run.
        """
        slot = self._slots.get(name)
        if slot is None:
            raise ModelUnavailable(f"no model called {name!r} (known: {', '.join(self._slots)})")
        async with slot.lock:
            # In threads: a shared store reads its pointer from the database and fetches a version's
            # files on first use; whether a conversion is cached is named by the model file's SHA-256
            # (the flower model is ~20 MB). The event loop keeps serving during a hot swap.
            active = await asyncio.to_thread(self.store.active_version, name)
            if active is None:
                raise ModelUnavailable(f"{name} has no active version in {self.store.root}")
            current = slot.serving
            if current is not None and current.version.version == active:
                return current.version
            still = f"v{current.version.version} keeps serving" if current else "nothing serves it"
            try:
                target = await asyncio.to_thread(self.store.get, name, active)
            except ModelUnavailable as error:  # missing, or its files do not match their SHA-256
                slot.refused[active] = str(error)
                log.error("%s v%d refused (%s): %s", name, active, still, error)
                raise
            convert_later = self.config.runtime == "auto" and not await asyncio.to_thread(
                has_conversion, target.model_file
            )
            try:
                adapter = adapter_for(target, self.catalogue)
                loaded = await self._load(target, "keras" if convert_later else self.config.runtime)
                check_fits(loaded, adapter)
            except ModelUnavailable as error:
                slot.refused[target.version] = str(error)
                log.error("%s v%d refused (%s): %s", name, target.version, still, error)
                raise
            # the switch: new requests go to the new version
            slot.serving = _Serving(loaded, adapter, self._worker_model(adapter, loaded))
            slot.swaps += current is not None
            log.info(
                "%s v%d serving (%s) on %s %s; loaded and warmed in %.0f ms%s",
                name,
                target.version,
                target.meta.get("preprocessing", "?"),
                loaded.backend,
                loaded.device,
                loaded.load_ms,
                f", replacing v{current.version.version}" if current else "",
            )
            if convert_later and not self._closing and wants_lite("auto", loaded.backend, loaded.device):
                task = asyncio.create_task(self._serve_with_lite(slot, target), name=f"convert-{name}")
                self._conversions.add(task)
                task.add_done_callback(self._conversions.discard)
            return target

    def _worker_model(self, adapter: Adapter, loaded: LoadedModel) -> WorkerModel | None:
        """How the decode processes can run `loaded` themselves, if they should (IN_DECODE_WORKERS):
        a LiteRT conversion cached on disk, and processes (pool threads would share interpreters)."""
        model = loaded.model
        if adapter.kind not in IN_DECODE_WORKERS or not isinstance(self._pool, ProcessPool):
            return None
        if not isinstance(model, LiteModel) or model.file is None:
            return None
        return WorkerModel(str(model.file), model.outputs, loaded.row_shape)

    @property
    def converting(self) -> bool:
        """Whether a background conversion to LiteRT is running (`close` abandons it: the next start
        converts again)."""
        return bool(self._conversions)

    async def conversions_done(self) -> None:
        """Wait for the background conversions to LiteRT (benchmarks measure what serves for good)."""
        while self._conversions:
            await asyncio.gather(*self._conversions, return_exceptions=True)

    async def _load(self, target: ModelVersion, runtime: str) -> LoadedModel:
        return await asyncio.to_thread(
            load_version,
            target,
            max_batch=self.config.max_batch,
            padded_sizes=self.config.padded_sizes(),
            runtime=runtime,
        )

    async def _serve_with_lite(self, slot: _Slot, target: ModelVersion) -> None:
        """Convert `target` while Keras serves it, then switch to LiteRT if it is still what serves.

        The conversion runs in a process of its own, not in a thread: the interpreter waits for the
        event loop's threads at exit, and a conversion takes seconds in uninterruptible C++, so a stop
        would wait for it (see `inference.converting`). Here only the cached result is loaded.
        """
        label = f"{slot.name} v{target.version}"
        try:
            await convert_in_process(
                target, max_batch=self.config.max_batch, padded_sizes=self.config.padded_sizes()
            )
            loaded = await asyncio.to_thread(load_conversion, target, max_batch=self.config.max_batch)
        except ModelUnavailable as error:
            log.warning("%s: Keras keeps serving it: %s", label, error)
            return
        async with slot.lock:
            current = slot.serving
            if current is None or current.version.version != target.version:
                return  # another version took over meanwhile
            slot.serving = _Serving(loaded, current.adapter, self._worker_model(current.adapter, loaded))
        log.info("%s now served by LiteRT (converted and checked in %.0f ms)", label, loaded.load_ms)

    def models(self) -> dict[str, ModelStatus]:
        """What serves, per model name."""
        report = {}
        for name, slot in self._slots.items():
            serving = slot.serving
            report[name] = ModelStatus.of(
                name,
                serving.loaded if serving else None,
                swaps=slot.swaps,
                queued=slot.worker.queued(),
                batches=slot.worker.stats.snapshot(),
                refused=slot.refused,
                in_workers=slot.in_workers,
            )
        return report

    async def _poll_store(self) -> None:
        """Follow the store's `active` pointers every `reload_poll_s` (promotions by other processes, or
        on other machines through a shared store's database row)."""
        while True:
            await asyncio.sleep(self.config.reload_poll_s)
            await self.follow_store()

    async def follow_store(self) -> None:
        """Serve each model's active version where it moved; retry no refused version.

        Over a copy of the slots: a model taught or deleted meanwhile (`add_model`, `remove_model`)
        changes them while a pointer is read in a thread. A store that cannot be read (a shared store's
        database down) is logged in one line when that starts and one when it ends, not at every poll.
        """
        failed: Exception | None = None
        for name, slot in list(self._slots.items()):
            if self._slots.get(name) is not slot:
                continue  # deleted meanwhile
            try:
                active = await asyncio.to_thread(self.store.active_version, name)
                current = slot.serving.version.version if slot.serving else None
                if active is None or active == current or active in slot.refused:
                    continue
                await self.reload(name)
            except ModelUnavailable:
                pass  # reported by reload; the version is remembered as refused
            except Exception as error:
                failed = failed or error
        self._store_looks.went(failed)

    def _seed(self, name: str) -> None:
        folder = self.catalogue[name].shipped
        seeder = self._seeders.get(name)
        # Nothing ships for a taught model: its versions come from /retrain, so none is looked for.
        shipped_dir = self.shipped_dir if folder is not None or seeder is not None else None
        seed_model(self.store, name, seeder, shipped_dir, folder)

    def _still_learning(self, name: str) -> bool:
        """A model with nothing shipped and no version yet: waiting for its first /retrain, not broken."""
        return self.catalogue[name].shipped is None and not self.store.versions(name)
