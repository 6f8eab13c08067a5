"""DATABASE_URL: a PostgreSQL database in place of the SQLite file, and a database that cannot be reached
(no server at that address, a wrong password, no such database, an unreadable URL) is one clear line at
start, naming the host and the database but never the password, and a non-zero exit — not a traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.postgres_server import free_port
from photobot import cli
from photobot.settings import Settings, SettingsError
from storage import SyncStore

SECRET = "not-the-password-42"


def one_line_error(capsys) -> str:
    error = capsys.readouterr().err
    assert "Traceback" not in error
    lines = error.strip().splitlines()
    assert len(lines) == 1, error
    return lines[0]


def test_database_url_replaces_the_sqlite_file_and_is_never_in_repr():
    settings = Settings.from_env({"DATABASE_URL": f"postgresql://bot:{SECRET}@db.example/photobot"}, None)
    assert settings.database == f"postgresql://bot:{SECRET}@db.example/photobot"
    assert SECRET not in repr(settings)
    assert Settings.from_env({}, None).database == Path("var/photobot.sqlite3")


def test_a_database_url_that_is_not_postgresql_is_a_configuration_error():
    with pytest.raises(SettingsError, match="DATABASE_URL must be a PostgreSQL URL") as refused:
        Settings.from_env({"DATABASE_URL": f"mysql://bot:{SECRET}@db.example/photobot"}, None)
    assert SECRET not in str(refused.value)


def test_the_command_line_works_on_postgresql(postgres_url, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DATABASE_URL", postgres_url)
    with SyncStore(postgres_url, tmp_path / "data" / "images") as store:
        store.create_taught_model("pets", [])
    assert cli.main(["export", "--model", "pets", str(tmp_path / "out")]) == 0
    assert not (tmp_path / "data" / "photobot.sqlite3").exists()  # the rows live on the server


def unreachable(server, what: str) -> tuple[str, str]:
    """A DATABASE_URL that fails for `what`, and how its error line must begin."""
    port, cannot = server.port, "photobot export: cannot connect to PostgreSQL at postgresql://postgres@"
    if what == "no server":
        port = free_port()
        return f"postgresql://postgres:{SECRET}@127.0.0.1:{port}/photobot", (
            f"{cannot}127.0.0.1:{port}/photobot: Connection refused; Is the server running"
        )
    if what == "unknown host":
        return f"postgresql://postgres:{SECRET}@nowhere.invalid:5432/photobot", (
            f"{cannot}nowhere.invalid:5432/photobot: failed to resolve host 'nowhere.invalid'"
        )
    if what == "wrong password":
        return f"postgresql://postgres:{SECRET}@127.0.0.1:{port}/postgres", (
            f'{cannot}127.0.0.1:{port}/postgres: password authentication failed for user "postgres"'
        )
    if what == "no such database":
        return f"postgresql://postgres:{server.password}@127.0.0.1:{port}/nowhere", (
            f'{cannot}127.0.0.1:{port}/nowhere: database "nowhere" does not exist'
        )
    return f"postgresql://postgres:{SECRET}@127.0.0.1:{port}/photobot?colour=blue", (
        "photobot export: DATABASE_URL is not a PostgreSQL URL that can be read "
        '(invalid URI query parameter: "colour"); expected postgresql://USER:PASSWORD@HOST:PORT/DATABASE'
    )


@pytest.mark.parametrize(
    "what", ["no server", "unknown host", "wrong password", "no such database", "unreadable URL"]
)
def test_a_database_that_cannot_be_reached_is_one_line_at_start(
    what, postgres_server, tmp_path, monkeypatch, capsys
):
    url, beginning = unreachable(postgres_server, what)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("DATABASE_URL", url)

    code = cli.main(["export", "--model", "digits", str(tmp_path / "out")])

    line = one_line_error(capsys)
    assert code == 1
    assert line.startswith(beginning)
    assert SECRET not in line and postgres_server.password not in line


def test_photobot_run_with_a_wrong_password_exits_with_one_line(postgres_server, tmp_path):
    url, beginning = unreachable(postgres_server, "wrong password")
    env = {
        **os.environ,
        "TELEGRAM_BOT_TOKEN": "123456:not-a-real-token",
        "TELEGRAM_API_URL": f"http://127.0.0.1:{free_port()}",  # never asked: the database comes first
        "DATA_DIR": str(tmp_path / "data"),
        "DATABASE_URL": url,
    }
    done = subprocess.run(
        [sys.executable, "-m", "photobot", "run", "--max-retries", "0"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr and SECRET not in done.stderr + done.stdout
    assert done.stderr.strip().splitlines()[-1] == beginning.replace("photobot export", "photobot run")
