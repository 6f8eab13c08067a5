"""Compare architectures the way the course asks: many random 80/20 splits, fresh weights on each.

Every architecture is trained on the same sequence of splits — split k is a function of the recorded
experiment seed and k alone — so the comparison is paired. Each run (one architecture on one split)
starts from fresh random weights whose seed derives from the experiment seed, the split and the
architecture, and is recorded with the result.

Results are appended, one JSON line per finished run, to `results.jsonl` in the output folder, under a
POSIX record lock and with one `write` per line. A run is *claimed* by holding a lock on its own file
in `claims/` while it trains; the kernel drops that lock when a process dies, so an interrupted
experiment resumes with the same command, and any number of processes — on this machine or on others
sharing the folder — can work on the same experiment without running anything twice.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import logging
import math
import multiprocessing
import os
import socket
import sys
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO

import numpy as np

logger = logging.getLogger(__name__)

RESULTS_FILE = "results.jsonl"
CONFIG_FILE = "experiment.json"
CLAIMS_DIR = "claims"
DATA_KINDS = ("digits", "flowers")
_SPLIT_STREAM = 1  # SeedSequence stream ids, so splits, subsets and weights never share random numbers
_SUBSET_STREAM = 2
_WEIGHTS_STREAM = 3
_POLL_SECONDS = 1.0


class ExperimentError(RuntimeError):
    """The experiment cannot go on; the message says why and what to do."""


@dataclass(frozen=True)
class ExperimentConfig:
    """What an experiment is. Everything but `archs` and `splits` fixes the results, so those fields
    must match when an output folder is resumed; adding architectures or splits later is fine."""

    archs: tuple[str, ...]  # canonical specs: "mlp:800", "mlp:10,10", "cnn"
    splits: int = 10  # how many random train/test splits each architecture is trained on
    epochs: int = 5
    data: str = "digits"  # "digits" (all 70,000 MNIST images) or "flowers" (backbone features)
    seed: int = 0  # split k and every run's weights derive from this
    test_fraction: float = 0.2  # the course's 80/20
    batch_size: int = 200  # the course's batch size
    limit: int | None = None  # use a fixed random subset of this many examples (quick tries); None: all
    train_eval_max: int = 10_000  # training accuracy is measured on at most this many training examples

    def fingerprint(self) -> dict:
        """The fields that make two results comparable."""
        return {
            key: value for key, value in dataclasses.asdict(self).items() if key not in ("archs", "splits")
        }


@dataclass(frozen=True)
class Run:
    """One architecture trained and evaluated on one split."""

    arch: str
    split: int

    @property
    def run_id(self) -> str:
        return f"{self.arch}@{self.split}"


@dataclass(frozen=True)
class DataLocation:
    """Where the datasets are: the PHOTOBOT_DATASETS folders and DATA_DIR (plain paths, picklable)."""

    search_dirs: tuple[Path, ...]
    data_dir: Path


@dataclass(frozen=True)
class LabelledData:
    """A whole data set in memory: inputs (uint8 images or float32 features) and integer labels."""

    x: np.ndarray
    y: np.ndarray
    num_classes: int


def parse_arch(text: str, data: str = "digits") -> str:
    """Check an architecture spec and return its canonical form ("MLP:10, 10" → "mlp:10,10")."""
    spec = text.strip().lower().replace(" ", "")
    kind, _, params = spec.partition(":")
    if kind == "mlp":
        try:
            hidden = [int(h) for h in params.split(",")]
        except ValueError:
            hidden = []
        if not hidden or any(h < 1 for h in hidden):
            raise ValueError(f"{text!r}: an MLP is mlp:H or mlp:H1,H2,… with positive layer sizes")
        return "mlp:" + ",".join(map(str, hidden))
    if kind == "cnn" and not params:
        if data != "digits":
            raise ValueError("cnn works on digit images only; flowers use linear or mlp:H heads on features")
        return "cnn"
    if kind == "linear" and not params:
        if data != "flowers":
            raise ValueError("linear is a head on flower features; digits use mlp:H or cnn")
        return "linear"
    raise ValueError(f"{text!r}: unknown architecture (use mlp:800, mlp:10,10, cnn; linear for flowers)")


def planned_runs(config: ExperimentConfig) -> list[Run]:
    """All runs in the order they are done: architecture by architecture, as given, splits inside."""
    return [Run(arch, split) for arch in config.archs for split in range(config.splits)]


def split_indices(n: int, split: int, seed: int, test_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """The (train, test) indices of split `split`: a permutation fixed by (seed, split) only."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, _SPLIT_STREAM, split]))
    order = rng.permutation(n)
    n_test = round(n * test_fraction)
    if not 0 < n_test < n:
        raise ValueError(f"a test fraction of {test_fraction} leaves no train or no test examples of {n}")
    return np.sort(order[n_test:]), np.sort(order[:n_test])


def split_digest(train_idx: np.ndarray, test_idx: np.ndarray) -> str:
    """A short fingerprint of a split, stored with each run so that pairing can be checked later."""
    digest = hashlib.sha256(np.asarray(train_idx, dtype=np.int64).tobytes())
    digest.update(b"|" + np.asarray(test_idx, dtype=np.int64).tobytes())
    return digest.hexdigest()[:16]


def run_seed(seed: int, split: int, arch: str) -> int:
    """The weight seed of one run: distinct for every architecture and split, fixed by the seed."""
    state = np.random.SeedSequence([seed, _WEIGHTS_STREAM, split, zlib.crc32(arch.encode())])
    return int(state.generate_state(1)[0] & 0x7FFFFFFF)


def subset_indices(n: int, limit: int | None, seed: int) -> np.ndarray:
    """The examples an experiment uses: all of them, or a fixed random `limit` of them."""
    if limit is None or limit >= n:
        return np.arange(n)
    rng = np.random.default_rng(np.random.SeedSequence([seed, _SUBSET_STREAM]))
    return np.sort(rng.choice(n, size=limit, replace=False))


def load_data(config: ExperimentConfig, location: DataLocation) -> LabelledData:
    """The experiment's examples: digits = MNIST's 60,000 + 10,000 pooled, to be split 80/20 anew."""
    if config.data == "digits":
        from training.datasets import load_mnist

        x_train, y_train, x_test, y_test = load_mnist(location.search_dirs, location.data_dir)
        x, y = np.concatenate([x_train, x_test]), np.concatenate([y_train, y_test])
        num_classes = 10
        keep = subset_indices(len(y), config.limit, config.seed)
        return LabelledData(x[keep], y[keep].astype(np.int64), num_classes)
    if config.data == "flowers":
        return _flower_features(config, location)
    raise ExperimentError(f"unknown data {config.data!r}; choose one of {', '.join(DATA_KINDS)}")


def _flower_features(config: ExperimentConfig, location: DataLocation) -> LabelledData:
    """Every flower photo as its backbone features, from the flower job's bottleneck cache
    (`$DATA_DIR/cache/bottlenecks`); features not cached yet are computed once and cached."""
    from training.flower_data import BottleneckCache, bottlenecks, find_flower_photos, list_photos
    from training.train_flowers import cache_key

    photo_set = list_photos(find_flower_photos(location.search_dirs, location.data_dir))
    photos = [photo_set.photos[i] for i in subset_indices(len(photo_set.photos), config.limit, config.seed)]
    cache = BottleneckCache(location.data_dir / "cache" / "bottlenecks", cache_key())
    backbone = []

    def extract(pixels: np.ndarray) -> np.ndarray:
        if not backbone:  # built only when some photo is not in the cache yet
            from training.effnet_lite0 import build_backbone

            logger.info("computing backbone features of the photos not in the cache yet")
            backbone.append(build_backbone())
        return backbone[0].predict_on_batch(pixels)

    features = bottlenecks(photos, cache, extract).features
    labels = np.array([photo_set.classes.index(p.label) for p in photos], dtype=np.int64)
    return LabelledData(features, labels, len(photo_set.classes))


class ResultsFile:
    """The output folder: `experiment.json`, `results.jsonl` and the per-run claim locks."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = Path(out_dir)
        self.path = self.out_dir / RESULTS_FILE
        self.claims = self.out_dir / CLAIMS_DIR

    def prepare(self, config: ExperimentConfig) -> None:
        """Create the folder, or check that the experiment already in it is this one."""
        self.claims.mkdir(parents=True, exist_ok=True)
        config_path = self.out_dir / CONFIG_FILE
        wanted = config.fingerprint()
        with self._locked(self.out_dir / ".lock"):
            if config_path.is_file():
                found = json.loads(config_path.read_text(encoding="utf-8"))
                if found != wanted:
                    differ = ", ".join(
                        f"{k}={found.get(k)!r} there, {wanted[k]!r} now"
                        for k in wanted
                        if found.get(k) != wanted[k]
                    )
                    raise ExperimentError(
                        f"{self.out_dir} holds a different experiment ({differ}); "
                        "use another --out, or the same settings to resume it"
                    )
            else:
                _write_atomically(config_path, json.dumps(wanted, indent=2, sort_keys=True) + "\n")

    def read(self, config: ExperimentConfig) -> dict[str, dict]:
        """Finished runs of this experiment by run id (first record wins; broken lines are skipped)."""
        if not self.path.is_file():
            return {}
        wanted = config.fingerprint()
        records: dict[str, dict] = {}
        with self.path.open(encoding="utf-8") as lines:
            for number, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    logger.warning(
                        "%s line %d is not JSON (an interrupted write?); ignored", self.path, number
                    )
                    continue
                if record.get("experiment") == wanted:
                    records.setdefault(record["run_id"], record)
        return records

    def append(self, record: dict) -> None:
        """Append one record as one line, under an exclusive lock, and make it durable."""
        line = (json.dumps(record, sort_keys=True) + "\n").encode("utf-8")
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX)
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                line = b"\n" + line  # a writer died mid-line: keep our record on a line of its own
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)  # closing drops the lock

    @contextlib.contextmanager
    def claim(self, run: Run) -> Iterator[bool]:
        """Hold the run's claim lock while the block runs; yields False if another process holds it."""
        path = self.claims / (run.run_id.replace(":", "_").replace(",", "-") + ".lock")
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                yield False
                return
            os.ftruncate(fd, 0)
            os.write(fd, f"{socket.gethostname()} {os.getpid()}\n".encode())
            yield True
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def _locked(self, path: Path) -> Iterator[None]:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)


def execute_run(run: Run, config: ExperimentConfig, data: LabelledData) -> dict:
    """Train one architecture from fresh weights on one split; return the record to store."""
    import keras

    seed = run_seed(config.seed, run.split, run.arch)
    keras.backend.clear_session()  # a fresh graph per run: memory stays flat over hundreds of runs
    keras.utils.set_random_seed(seed)
    train_idx, test_idx = split_indices(len(data.y), run.split, config.seed, config.test_fraction)
    if len(train_idx) > config.train_eval_max:  # a random sample of the very examples it trained on
        picker = np.random.default_rng(seed)
        train_eval_idx = np.sort(picker.choice(train_idx, config.train_eval_max, replace=False))
    else:
        train_eval_idx = train_idx
    model = build_model(run.arch, config.data, data.num_classes, int(np.prod(data.x.shape[1:])))
    x_train = _model_input(data.x[train_idx])
    y_train = np.eye(data.num_classes, dtype=np.float32)[data.y[train_idx]]
    started, cpu_started = time.perf_counter(), time.process_time()
    model.fit(x_train, y_train, epochs=config.epochs, batch_size=config.batch_size, shuffle=True, verbose=0)
    train_seconds = time.perf_counter() - started
    test_accuracy = _accuracy(model, data.x[test_idx], data.y[test_idx])
    train_accuracy = _accuracy(model, data.x[train_eval_idx], data.y[train_eval_idx])
    return {
        "run_id": run.run_id,
        "arch": run.arch,
        "split": run.split,
        "seed": seed,
        "experiment": config.fingerprint(),
        "test_accuracy": test_accuracy,
        "train_accuracy": train_accuracy,
        "n_train": len(train_idx),
        "n_test": len(test_idx),
        "split_digest": split_digest(train_idx, test_idx),
        "n_train_eval": len(train_eval_idx),
        "parameters": int(model.count_params()),
        "train_seconds": round(train_seconds, 3),
        "seconds": round(time.perf_counter() - started, 3),
        "cpu_seconds": round(
            time.process_time() - cpu_started, 3
        ),  # all threads: the work, whatever the load
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "pid": os.getpid(),
    }


def build_model(arch: str, data: str, num_classes: int, feature_size: int = 0):
    """A fresh compiled model for a canonical architecture spec: the digit factories for digits; for
    flowers, the flower job's softmax head on the backbone features, with hidden layers for mlp:H."""
    hidden = tuple(int(h) for h in arch.split(":", 1)[1].split(",")) if arch.startswith("mlp:") else ()
    if data == "digits":
        from training.digit_models import make_cnn, make_mlp

        return make_cnn() if arch == "cnn" else make_mlp(hidden)
    import keras

    from training.flower_model import head_layers

    features = keras.Input((feature_size,), name="features")
    x = features
    for index, units in enumerate(hidden, start=1):
        x = keras.layers.Dense(units, activation="relu", name=f"hidden{index}")(x)
    model = keras.Model(features, head_layers(x, num_classes), name=arch.replace(":", "_").replace(",", "_"))
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    return model


def _model_input(x: np.ndarray) -> np.ndarray:
    """uint8 digit images → (n, 28, 28, 1) float32 in [0, 1], the digit models' input."""
    if x.dtype == np.uint8:
        return (x.astype(np.float32) / 255.0)[..., None]
    return x.astype(np.float32, copy=False)


def _accuracy(model, x: np.ndarray, y: np.ndarray, batch: int = 1000) -> float:
    """Accuracy by calling the model on batches (no `predict`: it traces a new function per model)."""
    correct = 0
    for start in range(0, len(y), batch):
        probabilities = np.asarray(model(_model_input(x[start : start + batch]), training=False))
        correct += int(np.sum(np.argmax(probabilities, axis=1) == y[start : start + batch]))
    return correct / len(y)


def limit_threads(threads: int) -> None:
    """Cap the backend's thread pools so that parallel runs share the cores instead of fighting."""
    import keras

    if keras.backend.backend() == "torch":
        import torch

        torch.set_num_threads(threads)
        return
    if keras.backend.backend() != "tensorflow":
        return  # JAX sizes its pools when it starts; XLA_FLAGS is the place to limit it
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:  # TensorFlow already started in this process: its pools are fixed now
        logger.debug("TensorFlow already initialised; thread limits not changed")


def work(
    config: ExperimentConfig,
    location: DataLocation,
    out_dir: Path,
    *,
    threads: int | None = None,
    on_result: Callable[[dict], None] | None = None,
    data: LabelledData | None = None,
) -> int:
    """Do every unfinished run nobody else is doing; wait for the ones others are doing. Returns how
    many runs this process did."""
    if threads:
        limit_threads(threads)
    results = ResultsFile(out_dir)
    runs = planned_runs(config)
    done_here = 0
    while True:
        finished = results.read(config)
        pending = [run for run in runs if run.run_id not in finished]
        if not pending:
            return done_here
        busy_elsewhere = 0
        for run in pending:
            with results.claim(run) as claimed:
                if not claimed:
                    busy_elsewhere += 1
                    continue
                if run.run_id in results.read(config):
                    continue  # finished by another process since we looked
                if data is None:
                    data = load_data(config, location)
                record = execute_run(run, config, data)
                results.append(record)
                done_here += 1
                logger.info(
                    "%s: test %.4f, train %.4f", run.run_id, record["test_accuracy"], record["train_accuracy"]
                )
                if on_result is not None:
                    on_result(record)
        if busy_elsewhere:
            time.sleep(_POLL_SECONDS)


def _worker_main(config: ExperimentConfig, location: DataLocation, out_dir: Path, threads: int) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    work(config, location, out_dir, threads=threads)


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def run_experiment(
    config: ExperimentConfig,
    location: DataLocation,
    out_dir: Path,
    *,
    jobs: int = 1,
    progress: Progress | None = None,
) -> dict[str, dict]:
    """Run (or resume) the experiment with `jobs` processes; return all its finished runs by id.

    With one job the runs happen in this process (the way to use a GPU: one run after another);
    with more, each worker process gets an equal share of the cores for TensorFlow's threads.
    """
    if jobs < 1:
        raise ExperimentError("--jobs must be at least 1")
    results = ResultsFile(out_dir)
    results.prepare(config)
    finished = results.read(config)
    if progress is not None:
        progress.start(finished, [run.run_id for run in planned_runs(config)])
    if all(run.run_id in finished for run in planned_runs(config)):
        return finished
    data = load_data(config, location)  # here, so that a missing data set fails once, clearly
    threads = max(1, available_cores() // jobs)
    if jobs == 1:

        def show(_record: dict) -> None:
            if progress is not None:
                progress.update(results.read(config))

        work(config, location, out_dir, threads=threads, on_result=show, data=data)
    else:
        del data  # each worker loads its own copy
        _run_workers(config, location, out_dir, jobs, threads, results, progress)
    finished = results.read(config)
    if progress is not None:
        progress.finish(finished)
    return finished


def _run_workers(
    config: ExperimentConfig,
    location: DataLocation,
    out_dir: Path,
    jobs: int,
    threads: int,
    results: ResultsFile,
    progress: Progress | None,
) -> None:
    context = multiprocessing.get_context("spawn")  # fresh interpreters: TensorFlow does not survive fork
    workers = [
        context.Process(
            target=_worker_main, args=(config, location, out_dir, threads), name=f"experiment-{i}"
        )
        for i in range(jobs)
    ]
    for worker in workers:
        worker.start()
    try:
        while any(worker.is_alive() for worker in workers):
            time.sleep(_POLL_SECONDS)
            if progress is not None:
                progress.update(results.read(config))
    finally:
        for worker in workers:
            if worker.is_alive():
                worker.terminate()
            worker.join()
    failed = [w.name for w in workers if w.exitcode != 0]
    if failed:
        raise ExperimentError(
            f"{len(failed)} of {jobs} worker processes failed (see the errors above); finished runs are "
            "kept: run the same command again to resume"
        )


class Progress:
    """A one-line progress bar: runs done, seconds per run, time left (estimated per architecture)."""

    def __init__(self, stream: TextIO = sys.stderr, jobs: int = 1, width: int = 24) -> None:
        self.stream = stream
        self.jobs = jobs
        self.width = width
        self.total = 0
        self.started = time.monotonic()
        self.done_before = 0
        self.pending: list[str] = []
        self.last_done = -1
        self.interactive = stream.isatty()

    def start(self, finished: dict[str, dict], run_ids: Sequence[str]) -> None:
        self.pending = list(run_ids)
        self.total = len(self.pending)
        self.done_before = len(finished)
        self.started = time.monotonic()
        self._show(finished, force=True)

    def update(self, finished: dict[str, dict]) -> None:
        self._show(finished)

    def finish(self, finished: dict[str, dict]) -> None:
        self._show(finished)
        if self.interactive:
            self.stream.write("\n")
            self.stream.flush()

    def line(self, finished: dict[str, dict]) -> str:
        done = min(len(finished), self.total)
        filled = round(self.width * done / self.total) if self.total else self.width
        bar = "#" * filled + "." * (self.width - filled)
        seconds = [r["seconds"] for r in finished.values()]
        per_run = f"{sum(seconds) / len(seconds):.1f} s/run" if seconds else "-- s/run"
        left = self.seconds_left(finished)
        untimed = sorted(set(self.pending_archs(finished)) - {r["arch"] for r in finished.values()})
        if done >= self.total:
            left_text = "done"
        elif left is None:
            left_text = "estimating"
        elif untimed:  # guessed at the mean of the others: a CNN may take far longer than an MLP
            left_text = f"~{_duration(left)} left if {', '.join(untimed)} runs as fast as the others"
        else:
            left_text = f"~{_duration(left)} left"
        return f"[{bar}] {done}/{self.total} runs · {per_run} · {left_text}"

    def seconds_left(self, finished: dict[str, dict]) -> float | None:
        """Remaining runs × the mean time of runs of the same architecture, shared among the jobs."""
        by_arch: dict[str, list[float]] = {}
        for record in finished.values():
            by_arch.setdefault(record["arch"], []).append(record["seconds"])
        if not by_arch:
            return None
        overall = sum(sum(v) for v in by_arch.values()) / sum(len(v) for v in by_arch.values())
        remaining = self.pending_archs(finished)
        total = sum(sum(by_arch[a]) / len(by_arch[a]) if a in by_arch else overall for a in remaining)
        return total / self.jobs

    def pending_archs(self, finished: dict[str, dict]) -> list[str]:
        return [run_id.rsplit("@", 1)[0] for run_id in self.pending if run_id not in finished]

    def _show(self, finished: dict[str, dict], force: bool = False) -> None:
        if len(finished) == self.last_done and not force:
            return
        self.last_done = len(finished)
        text = self.line(finished)
        self.stream.write(("\r" + text) if self.interactive else text + "\n")
        self.stream.flush()


def _duration(seconds: float) -> str:
    seconds = max(0, math.ceil(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def default_jobs() -> int:
    """One run at a time on a GPU (it is busy enough); one process per core on a CPU."""
    return 1 if has_gpu() else available_cores()


def has_gpu() -> bool:
    """Whether the Keras backend sees a GPU."""
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return bool(tf.config.list_physical_devices("GPU"))
    if backend == "jax":
        import jax

        return any(device.platform == "gpu" for device in jax.devices())
    if backend == "torch":
        import torch

        return bool(torch.cuda.is_available())
    return False


def _write_atomically(path: Path, text: str) -> None:
    """Write to a temporary file, fsync, rename: readers see the old file or the whole new one."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with temporary.open("w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
