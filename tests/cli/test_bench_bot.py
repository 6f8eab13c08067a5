"""`photobot bench bot`: the real bot and the bare bot against the local Bot API server, round by round."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest

from inference.model_store import ModelStore
from photobot.cli import main
from photobot.commands.bench_bot_report import Scenario, backend_pairs, metrics_shares, shares_of_bare
from tests.support.models import (
    add_version,
    digit_meta,
    flower_meta,
)


def scenario(
    round_: int,
    bot: str,
    photos_per_s: float,
    users: int = 10,
    backend: str | None = None,
    bot_cpu_ms: float = 20.0,
    database_cpu_ms: float | None = None,
) -> Scenario:
    return Scenario(
        round=round_,
        bot=bot,
        kind="digits",
        users=users,
        photos=int(photos_per_s * 10),
        seconds=10.0,
        photos_per_s=photos_per_s,
        p50_ms=100.0,
        p95_ms=200.0,
        answered=int(photos_per_s * 10),
        bot_cpu_ms=bot_cpu_ms,
        server_cpu_ms=3.0,
        backend=backend,
        database_cpu_ms=database_cpu_ms,
    )


def test_each_round_compares_photobot_with_the_bare_bot_of_that_round():
    results = [
        scenario(1, "bare", 100.0),
        scenario(1, "photobot", 60.0),
        scenario(2, "bare", 200.0),
        scenario(2, "photobot", 80.0),
        scenario(3, "photobot", 70.0),  # no bare bot measured in round 3: no ratio
        scenario(1, "bare", 50.0, users=1),
        scenario(1, "photobot", 25.0, users=1),
    ]
    assert shares_of_bare(results) == {("digits", 1): [50.0], ("digits", 10): [60.0, 40.0]}


def test_metrics_on_is_compared_with_photobot_without_them_in_the_same_round():
    results = [
        scenario(1, "bare", 100.0),
        scenario(1, "photobot", 50.0),
        scenario(1, "metrics", 45.0),
        scenario(2, "metrics", 60.0),  # the order swaps every round
        scenario(2, "photobot", 40.0),
        scenario(3, "metrics", 70.0),  # PhotoBot without metrics not measured in round 3: no ratio
    ]
    assert metrics_shares(results) == {("digits", 10): [90.0, 150.0]}
    assert shares_of_bare(results) == {("digits", 10): [50.0]}


def test_the_backends_are_compared_round_by_round_with_postgresql_as_a_ratio_of_sqlite():
    results = [
        scenario(1, "bare", 100.0),
        scenario(1, "photobot", 50.0, backend="sqlite", bot_cpu_ms=10.0),
        scenario(1, "photobot", 40.0, backend="postgresql", bot_cpu_ms=12.0, database_cpu_ms=3.0),
        scenario(2, "photobot", 30.0, backend="postgresql", bot_cpu_ms=15.0, database_cpu_ms=5.0),
        scenario(2, "photobot", 60.0, backend="sqlite", bot_cpu_ms=10.0),  # the order swaps
        scenario(3, "photobot", 70.0, backend="sqlite"),  # PostgreSQL not measured in round 3: no pair
    ]
    pairs = backend_pairs(results)
    assert [(p.round, p.sqlite.photos_per_s, p.postgresql.photos_per_s) for p in pairs] == [
        (1, 50.0, 40.0),
        (2, 60.0, 30.0),
    ]
    assert [p.throughput_ratio for p in pairs] == [0.8, 0.5]
    assert [p.bot_cpu_ratio for p in pairs] == [1.2, 1.5]
    # SQLite works inside the bot's process; PostgreSQL's server is counted beside the bot.
    assert [p.cpu_ratio for p in pairs] == [1.5, 2.0]
    assert pairs[0].as_json()["ratio"] == {
        "photos_per_s": 0.8,
        "bot_cpu_ms": 1.2,
        "cpu_ms_with_database": 1.5,
    }
    assert pairs[0].as_json()["postgresql"]["database_cpu_ms"] == 3.0
    # Each backend against the bare bot of its own round.
    on_postgresql = [r for r in results if r.backend in (None, "postgresql")]
    assert shares_of_bare(on_postgresql) == {("digits", 10): [40.0]}


def converted_store(tmp_path, tiny_digit_model, tiny_flower_model) -> ModelStore:
    """Tiny models, converted already, as the benchmark wants them: it would wait for the bot to convert
    them first."""
    store = ModelStore(tmp_path / "models")
    add_version(store, "digits", tiny_digit_model(tmp_path / "d.keras", converted=True), digit_meta())
    flower_file, ood = tiny_flower_model(tmp_path / "f.keras", converted=True)
    add_version(store, "flowers", flower_file, flower_meta(ood))
    return store


def two_small_rounds(tmp_path, monkeypatch, capsys, mnist_path, store, *options: str) -> tuple[dict, str]:
    """`photobot bench bot` for two rounds of two users and three digit photos, run from `tmp_path`:
    its --json report (the last line it prints) and all it printed."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PHOTOBOT_DATASETS", str(mnist_path.parent))
    argv = ["bench", "bot", "--users", "2", "--kinds", "digits", "--photos", "3", "--seconds", "1"]
    argv += ["--warmup", "0.5", "--rounds", "2", *options, "--models", str(store.root), "--json"]
    capsys.readouterr()
    assert main(argv) == 0
    out = capsys.readouterr().out
    return json.loads(out.strip().splitlines()[-1]), out


@pytest.mark.process
def test_bench_bot_alternates_the_two_bots_and_reports_every_round(
    tmp_path, monkeypatch, mnist_path, tiny_digit_model, tiny_flower_model, capsys
):
    store = converted_store(tmp_path, tiny_digit_model, tiny_flower_model)
    result, out = two_small_rounds(tmp_path, monkeypatch, capsys, mnist_path, store)
    rows = result["scenarios"]
    order = [(r["round"], r["bot"]) for r in rows]
    assert order == [(1, "bare"), (1, "photobot"), (2, "bare"), (2, "photobot")]
    assert all(r["photos"] > 0 and r["p95_ms"] is not None for r in rows)
    assert all(r["answered"] > 0 for r in rows if r["bot"] == "photobot")  # answers with ✅ / ❌ buttons
    assert all(r["answered"] == 0 for r in rows if r["bot"] == "bare")  # it replies "ok", nothing more
    assert "digits, 2 users: PhotoBot reaches" in out


@pytest.mark.process
def test_bench_bot_runs_photobot_on_sqlite_and_on_a_throwaway_postgresql_in_turn_and_compares_them(
    tmp_path, monkeypatch, mnist_path, tiny_digit_model, tiny_flower_model, capsys
):
    store = converted_store(tmp_path, tiny_digit_model, tiny_flower_model)
    options = ("--no-bare", "--backend", "both")
    result, out = two_small_rounds(tmp_path, monkeypatch, capsys, mnist_path, store, *options)
    rows = result["scenarios"]
    order = [(r["round"], r["bot"], r["backend"]) for r in rows]
    assert order == [
        (1, "photobot", "sqlite"),
        (1, "photobot", "postgresql"),
        (2, "photobot", "postgresql"),  # whichever went second goes first in the next round
        (2, "photobot", "sqlite"),
    ]
    assert all(r["photos"] > 0 and r["answered"] > 0 for r in rows)
    # Every answer with buttons names a prediction stored before it was sent, in that bot's database:
    # the PostgreSQL bot's rows are on the server, not in a SQLite file of its data folder.
    assert all(r["stored"] >= r["answered"] for r in rows)
    # The PostgreSQL server's CPU is measured beside the bot's: it works outside the bot's processes.
    assert all((r["database_cpu_ms"] is not None) == (r["backend"] == "postgresql") for r in rows)
    pairs = result["backends"]
    assert [(p["round"], p["kind"], p["users"]) for p in pairs] == [(1, "digits", 2), (2, "digits", 2)]
    for pair in pairs:
        sqlite, postgresql = pair["sqlite"]["photos_per_s"], pair["postgresql"]["photos_per_s"]
        assert sqlite > 0 and postgresql > 0
        assert pair["ratio"]["photos_per_s"] == pytest.approx(postgresql / sqlite)
    assert "PhotoBot on SQLite and on PostgreSQL, the same round" in out
    assert "digits, 2 users: PhotoBot on PostgreSQL reaches" in out


def processes_inside(folder: Path) -> list[str]:
    """The live processes (zombies left out) whose working folder is inside `folder`: a bot, its
    children, a PostgreSQL server in its data folder."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
            cwd = Path(os.readlink(proc / "cwd"))
        except OSError:  # gone meanwhile
            continue
        if state != "Z" and cwd.is_relative_to(folder):
            found.append(f"{proc.name} {(proc / 'cmdline').read_bytes()[:80]!r}")
    return found


@pytest.fixture
def bench_temp(monkeypatch):
    """The run's temporary folders (the bench's and the throwaway server's) in a folder of this test's,
    which PostgreSQL's own user can reach (pytest's tmp_path is root's alone)."""
    folder = Path(tempfile.mkdtemp(prefix="photobot-test-bench-bot-"))
    folder.chmod(0o755)
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.process
def test_a_bot_that_never_starts_is_stopped_with_what_it_started_and_the_postgresql_server_removed(
    tmp_path, monkeypatch, mnist_path, bench_temp, capsys
):
    # A checkout whose bot runs, starts a child of its own, and never polls (a hung start-up).
    hung = tmp_path / "hung" / "photobot"
    hung.mkdir(parents=True)
    (hung / "__init__.py").write_text("")
    (hung / "__main__.py").write_text(
        "import subprocess, sys, time\n"
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'])\n"
        "time.sleep(600)\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PHOTOBOT_DATASETS", str(mnist_path.parent))
    argv = ["bench", "bot", "--users", "1", "--kinds", "digits", "--photos", "1", "--no-bare"]
    argv += ["--backend", "postgresql", "--checkout", str(hung.parent), "--start-timeout", "3"]
    assert main(argv) == 1
    assert "the checkout bot did not start (no poll in 3 s)" in capsys.readouterr().err
    # SIGKILL is delivered at once, but a process takes a moment to be gone from /proc.
    for _ in range(100):
        if not processes_inside(bench_temp):
            break
        time.sleep(0.1)
    assert processes_inside(bench_temp) == []
    assert list(bench_temp.iterdir()) == []  # the server's folder and the bench's, both removed
