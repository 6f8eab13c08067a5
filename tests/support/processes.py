"""`photobot …` as a real process in a test: its environment (pointed at the fake Bot API server and a data
folder), its output in a log file, and no process left behind however the test ends."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path

from tests.support.bot import TOKEN


def photobot_env(api_url: str, data_dir: Path, **settings: str) -> dict[str, str]:
    """This process's environment with the bot's token, the Bot API server at `api_url`, `data_dir`, and
    `settings` (LOG_LEVEL="INFO", METRICS_PORT=…) on top."""
    return {
        **os.environ,
        "TELEGRAM_BOT_TOKEN": TOKEN,
        "TELEGRAM_API_URL": api_url,
        "DATA_DIR": str(data_dir),
        **settings,
    }


@contextlib.asynccontextmanager
async def photobot_process(
    *arguments: str, env: Mapping[str, str], log: Path, cwd: Path | None = None
) -> AsyncIterator[asyncio.subprocess.Process]:
    """`python -m photobot ARGUMENTS…` with its stdout and stderr in `log`; killed (and waited for) when
    the block ends with it still running."""
    with log.open("wb") as output:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "photobot", *arguments, env=dict(env), cwd=cwd, stdout=output, stderr=output
        )
        try:
            yield process
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()


async def stop(process: asyncio.subprocess.Process, timeout_s: float = 60) -> int:
    """SIGTERM, then its exit code (the timeout only bounds a hang)."""
    process.send_signal(signal.SIGTERM)
    return await asyncio.wait_for(process.wait(), timeout_s)


async def wait_until(condition: Callable[[], object], timeout: float, what: str) -> None:
    """Poll `condition` every 50 ms; fail saying `what` did not happen within `timeout` seconds (which
    only bounds a failure: no timing is asserted)."""
    for _ in range(int(timeout / 0.05)):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")
