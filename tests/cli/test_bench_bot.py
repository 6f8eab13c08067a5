"""`photobot bench bot`: the real bot and the bare bot against the local Bot API server, round by round."""

from __future__ import annotations

import json

import pytest

from inference.model_store import ModelStore
from photobot.cli import main
from photobot.commands.bench_bot import Scenario, metrics_shares, shares_of_bare
from tests.support.models import (
    add_version,
    digit_meta,
    flower_meta,
)


def scenario(round_: int, bot: str, photos_per_s: float, users: int = 10) -> Scenario:
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
        bot_cpu_ms=20.0,
        server_cpu_ms=3.0,
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


@pytest.mark.process
def test_bench_bot_alternates_the_two_bots_and_reports_every_round(
    tmp_path, monkeypatch, mnist_path, tiny_digit_model, tiny_flower_model, capsys
):
    # Converted already, as the benchmark wants them: it would wait for the bot to convert them first.
    store = ModelStore(tmp_path / "models")
    add_version(store, "digits", tiny_digit_model(tmp_path / "d.keras", converted=True), digit_meta())
    flower_file, ood = tiny_flower_model(tmp_path / "f.keras", converted=True)
    add_version(store, "flowers", flower_file, flower_meta(ood))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PHOTOBOT_DATASETS", str(mnist_path.parent))
    report = tmp_path / "bench.json"
    argv = ["bench", "bot", "--users", "2", "--kinds", "digits", "--photos", "3", "--seconds", "1"]
    argv += ["--warmup", "0.5", "--rounds", "2", "--models", str(store.root), "--json", str(report)]
    assert main(argv) == 0
    rows = json.loads(report.read_text())
    order = [(r["round"], r["bot"]) for r in rows]
    assert order == [(1, "bare"), (1, "photobot"), (2, "bare"), (2, "photobot")]
    assert all(r["photos"] > 0 and r["p95_ms"] is not None for r in rows)
    assert all(r["answered"] > 0 for r in rows if r["bot"] == "photobot")  # answers with ✅ / ❌ buttons
    assert all(r["answered"] == 0 for r in rows if r["bot"] == "bare")  # it replies "ok", nothing more
    assert "digits, 2 users: PhotoBot reaches" in capsys.readouterr().out
