"""`photobot experiment`: compare architectures over repeated random splits, the course's way.

    photobot experiment --arch mlp:800 --arch mlp:10 --arch mlp:10,10 --arch mlp:1 --arch cnn \\
        --splits 100 --epochs 20 [--data digits|flowers] [--out DIR] [--jobs N]

Interrupt it at any time: the same command resumes where it stopped, and several processes (or
machines sharing the folder) can run it at once to share the work.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from photobot.errors import UserFacingError
from photobot.settings import Settings

if TYPE_CHECKING:
    from training.experiment import ExperimentConfig

DEFAULT_ARCHS = ("mlp:800", "mlp:10", "mlp:10,10", "mlp:1", "cnn")
FLOWER_ARCHS = ("linear", "mlp:256")  # heads on the backbone features


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--arch",
        action="append",
        metavar="SPEC",
        help="an architecture: mlp:H, mlp:H1,H2,…, cnn (digits) or linear (flowers); repeat it. Default: "
        f"the course's five for digits ({' '.join(DEFAULT_ARCHS)}), {' '.join(FLOWER_ARCHS)} for flowers",
    )
    parser.add_argument("--splits", type=int, default=10, help="random 80/20 splits per architecture (10)")
    parser.add_argument("--epochs", type=int, default=5, help="training epochs per run (5)")
    parser.add_argument("--data", choices=("digits", "flowers"), default="digits", help="data set (digits)")
    parser.add_argument(
        "--out",
        type=Path,
        help="results folder (default: $DATA_DIR/experiments/<data>-<epochs>ep-seed<seed>)",
    )
    parser.add_argument(
        "--jobs", type=int, help="parallel runs (default: one per CPU core; 1 when there is a GPU)"
    )
    parser.add_argument("--seed", type=int, default=0, help="fixes every split and every run's weights (0)")
    parser.add_argument("--batch-size", type=int, default=200, help="training batch size (200)")
    parser.add_argument(
        "--limit", type=int, help="use a fixed random subset of this many examples (quick tries)"
    )
    parser.add_argument(
        "--report-only", action="store_true", help="train nothing; report on the runs already finished"
    )


def main(args: argparse.Namespace, settings: Settings) -> int:
    from training.experiment import ExperimentError
    from training.experiment_report import build_report, format_table, write_report

    config = _config(args)
    out_dir = (
        args.out or settings.data_dir / "experiments" / f"{config.data}-{config.epochs}ep-seed{config.seed}"
    )
    try:
        if args.report_only:
            finished, wall = _finished_runs(config, out_dir), None
        else:
            finished, wall = _run(config, out_dir, args.jobs, settings)
    except ExperimentError as error:
        raise UserFacingError(str(error)) from error
    if not finished:
        raise UserFacingError(f"no finished runs in {out_dir} yet")
    report = build_report(config, finished, wall_seconds=wall)
    written = write_report(report, out_dir)
    print(format_table(report))
    print("\nwritten: " + ", ".join(str(p) for p in written.values()))
    return 0


def _run(
    config: ExperimentConfig, out_dir: Path, jobs: int | None, settings: Settings
) -> tuple[dict[str, dict], float]:
    """Run or resume the experiment with a progress bar on stderr; (finished runs, wall seconds)."""
    from training.experiment import DataLocation, Progress, default_jobs, run_experiment

    jobs = jobs or default_jobs()
    print(
        f"experiment in {out_dir}: {len(config.archs)} architectures × {config.splits} splits, "
        f"{config.epochs} epochs, {jobs} parallel run(s)",
        file=sys.stderr,
    )
    location = DataLocation(tuple(settings.datasets), settings.data_dir)
    started = time.monotonic()
    finished = run_experiment(config, location, out_dir, jobs=jobs, progress=Progress(sys.stderr, jobs))
    return finished, time.monotonic() - started


def _finished_runs(config: ExperimentConfig, out_dir: Path) -> dict[str, dict]:
    """The runs already in `out_dir`, after checking that it holds this experiment."""
    from training.experiment import CONFIG_FILE, ResultsFile

    if not (out_dir / CONFIG_FILE).is_file():
        raise UserFacingError(f"no experiment in {out_dir} (give the --out of the experiment to report on)")
    results = ResultsFile(out_dir)
    results.prepare(config)  # refuses settings that differ from the experiment's
    return results.read(config)


def _config(args: argparse.Namespace) -> ExperimentConfig:
    from training.experiment import ExperimentConfig, parse_arch

    try:
        archs = tuple(dict.fromkeys(parse_arch(a, args.data) for a in (args.arch or _defaults(args.data))))
    except ValueError as error:
        raise UserFacingError(str(error)) from error
    for name in ("splits", "epochs", "batch_size"):
        if getattr(args, name) < 1:
            raise UserFacingError(f"--{name.replace('_', '-')} must be at least 1")
    if args.limit is not None and args.limit < 10:
        raise UserFacingError("--limit must be at least 10 examples")
    return ExperimentConfig(
        archs=archs,
        splits=args.splits,
        epochs=args.epochs,
        data=args.data,
        seed=args.seed,
        batch_size=args.batch_size,
        limit=args.limit,
    )


def _defaults(data: str) -> tuple[str, ...]:
    return DEFAULT_ARCHS if data == "digits" else FLOWER_ARCHS
