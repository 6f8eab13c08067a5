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

The parts: `experiment_plan` (configuration, runs, splits, seeds, data), `experiment_run` (one run),
`experiment_results` (the output folder and its locks), `experiment_progress` (the progress line) and
`experiment_report` (the statistics); this module runs the planned runs in one or more processes.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
from collections.abc import Callable
from pathlib import Path

from training.experiment_plan import (
    DATA_KINDS,
    DataLocation,
    ExperimentConfig,
    ExperimentError,
    LabelledData,
    Run,
    load_data,
    parse_arch,
    planned_runs,
    run_seed,
    split_digest,
    split_indices,
    subset_indices,
)
from training.experiment_progress import Progress
from training.experiment_results import CLAIMS_DIR, CONFIG_FILE, RESULTS_FILE, ResultsFile
from training.experiment_run import build_model, execute_run, limit_threads

__all__ = [
    "CLAIMS_DIR",
    "CONFIG_FILE",
    "DATA_KINDS",
    "RESULTS_FILE",
    "DataLocation",
    "ExperimentConfig",
    "ExperimentError",
    "LabelledData",
    "Progress",
    "ResultsFile",
    "Run",
    "available_cores",
    "build_model",
    "default_jobs",
    "execute_run",
    "has_gpu",
    "limit_threads",
    "load_data",
    "parse_arch",
    "planned_runs",
    "run_experiment",
    "run_seed",
    "split_digest",
    "split_indices",
    "subset_indices",
    "work",
]

logger = logging.getLogger(__name__)

_POLL_SECONDS = 1.0


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
