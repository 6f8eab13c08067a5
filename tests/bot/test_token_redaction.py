"""The bot token never leaves the process: not in an exception, a log line, a traceback, the terminal,
nor the retrain job's environment.

Every Bot API URL holds the token (`{root}/bot<TOKEN>/getMe`), aiohttp quotes the URL in its errors,
and python-telegram-bot quotes a rejected token. Each failure path here runs for real — an API on
127.0.0.1 that never answers, one that refuses connections, a fake Bot API server that rejects the
token, `photobot run` as a process — and all of its output is searched for the token.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import os
import socket
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path

import pytest
from telegram.error import NetworkError, TimedOut

from bot.config import ApiTimeouts
from bot.playground.bot_api_server import BotApiServer
from bot.redaction import REDACTED, RedactingFilter, redact
from bot.retraining import RetrainRunner, RunningJob
from bot.transport import AiohttpRequest
from inference.model_store import ModelStore
from photobot.settings import Settings
from photobot.wiring import retrain_config
from tests.support.bot import ADMIN_ID, TOKEN, start_bot, stop_bot
from tests.support.models import add_version, digit_meta

WRONG_TOKEN = "123:wrong"


def everything_said(error: BaseException) -> str:
    """All an error can put in a log: its text, its repr and its traceback with every chained cause."""
    return "\n".join([str(error), repr(error), "".join(traceback.format_exception(error))])


@contextlib.contextmanager
def silent_api() -> Iterator[int]:
    """A port on 127.0.0.1 that never answers: its accept queue is full, so a connect hangs."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        fillers = []
        for _ in range(3):
            filler = socket.socket()
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.1", port))
            fillers.append(filler)
        try:
            yield port
        finally:
            for filler in fillers:
                filler.close()


def refused_port() -> int:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def failure_of(request: AiohttpRequest, url: str) -> NetworkError:
    await request.initialize()
    try:
        with pytest.raises(NetworkError) as raised:
            await request.post(url)
    finally:
        await request.shutdown()
    return raised.value


async def test_a_bot_api_that_never_answers_times_out_without_the_token() -> None:
    with silent_api() as port:
        url = f"http://127.0.0.1:{port}/bot{TOKEN}/getMe"
        error = await failure_of(AiohttpRequest(connect_timeout=0.3, pool_timeout=0.1), url)
    assert isinstance(error, TimedOut)
    said = everything_said(error)
    assert TOKEN not in said and "5555" not in said, said
    assert f"127.0.0.1:{port}/bot{REDACTED}/getMe" in str(error)  # still says where it was going


async def test_a_refused_connection_is_a_network_error_without_the_token() -> None:
    port = refused_port()
    error = await failure_of(AiohttpRequest(), f"http://127.0.0.1:{port}/file/bot{TOKEN}/photos/1.jpg")
    assert not isinstance(error, TimedOut)
    said = everything_said(error)
    assert TOKEN not in said and "aiohttp.ClientConnectorError" in said, said


def test_the_log_filter_redacts_messages_arguments_and_tracebacks() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter([TOKEN]))
    logger = logging.getLogger("tests.redaction")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning(f"token {TOKEN} in the message")
        logger.warning("token %s in an argument, another bot's %s", TOKEN, "bot42:AAH-x_y")
        try:
            try:
                raise ValueError(f"GET http://api/bot{TOKEN}/getMe failed")
            except ValueError as cause:
                raise RuntimeError("the call failed") from cause
        except RuntimeError:
            logger.exception("with a chained cause")
        logger.warning("a stack, token-free", stack_info=True)
    finally:
        logger.removeHandler(handler)
        logger.propagate = True
    output = stream.getvalue()
    assert TOKEN not in output and "AAH-x_y" not in output, output
    assert output.count(REDACTED) == 4, output
    assert "with a chained cause" in output and "RuntimeError: the call failed" in output
    assert (
        redact("a token-free line, 10:30 at 127.0.0.1:8080") == "a token-free line, 10:30 at 127.0.0.1:8080"
    )


def test_settings_and_the_retrain_runner_do_not_quote_the_token_in_their_repr() -> None:
    settings = Settings(telegram_bot_token=TOKEN)
    assert TOKEN not in repr(settings) and TOKEN not in repr(RetrainRunner(retrain_config(settings)))
    assert "telegram_api_url=" in repr(settings)


async def photobot_run(tmp_path: Path, token: str, api_url: str, log_level: str = "DEBUG") -> tuple[int, str]:
    """`photobot run` as a process: its exit code and all it printed (stdout and stderr).

    At DEBUG it logs everything it ever would, python-telegram-bot's URLs with the token included.
    """
    env = {
        **os.environ,
        "TELEGRAM_BOT_TOKEN": token,
        "TELEGRAM_API_URL": api_url,
        "DATA_DIR": str(tmp_path / "data"),
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "LOG_LEVEL": log_level,
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "photobot",
        "run",
        "--max-retries",
        "0",  # one try: the retries with backoff are tested in test_cli_run.py
        env=env,
        cwd=tmp_path,  # no .env of the checkout
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), 120)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    return process.returncode, output.decode()


@pytest.mark.process
@pytest.mark.parametrize("log_level", ["INFO", "DEBUG"])
async def test_photobot_run_with_a_token_telegram_rejects_says_so_in_one_line(
    tmp_path: Path, log_level: str
) -> None:
    async with BotApiServer(TOKEN) as server:
        code, output = await photobot_run(tmp_path, WRONG_TOKEN, server.url, log_level)
    assert code == 1, output
    assert WRONG_TOKEN not in output and "wrong" not in output, output
    lines = output.strip().splitlines()
    assert lines[-1] == "photobot run: Telegram rejected the bot token (check TELEGRAM_BOT_TOKEN)"
    assert "Traceback" not in output, output
    if log_level == "INFO":
        assert len(lines) == 1, output


@pytest.mark.process
@pytest.mark.parametrize("api", ["silent", "refused"])
async def test_photobot_run_against_an_unreachable_bot_api_says_so_without_the_token(
    tmp_path: Path, api: str
) -> None:
    with silent_api() if api == "silent" else contextlib.nullcontext(refused_port()) as port:
        code, output = await photobot_run(tmp_path, TOKEN, f"http://127.0.0.1:{port}")
    assert code == 1, output
    assert TOKEN not in output and "bot-under-test" not in output, output
    assert "Traceback" not in output, output
    last = output.strip().splitlines()[-1]
    assert last.startswith(f"photobot run: the Bot API at http://127.0.0.1:{port} could not be reached ("), (
        last
    )


@pytest.fixture
def model_dir(tmp_path: Path, tiny_digit_model) -> Path:
    folder = tmp_path / "models"
    # Converted already: the bot starts without a conversion process of its own.
    model_file = tiny_digit_model(tmp_path / "tiny.keras", hidden=16, converted=True)
    add_version(ModelStore(folder), "digits", model_file, digit_meta(metrics={}, augmented=False))
    return folder


async def test_the_retrain_watcher_logs_an_unreachable_api_without_the_token(
    tmp_path: Path, model_dir: Path, mnist_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The Bot API stops answering while a job runs: what the watcher and the updater log has no token."""
    caplog.set_level(logging.DEBUG)
    # The silent API holds every connection attempt: a one-second connect timeout makes each of the
    # watcher's calls fail after 1 s rather than the default 5 s (the path is the same).
    bot = await start_bot(
        tmp_path / "data",
        model_dir,
        datasets=(mnist_path.parent,),
        bot_api_timeouts=ApiTimeouts(connect_s=1.0),
    )
    runner = RetrainRunner(retrain_config(bot.settings), poll_s=0.2, nice=0)
    bot.application.bot_data["retraining"] = runner
    admin = bot.user(ADMIN_ID, "Root")
    port = bot.server.port
    try:
        progress = await bot.say(admin, "/retrain digits")
        assert progress["text"].startswith("Retraining digits (job 1)")
        job = await started(runner, 1)
        await bot.server.stop()
        with silent_api_on(port):
            job.process.kill()
            await asyncio.wait_for(runner.wait(1), 60)  # the watcher's edit and report both time out
        bot.server = BotApiServer(TOKEN, port=port)  # back, so that the bot can stop cleanly
        await bot.server.start()
        failed = await bot.services.store.get_retrain_job(1)
        assert failed.status == "failed" and "SIGKILL" in failed.error
    finally:
        await runner.close(stop_jobs=True)
        await stop_bot(bot)
    watcher = [r for r in caplog.records if r.getMessage() == "watching retrain job 1 failed"]
    assert watcher and isinstance(watcher[0].exc_info[1], TimedOut)  # the failure path did run
    errors = [r.exc_info[1] for r in caplog.records if r.exc_info]
    assert not [said for said in map(everything_said, errors) if TOKEN in said]
    # Only python-telegram-bot's own DEBUG lines at start-up quote the token; the filter that
    # `photobot run` puts on the log handlers redacts them with the rest.
    quoting = {r.getMessage().split(":")[0] for r in caplog.records if TOKEN in r.getMessage()}
    assert quoting <= {"Set Bot API URL", "Set Bot API File URL"}, quoting
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactingFilter([TOKEN]))
    for record in caplog.records:
        handler.handle(record)
    assert TOKEN not in stream.getvalue() and "watching retrain job 1 failed" in stream.getvalue()


async def started(runner: RetrainRunner, job_id: int) -> RunningJob:
    """The job once its process is spawned (the progress message is sent just before)."""
    for _ in range(600):
        if job_id in runner.running:
            return runner.running[job_id]
        await asyncio.sleep(0.05)
    raise AssertionError(f"retrain job {job_id} did not start")


@contextlib.contextmanager
def silent_api_on(port: int) -> Iterator[None]:
    """`silent_api` on a given port (where the Bot API server was)."""
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen(0)
        fillers = []
        for _ in range(3):
            filler = socket.socket()
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect(("127.0.0.1", port))
            fillers.append(filler)
        try:
            yield
        finally:
            for filler in fillers:
                filler.close()


async def test_the_retrain_job_process_gets_no_token(
    tmp_path: Path, model_dir: Path, mnist_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bot's environment holds the token (as in production); the job's never does."""
    if not Path("/proc/self/environ").exists():
        pytest.skip("reads the job's environment from /proc")
    monkeypatch.setenv("TELEGRAM_BOT_TOKEN", TOKEN)
    monkeypatch.setenv("PHOTOBOT_WEBHOOK_SECRET", "hush")
    monkeypatch.setenv("MIRROR_URL", f"http://127.0.0.1:1/bot{TOKEN}/")
    bot = await start_bot(tmp_path / "data", model_dir, datasets=(mnist_path.parent,))
    runner = RetrainRunner(retrain_config(bot.settings), poll_s=0.2, nice=0)
    bot.application.bot_data["retraining"] = runner
    try:
        progress = await bot.say(bot.user(ADMIN_ID, "Root"), "/retrain digits")
        assert progress["text"].startswith("Retraining digits (job 1)")
        pid = (await started(runner, 1)).process.pid
        raw = Path(f"/proc/{pid}/environ").read_bytes()  # what the process was started with
    finally:
        await runner.close(stop_jobs=True)
        await stop_bot(bot)
    env = dict(item.split("=", 1) for item in raw.decode().split("\0") if "=" in item)
    assert env["DATA_DIR"] == str((tmp_path / "data").resolve())  # it is the job's environment
    assert env.get("TELEGRAM_BOT_TOKEN", "") == ""  # set empty: a .env in its directory cannot fill it in
    assert "PHOTOBOT_WEBHOOK_SECRET" not in env and "MIRROR_URL" not in env
    assert TOKEN.encode() not in raw
