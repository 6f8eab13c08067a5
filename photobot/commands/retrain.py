"""`photobot retrain --model digits|flowers`: learn from the photos people labelled in chat.

The bot's /retrain starts this in its own process with `--job-id`, and so does `photobot worker` for a
job it claimed (`--worker`: this process then ends with the worker, so a job never outlives the lease
that holds it); by hand it creates its own job, and on a terminal follows the job's progress (what the
bot shows in chat) in a bar on stderr.
"""

from __future__ import annotations

import argparse
import dataclasses
import threading
from typing import TYPE_CHECKING, Any

from inference.catalogue import DEFAULT_CATALOGUE, Catalogue
from photobot.commands import fraction, positive_int, progress_bar
from photobot.errors import UserFacingError
from photobot.settings import Settings

if TYPE_CHECKING:
    from tqdm import tqdm

    from training.retrain import RetrainOptions, RetrainOutcome


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        required=True,
        help=f"{', '.join(DEFAULT_CATALOGUE.names)} or a model taught from the chat (photobot models new)",
    )
    parser.add_argument("--job-id", type=int, help="the job the bot queued (default: create one)")
    parser.add_argument(
        "--force", action="store_true", help="retrain even with fewer new labelled photos than the minimum"
    )
    parser.add_argument(
        "--limit",
        type=positive_int,
        help="digits: MNIST training digits used (default 20000); flowers: photos per class",
    )
    parser.add_argument(
        "--test-limit", type=positive_int, help="digits: first N MNIST test digits for the gate"
    )
    parser.add_argument(
        "--epochs", type=positive_int, help="default: 2 for digits; flowers: up to 300, early stopping"
    )
    parser.add_argument(
        "--chat-share",
        type=fraction,
        default=0.15,
        help="chat photos' share of the training weight, at most (default 0.15; each ≤ 5 base examples)",
    )
    parser.add_argument(
        "--max-chat-weight",
        type=float,
        default=5.0,
        help="what one chat photo may weigh, in base examples (default 5)",
    )
    parser.add_argument(
        "--learning-rate", type=float, help="default: 3e-4 for digits, 1e-4 for the flower head"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seeds the shuffles, the augmentation and the initial weights (0)"
    )
    parser.add_argument(
        "--worker",
        help="the worker (host/pid/tag) that claimed --job-id and started this process: it ends with it",
    )
    parser.add_argument(
        "--nice", type=int, default=0, help="lower this process's CPU priority by N (the bot passes 10)"
    )


def main(args: argparse.Namespace, settings: Settings) -> int:
    import os

    from training.retrain import RetrainError, RetrainOptions

    if args.nice > 0:
        os.nice(args.nice)  # the bot that started this job keeps the CPU it needs to answer photos
    if args.worker is not None:
        if args.job_id is None:
            raise UserFacingError("--worker needs the --job-id the worker claimed")
        end_with_parent(_worker_pid(args.worker))

    from photobot.wiring import taught_catalogue

    catalogue = taught_catalogue(settings)
    named = catalogue.named(args.model)  # a model's name (`digits`) or its mode (`digit`)
    args.model = named.name if named is not None else args.model
    if args.model not in catalogue:
        message = f"unknown model {args.model!r}; choose from {', '.join(catalogue.names)}"
        if args.job_id is not None:  # the bot queued it: a model deleted since says so in the job
            _fail_job(
                settings, args.job_id, f"{args.model} was deleted, or never existed; nothing was promoted"
            )
        raise UserFacingError(message)
    for name in ("limit", "test_limit", "epochs"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UserFacingError(f"--{name.replace('_', '-')} must be positive, got {value}")
    if not 0 <= args.chat_share < 1:
        raise UserFacingError(f"--chat-share must be within [0, 1), got {args.chat_share}")
    if not args.max_chat_weight > 0:
        raise UserFacingError(f"--max-chat-weight must be positive, got {args.max_chat_weight}")
    options = RetrainOptions(
        model=args.model,
        job_id=args.job_id,
        force=args.force,
        limit=args.limit,
        test_limit=args.test_limit,
        epochs=args.epochs,
        chat_share=args.chat_share,
        max_chat_weight=args.max_chat_weight,
        learning_rate=args.learning_rate,
        seed=args.seed,
        worker=args.worker,
    )
    try:
        outcome = _run_followed(settings, options, catalogue, quiet=getattr(args, "quiet", False))
    except RetrainError as error:
        raise UserFacingError(str(error)) from None
    print(outcome.report.text)
    print(f"report: {outcome.report.folder}")
    return 0


def _worker_pid(worker: str) -> int:
    parts = worker.split("/")
    if len(parts) != 3 or not parts[1].isdigit():
        raise UserFacingError(f"--worker must be host/pid/tag, got {worker!r}")
    return int(parts[1])


def end_with_parent(parent: int) -> None:
    """Be killed (SIGKILL) when the process `parent` ends: a worker that dies takes its job with it,
    so the job cannot train on, and promote, after the worker's lease ran out (Linux: PR_SET_PDEATHSIG;
    elsewhere a thread watches the parent). Exits at once if `parent` is gone already."""
    import ctypes
    import os
    import signal
    import sys
    import time

    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    else:

        def watch() -> None:
            while os.getppid() == parent:
                time.sleep(1.0)
            os.kill(os.getpid(), signal.SIGKILL)

        threading.Thread(target=watch, name="end-with-worker", daemon=True).start()
    if os.getppid() != parent:  # it ended before the above took hold
        raise UserFacingError(f"the worker (pid {parent}) that started this job is gone")


def _fail_job(settings: Settings, job_id: int, error: str) -> None:
    from storage.sync import SyncStore

    with SyncStore(settings.database, settings.images_dir) as store:
        store.fail_retrain_job(job_id, error)


FOLLOW_EVERY_S = 0.5


def _run_followed(
    settings: Settings, options: RetrainOptions, catalogue: Catalogue, *, quiet: bool
) -> RetrainOutcome:
    """`run_retrain` (in this thread: it turns SIGTERM into an exit), with a progress bar fed from the
    job's row when it is run by hand on a terminal."""
    from photobot.wiring import retrain_settings
    from storage import JobAlreadyActive
    from storage.sync import SyncStore
    from training.retrain import RetrainError, run_retrain

    job_settings = retrain_settings(settings)
    bar = progress_bar(100, f"retraining {options.model}", quiet=quiet, unit="%")
    if bar.disable or options.job_id is not None:
        bar.close()
        return run_retrain(job_settings, options, catalogue)
    store = SyncStore(settings.database, settings.images_dir)
    try:
        job = store.create_retrain_job(options.model)
    except JobAlreadyActive as error:
        raise RetrainError(str(error)) from None
    finally:
        store.close()
    stop = threading.Event()
    follower = threading.Thread(target=_follow, args=(settings, job.id, bar, stop), daemon=True)
    follower.start()
    try:
        return run_retrain(job_settings, dataclasses.replace(options, job_id=job.id), catalogue)
    finally:
        stop.set()
        follower.join()
        bar.close()


def _follow(settings: Settings, job_id: int, bar: tqdm[Any], stop: threading.Event) -> None:
    """Show the job's stage and progress (its row, as the retraining writes it) until `stop`."""
    from storage.sync import SyncStore

    store = SyncStore(settings.database, settings.images_dir)
    try:
        while not stop.wait(FOLLOW_EVERY_S):
            job = store.get_retrain_job(job_id)
            if job is None or job.progress is None:
                continue
            bar.n = round(100 * job.progress)
            bar.set_postfix_str(job.stage or "", refresh=False)
            bar.refresh()
    finally:
        store.close()
