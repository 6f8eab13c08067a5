"""`photobot bench retrain`: the retraining figures (see `training.retrain_demo`).

By default the serving versions of this data dir's store are the starting point: a fresh data dir
under --out gets copies of them, so the store itself is never changed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from photobot.errors import UserFacingError
from photobot.settings import Settings


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out", type=Path, default=Path("var/bench-retrain"), help="a fresh folder (replaced)"
    )
    parser.add_argument("--base-model", type=Path, help="digits version dir (default: the serving one)")
    parser.add_argument("--flowers-model", type=Path, help="flowers version dir (default: the serving one)")
    parser.add_argument("--no-flowers", action="store_true", help="skip the flowers retrain")
    parser.add_argument("--photos", type=int, default=100, help="labelled photos of the new style")
    parser.add_argument("--eval", type=int, default=200, help="more photos of that style, for measuring")
    parser.add_argument("--poison", type=int, default=100, help="photos with wrong labels from one user")
    parser.add_argument("--job-args", nargs=argparse.REMAINDER, default=[], help="passed to photobot retrain")


def main(args: argparse.Namespace, settings: Settings) -> int:
    from inference.model_store import ModelStore
    from training import retrain_demo

    store = ModelStore(settings.models_dir)
    base = args.base_model or _serving(store, "digits")
    if base is None:
        raise UserFacingError(f"no digits version serves in {settings.models_dir}; give --base-model")
    argv = ["--out", str(args.out), "--base-model", str(base)]
    argv += ["--photos", str(args.photos), "--eval", str(args.eval), "--poison", str(args.poison)]
    flowers = None if args.no_flowers else (args.flowers_model or _serving(store, "flowers"))
    if flowers is not None:
        argv += ["--flowers-model", str(flowers)]
        cache = settings.data_dir / "cache" / "bottlenecks"
        if cache.is_dir():
            argv += ["--bottleneck-cache", str(cache)]
    if settings.datasets:
        argv += ["--datasets", *map(str, settings.datasets)]
    return retrain_demo.main([*argv, "--job-args", *args.job_args] if args.job_args else argv)


def _serving(store, name: str) -> Path | None:
    version = store.active(name)
    return version.path if version is not None else None
