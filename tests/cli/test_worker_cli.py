"""`photobot worker` and the job options it uses say what is wrong in one line, before anything starts."""

from __future__ import annotations

import pytest

from photobot import cli


@pytest.fixture
def empty_folder(tmp_path, monkeypatch):
    """No .env, no token, no database URL: only what a test sets."""
    monkeypatch.chdir(tmp_path)
    for name in ("TELEGRAM_BOT_TOKEN", "DATABASE_URL", "RETRAIN_WORKERS", "RETRAIN_LEASE_S"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "var"))
    return tmp_path


def test_a_worker_without_the_bot_token_says_why_it_needs_one(empty_folder, capsys) -> None:
    assert cli.main(["worker", "--once"]) == 1
    error = capsys.readouterr().err.strip()
    assert error == (
        "photobot worker: TELEGRAM_BOT_TOKEN is not set: the worker edits the admin's progress message "
        "and sends the report with the bot's token"
    )
    assert not (empty_folder / "var").exists()  # nothing opened


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--job-id", "3", "--worker", "gpu1"], "--worker must be host/pid/tag, got 'gpu1'"),
        (["--worker", "gpu1/42/ab"], "--worker needs the --job-id the worker claimed"),
    ],
)
def test_a_job_given_a_bad_worker_is_refused_in_one_line(empty_folder, capsys, args, message) -> None:
    assert cli.main(["retrain", "--model", "digits", *args]) == 1
    assert capsys.readouterr().err.strip() == f"photobot retrain: {message}"


def test_a_bad_workers_setting_is_a_configuration_error(empty_folder, monkeypatch, capsys) -> None:
    monkeypatch.setenv("RETRAIN_WORKERS", "gpu")
    assert cli.main(["worker"]) == 2
    assert "RETRAIN_WORKERS must be one of embedded, external, got 'gpu'" in capsys.readouterr().err
    monkeypatch.setenv("RETRAIN_WORKERS", "external")
    monkeypatch.setenv("RETRAIN_LEASE_S", "0")
    assert cli.main(["worker"]) == 2
    assert "RETRAIN_LEASE_S must be above 0, got 0.0" in capsys.readouterr().err
