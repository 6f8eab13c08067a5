"""`photobot bench storage` on both backends in one run: durable writes counted back, nothing lost; and
the crash run on PostgreSQL, the server crashed with the writer at the fourth kill."""

from __future__ import annotations

import re

import pytest

from photobot.cli import main


@pytest.mark.process
def test_bench_storage_measures_both_backends_in_one_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = main(["bench", "storage", "--backend", "both", "--predictions", "300", "--tasks", "10"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert re.search(r"== sqlite: .*photobot\.sqlite3\n", out)
    assert re.search(r"== postgresql: postgresql://postgres@127\.0\.0\.1:\d+/photobot_1\n", out)
    assert out.count("rows on disk: 300 predictions, 300 feedback; lost 0, duplicated 0") == 2
    assert out.count("feedback round trip, one person on an idle store (300 taps)") == 2


@pytest.mark.process
def test_bench_storage_crash_run_on_postgresql_loses_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = main(["bench", "storage", "--backend", "postgresql", "--crash", "4"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "SIGKILL at random moments, 4 times;" in out and "the server crashed too at 1 of them" in out
    assert "amcheck bt_index_check ok, foreign keys ok" in out and out.rstrip().endswith("all yes")
