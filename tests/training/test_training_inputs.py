"""Training modules take their dataset folders from their caller, never from the environment.

`photobot` passes Settings' values (read from `.env` and the environment in one place); the
`python -m training.…` commands take `--datasets` and `--data-dir`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import REPO
from training.non_flowers import synthetic_non_flowers

ROOT = REPO


def test_drawn_digit_photos_come_from_the_mnist_file_given_not_the_environment(
    mnist_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PHOTOBOT_DATASETS", raising=False)
    photos = list(synthetic_non_flowers(3, seed=3, kinds=("digits",), mnist_file=mnist_path))
    assert [kind for kind, _ in photos] == ["digits"] * 3
    assert all(image.size[0] > 0 and image.mode == "RGB" for _, image in photos)
    with pytest.raises(FileNotFoundError, match=r"mnist\.npz not found"):
        list(synthetic_non_flowers(1, seed=4, kinds=("digits",), mnist_file=None))


def test_the_synth_photos_command_reads_mnist_from_its_datasets_option(
    tmp_path: Path, mnist_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("PHOTOBOT_DATASETS", "DATA_DIR")}
    out = tmp_path / "photos"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "training.synth_photos",
            "--out",
            str(out),
            "--n",
            "4",
            "--size",
            "320x240",
            "--datasets",
            str(mnist_path.parent),
            "--data-dir",
            str(tmp_path / "empty"),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(list(out.rglob("*.jpg"))) == 4
    assert done.stdout.startswith("wrote 4 photos to ")
