"""`photobot bench scale` run small, as a process (its last stdout line is what people parse): two bot
replicas behind nginx, two inference replicas on Ray Serve, PostgreSQL, one of each SIGKILLed mid-run —
and still every photo answered, at most one answer more than asked, every tap stored."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.ray, pytest.mark.process]


def test_bench_scale_with_kills_loses_no_update_and_stores_every_tap(tmp_path: Path, mnist_path: Path):
    env = {**os.environ, "PHOTOBOT_DATASETS": str(mnist_path.parent), "TF_CPP_MIN_LOG_LEVEL": "2"}
    command = [sys.executable, "-m", "photobot", "bench", "scale", "--bot-replicas", "2"]
    command += ["--inference-replicas", "2", "--users", "4", "--photos", "16", "--kill", "--json"]
    done = subprocess.run(
        [*command, "--dir", str(tmp_path / "work")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=1500,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["sent"] == 16 and result["answered"] == 16 and result["lost"] == 0
    assert [k.split(" pid")[0] for k in result["killed"]] == ["bot replica", "inference replica model-digits"]
    assert 0 <= result["duplicates"] <= 1  # one bot replica killed
    assert result["feedback_stored"] == result["taps"] > 0
    assert result["updates_done"] == result["updates"]  # every update's claim finished, none left running
    assert result["p50_ms"] <= result["p95_ms"] and result["photos_per_s"] > 0
    assert result["ok"] is True
