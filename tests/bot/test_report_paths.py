"""Report paths come from the jobs table: the bot sends report text and pictures only from DATA_DIR/reports.

A real bot talks HTTP to the local Bot API server; the job process is a stand-in executable (the outer
boundary: whatever wrote the database) that records a finished job whose report paths point elsewhere.
"""

from __future__ import annotations

import asyncio
import sys
import textwrap
from pathlib import Path

import pytest
from PIL import Image

from bot.retrain_progress import caption
from bot.retraining import RetrainRunner, report_path
from inference.model_store import ModelStore
from photobot.settings import Settings
from photobot.wiring import retrain_config
from tests.support.bot import ADMIN_ID, start_bot, stop_bot
from tests.support.models import add_version, digit_meta

FAKE_JOB = textwrap.dedent(
    """\
    #!{python}
    import os, sys
    from pathlib import Path
    from storage import SyncStore
    job_id = int(sys.argv[sys.argv.index("--job-id") + 1])
    data = Path(os.environ["DATA_DIR"])
    inside = data / "reports" / "digits-job1"
    inside.mkdir(parents=True)
    from PIL import Image
    Image.new("RGB", (4, 4), "white").save(inside / "confusion.png")
    with SyncStore(data / "photobot.sqlite3", data / "images") as store:
        store.start_retrain_job(job_id, os.getpid())
        store.finish_retrain_job(job_id, status="succeeded", decision="skipped", reason="tampered", metrics={{
            "report_dir": {outside!r},
            "report_images": [{secret!r}, str(inside / ".." / ".." / ".." / "secret.png"),
                              str(inside / "confusion.png")],
        }})
    """
)


def test_a_report_path_outside_the_reports_folder_is_refused(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "var")
    reports = (tmp_path / "var" / "reports").resolve()
    (reports / "digits-job1").mkdir(parents=True)
    (reports / "link.png").symlink_to(tmp_path / "secret.png")
    assert (
        report_path(settings.data_dir, str(reports / "digits-job1" / "curves.png"))
        == reports / "digits-job1" / "curves.png"
    )
    assert (
        report_path(settings.data_dir, str(reports / "digits-job1" / ".." / ".." / "photobot.sqlite3"))
        is None
    )
    assert report_path(settings.data_dir, "/etc/passwd") is None
    assert report_path(settings.data_dir, str(reports / "link.png")) is None  # a symlink out
    assert report_path(settings.data_dir, "") is None and report_path(settings.data_dir, None) is None


@pytest.mark.asyncio
async def test_the_bot_never_sends_a_report_file_from_outside_data_dir(
    tmp_path: Path, tiny_digit_model
) -> None:
    models = tmp_path / "models"
    # Converted already: the bot starts without a conversion process of its own.
    model_file = tiny_digit_model(tmp_path / "tiny.keras", hidden=8, converted=True)
    add_version(ModelStore(models), "digits", model_file, digit_meta(metrics={}, augmented=False))
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "report.txt").write_text("SECRET REPORT TEXT")
    secret = tmp_path / "secret.png"
    Image.new("RGB", (7, 5), "red").save(secret)
    job = tmp_path / "fake-job"
    job.write_text(FAKE_JOB.format(python=sys.executable, outside=str(outside), secret=str(secret)))
    job.chmod(0o755)
    bot = await start_bot(tmp_path / "data", models)
    try:
        runner = RetrainRunner(retrain_config(bot.settings), python=str(job), poll_s=0.1, nice=0)
        bot.application.bot_data["retraining"] = runner
        admin = bot.user(ADMIN_ID, "Root")
        start = bot.server.chat(admin).revision
        await bot.say(admin, "/retrain digits")
        await bot.server.wait_for(
            admin,
            lambda e: (
                e["type"] == "message" and e["message"].get("text", "").startswith("Retraining digits ended")
            ),
            after=start,
            timeout=60,
        )
        for job_id in list(runner.running):
            await asyncio.wait_for(runner.wait(job_id), 60)
        sent = [e["message"] for e in bot.server.chat(admin).events if e["type"] == "message"]
    finally:
        await stop_bot(bot)
    texts = [m.get("text", "") for m in sent]
    assert "Retraining digits ended: tampered" in texts  # the stored reason, not the file outside
    assert not any("SECRET" in text for text in texts)
    photos = [m for m in sent if "photo" in m]
    # only the picture inside DATA_DIR/reports, with its title
    assert [m.get("caption") for m in photos] == [caption("confusion")]
