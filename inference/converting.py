"""A background conversion to LiteRT in a process of its own, which closing the classifier kills.

Why a process: a conversion runs TensorFlow's converter for ~11 s (the flower model) inside C++ code
that cannot be interrupted. In a thread of the event loop's default executor, the interpreter waits for
it at exit (`asyncio.run` shuts that executor down, `concurrent.futures` joins its workers), so a bot
told to stop went on for up to a minute; a daemon thread instead would leave TensorFlow's threads
running while the interpreter is torn down. A process is killed at once and takes its threads with it.

Nothing it leaves half-written is trusted: the cache is written under a temporary name and renamed into
place with its SHA-256 beside it (`inference.lite`), so a kill mid-write leaves at most a hidden
`.model-….tflite.….tmp` that no reader opens, or a hash with no flatbuffer, which counts as no
conversion. Its scratch files (the SavedModel the converter reads) go to a folder the parent removes.

The parent then serves the cached file (`loading.load_conversion`), never converting in its own threads.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import shutil
import signal
import tempfile
from multiprocessing.connection import Connection
from pathlib import Path

from inference.errors import ModelUnavailable
from inference.model_store import ModelVersion

log = logging.getLogger(__name__)


async def convert_in_process(version: ModelVersion, *, max_batch: int, padded_sizes: tuple[int, ...]) -> None:
    """Convert `version` and cache the conversion beside its model file, in a spawned process.

    Raises ModelUnavailable when LiteRT cannot serve it. Cancelled (the classifier closing), it kills
    the process and returns nothing: the conversion is done again at the next start.
    """
    label = f"{version.name} v{version.version}"
    scratch = Path(tempfile.mkdtemp(prefix="photobot-convert-"))
    context = multiprocessing.get_context("spawn")  # not fork: forking TensorFlow's threads can deadlock
    receiver, sender = context.Pipe(duplex=False)
    process = context.Process(
        target=_convert_here,
        args=(version, max_batch, padded_sizes, str(scratch), sender),
        name=f"photobot-convert-{version.name}",
        daemon=True,  # and if the parent exits without closing, multiprocessing kills it
    )
    try:
        process.start()
        sender.close()
        log.info("%s: converting to LiteRT in process %s", label, process.pid)
        await _exited(process.sentinel)
        process.join()
        failure = receiver.recv() if receiver.poll() else f"the converter died ({process.exitcode})"
    except asyncio.CancelledError:
        if process.is_alive():
            process.kill()
            process.join()
            log.info("%s: conversion to LiteRT abandoned (closing); converted again at the next start", label)
        raise
    finally:
        sender.close()
        receiver.close()
        shutil.rmtree(scratch, ignore_errors=True)
    if failure is not None:
        raise ModelUnavailable(f"{label}: {failure}")


async def _exited(sentinel: int) -> None:
    """Wait until a process's sentinel is readable (it has exited), without holding a thread."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def exited() -> None:
        if not done.done():
            done.set_result(None)

    loop.add_reader(sentinel, exited)
    try:
        await done
    finally:
        loop.remove_reader(sentinel)


def _convert_here(
    version: ModelVersion, max_batch: int, padded_sizes: tuple[int, ...], scratch: str, result: Connection
) -> None:
    """In the spawned process: load the version through Keras, convert, check and cache it; send None,
    or why LiteRT cannot serve it. Ctrl-C reaches the whole process group: the parent decides."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    tempfile.tempdir = scratch
    from inference.lite import TF_LOAD_LINE, filtered_stderr, quiet_wanted

    if quiet_wanted():  # the command line's quiet: TensorFlow's load-time lines too, as in its parent
        with filtered_stderr(TF_LOAD_LINE.match):
            import tensorflow  # noqa: F401
    from inference.loading import load_version

    try:
        load_version(version, max_batch=max_batch, padded_sizes=padded_sizes, runtime="lite")
    except ModelUnavailable as error:
        result.send(str(error))
    else:
        result.send(None)
    finally:
        result.close()
