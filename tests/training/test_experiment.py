"""`photobot experiment`: paired reproducible splits, resumable shared results, a real tiny experiment.

The experiments here are real (real MNIST digits, real Keras models) but tiny: a few hundred digits,
one epoch, MLPs with a handful of units, so each run takes about a second.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from photobot import cli
from training.experiment import (
    DataLocation,
    ExperimentConfig,
    ExperimentError,
    Progress,
    ResultsFile,
    Run,
    parse_arch,
    planned_runs,
    run_experiment,
    run_seed,
    split_digest,
    split_indices,
    work,
)
from training.experiment_report import build_report

TINY = {"splits": 2, "epochs": 1, "limit": 300, "batch_size": 50}


@pytest.fixture
def location(mnist_path: Path, tmp_path: Path) -> DataLocation:
    return DataLocation((mnist_path.parent,), tmp_path / "var")


def _lines(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines() if line.strip()]


def test_arch_specs_are_checked_and_made_canonical() -> None:
    assert parse_arch("MLP:10, 10") == "mlp:10,10"
    assert parse_arch("mlp:800") == "mlp:800"
    assert parse_arch(" cnn ") == "cnn"
    for bad in ("mlp:", "mlp:0", "mlp:ten", "resnet", "cnn:3"):
        with pytest.raises(ValueError):
            parse_arch(bad)
    with pytest.raises(ValueError, match="digit images only"):
        parse_arch("cnn", data="flowers")


def test_split_is_an_80_20_partition_fixed_by_the_seed_and_split_number() -> None:
    train, test = split_indices(70_000, 3, seed=7, test_fraction=0.2)
    assert (len(train), len(test)) == (56_000, 14_000)
    assert np.array_equal(np.sort(np.concatenate([train, test])), np.arange(70_000))
    again_train, again_test = split_indices(70_000, 3, seed=7, test_fraction=0.2)
    assert np.array_equal(train, again_train) and np.array_equal(test, again_test)
    other_split = split_indices(70_000, 4, seed=7, test_fraction=0.2)[1]
    other_seed = split_indices(70_000, 3, seed=8, test_fraction=0.2)[1]
    assert len(np.intersect1d(test, other_split)) < 4_000  # about 20% overlap by chance, not identical
    assert len(np.intersect1d(test, other_seed)) < 4_000


def test_run_seeds_are_reproducible_and_distinct_per_arch_and_split() -> None:
    seeds = {(a, k): run_seed(0, k, a) for a in ("mlp:800", "mlp:10", "cnn") for k in range(20)}
    assert len(set(seeds.values())) == len(seeds)
    assert run_seed(0, 5, "cnn") == seeds[("cnn", 5)]
    assert run_seed(1, 5, "cnn") != seeds[("cnn", 5)]


def test_runs_go_architecture_by_architecture_in_the_order_given() -> None:
    config = ExperimentConfig(archs=("mlp:800", "cnn"), splits=2)
    assert [r.run_id for r in planned_runs(config)] == ["mlp:800@0", "mlp:800@1", "cnn@0", "cnn@1"]


@pytest.mark.slow  # trains every run of a real experiment
def test_every_architecture_trains_on_the_same_split_k_and_the_record_proves_it(
    location: DataLocation, tmp_path: Path
) -> None:
    config = ExperimentConfig(archs=("mlp:4", "mlp:2"), seed=11, **TINY)
    finished = run_experiment(config, location, tmp_path / "out", jobs=1)
    assert sorted(finished) == ["mlp:2@0", "mlp:2@1", "mlp:4@0", "mlp:4@1"]
    for k in range(2):
        expected = split_digest(*split_indices(300, k, seed=11, test_fraction=0.2))
        assert finished[f"mlp:4@{k}"]["split_digest"] == finished[f"mlp:2@{k}"]["split_digest"] == expected
    assert finished["mlp:4@0"]["split_digest"] != finished["mlp:4@1"]["split_digest"]
    for run_id, record in finished.items():
        arch, split = run_id.split("@")
        assert record["seed"] == run_seed(11, int(split), arch)
        assert (record["n_train"], record["n_test"]) == (240, 60)
        assert 0.0 <= record["test_accuracy"] <= 1.0 and 0.0 <= record["train_accuracy"] <= 1.0
    # Same seed, fresh folder: the same weights and data, so the same accuracies.
    again = run_experiment(config, location, tmp_path / "again", jobs=1)
    for run_id, record in finished.items():
        assert again[run_id]["test_accuracy"] == pytest.approx(record["test_accuracy"], abs=1e-9)


@pytest.mark.slow  # trains every run of a real experiment
def test_resume_skips_finished_runs_and_more_splits_extend_the_experiment(
    location: DataLocation, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    config = ExperimentConfig(archs=("mlp:3",), **TINY)
    first = run_experiment(config, location, out, jobs=1)
    assert work(config, location, out) == 0  # nothing left to do: nothing is trained again
    bigger = ExperimentConfig(archs=("mlp:3",), **{**TINY, "splits": 3})
    assert work(bigger, location, out) == 1
    records = _lines(out)
    assert [r["run_id"] for r in records] == ["mlp:3@0", "mlp:3@1", "mlp:3@2"]
    assert records[0]["finished"] == first["mlp:3@0"]["finished"]


def test_a_different_experiment_in_the_same_folder_is_refused(location: DataLocation, tmp_path: Path) -> None:
    ResultsFile(tmp_path).prepare(ExperimentConfig(archs=("mlp:3",), epochs=1))
    with pytest.raises(ExperimentError, match="epochs=1 there, 2 now"):
        ResultsFile(tmp_path).prepare(ExperimentConfig(archs=("mlp:3",), epochs=2))
    ResultsFile(tmp_path).prepare(
        ExperimentConfig(archs=("mlp:3", "cnn"), splits=50, epochs=1)
    )  # extending: fine


def test_a_line_cut_short_by_a_crash_is_skipped_and_the_next_record_stays_whole(tmp_path: Path) -> None:
    config = ExperimentConfig(archs=("mlp:3",))
    results = ResultsFile(tmp_path)
    results.prepare(config)
    record = {"run_id": "mlp:3@0", "arch": "mlp:3", "split": 0, "experiment": config.fingerprint()}
    results.path.write_text('{"run_id": "mlp:3@1", "ar')  # a writer killed mid-line
    results.append(record)
    assert results.read(config) == {"mlp:3@0": record}


@pytest.mark.slow  # trains every run of a real experiment
def test_a_run_claimed_by_another_process_is_left_to_it_and_taken_over_when_it_dies(
    location: DataLocation, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    config = ExperimentConfig(archs=("mlp:3",), **{**TINY, "splits": 3})
    results = ResultsFile(out)
    results.prepare(config)
    lock = results.claims / "mlp_3@0.lock"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import fcntl, os, sys, time
                fd = os.open({str(lock)!r}, os.O_RDWR | os.O_CREAT)
                fcntl.lockf(fd, fcntl.LOCK_EX)
                print("locked", flush=True)
                time.sleep(6)  # then "dies" without a result
                """
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        assert work(config, location, out) == 3
    finally:
        holder.kill()
        holder.wait()
    assert [r["run_id"] for r in _lines(out)] == ["mlp:3@1", "mlp:3@2", "mlp:3@0"]


@pytest.mark.slow  # trains every run of a real experiment
def test_two_worker_processes_share_the_runs_without_doing_any_twice(
    location: DataLocation, tmp_path: Path
) -> None:
    config = ExperimentConfig(archs=("mlp:3", "mlp:2"), **TINY)
    finished = run_experiment(config, location, tmp_path / "out", jobs=2)
    records = _lines(tmp_path / "out")
    assert sorted(r["run_id"] for r in records) == sorted(r.run_id for r in planned_runs(config))
    assert len({r["pid"] for r in records}) == 2  # both workers did some
    for record in finished.values():  # the workers used the seeds and splits the experiment fixes
        assert record["seed"] == run_seed(0, record["split"], record["arch"])
        assert record["split_digest"] == split_digest(*split_indices(300, record["split"], 0, 0.2))


def test_progress_shows_runs_done_time_per_run_and_time_left() -> None:
    class Stream:
        def __init__(self) -> None:
            self.text = ""

        def write(self, text: str) -> None:
            self.text += text

        def flush(self) -> None:
            pass

        def isatty(self) -> bool:
            return False

    stream = Stream()
    progress = Progress(stream, jobs=2)  # type: ignore[arg-type]
    ids = [Run(a, k).run_id for a in ("mlp:800", "cnn") for k in range(3)]
    progress.start({}, ids)
    done = {
        "mlp:800@0": {"arch": "mlp:800", "seconds": 10.0},
        "mlp:800@1": {"arch": "mlp:800", "seconds": 14.0},
        "cnn@0": {"arch": "cnn", "seconds": 100.0},
    }
    progress.update({k: v for k, v in done.items() if k != "cnn@0"})
    assert stream.text.strip().splitlines()[-1] == (
        "[########................] 2/6 runs · 12.0 s/run · ~0m24s left if cnn runs as fast as the others"
    )
    progress.update(done)
    last = stream.text.strip().splitlines()[-1]
    # left: one mlp:800 (12 s) + two cnn (100 s each) on 2 jobs = 106 s
    assert last == "[############............] 3/6 runs · 41.3 s/run · ~1m46s left"


@pytest.mark.slow  # trains every run of a real experiment
def test_the_command_runs_a_tiny_experiment_end_to_end_and_writes_table_csv_and_png(
    mnist_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("PHOTOBOT_DATASETS", str(mnist_path.parent))
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "var"))
    out = tmp_path / "exp"
    argv = ["experiment", "--arch", "mlp:16", "--arch", "mlp:1", "--splits", "3", "--epochs", "1"]
    argv += ["--limit", "600", "--batch-size", "50", "--jobs", "1", "--out", str(out)]
    assert cli.main(argv) == 0
    table = capsys.readouterr().out
    records = {r["run_id"]: r for r in _lines(out)}
    assert len(records) == 6
    mean_16 = np.mean([records[f"mlp:16@{k}"]["test_accuracy"] for k in range(3)])
    assert "mlp:16  " in table and f"{mean_16 * 100:.2f}" in table
    assert "Ranking by mean test accuracy: mlp:16 > mlp:1" in table  # 16 units beat 1 even on 480 digits

    summary = (out / "summary.csv").read_text().splitlines()
    assert summary[0].startswith("arch,parameters,runs,seconds_per_run,test_mean,test_std")
    row = dict(zip(summary[0].split(","), summary[1].split(","), strict=True))
    assert row["arch"] == "mlp:16" and row["runs"] == "3"
    assert float(row["test_mean"]) == pytest.approx(mean_16)
    comparisons = (out / "comparisons.csv").read_text().splitlines()
    assert len(comparisons) == 2 and comparisons[1].startswith("mlp:16,mlp:1,3,")

    markdown = (out / "report.md").read_text()
    assert "| mlp:16 |" in markdown and "![test and training accuracy" in markdown
    with Image.open(out / "accuracy.png") as png:
        assert png.format == "PNG" and png.width > 300 and png.height > 200

    # Resumed with the same command: nothing retrained, the same report.
    assert cli.main([*argv[:-2], "--report-only", "--out", str(out)]) == 0
    assert len(_lines(out)) == 6
    assert f"{mean_16 * 100:.2f}" in capsys.readouterr().out


@pytest.mark.slow
def test_flowers_compare_heads_on_backbone_features_computed_once_and_cached(
    flowers_path: Path, tmp_path: Path
) -> None:
    location = DataLocation((flowers_path.parent,), tmp_path / "var")
    config = ExperimentConfig(archs=("linear", "mlp:32"), data="flowers", splits=2, epochs=3, limit=50)
    finished = run_experiment(config, location, tmp_path / "out", jobs=1)
    assert sorted(finished) == ["linear@0", "linear@1", "mlp:32@0", "mlp:32@1"]
    assert finished["linear@0"]["parameters"] == 1280 * 5 + 5  # the softmax head on 1280 features
    assert finished["linear@0"]["split_digest"] == finished["mlp:32@0"]["split_digest"]
    assert all((r["n_train"], r["n_test"]) == (40, 10) for r in finished.values())
    cached = list((tmp_path / "var" / "cache" / "bottlenecks").rglob("*.npy"))
    assert len(cached) == 50


def test_report_pairs_only_the_splits_both_architectures_finished() -> None:
    config = ExperimentConfig(archs=("mlp:800", "mlp:10"), splits=4, epochs=5)
    accuracies = {"mlp:800": [0.98, 0.97, 0.975, 0.985], "mlp:10": [0.93, 0.92, 0.94]}  # mlp:10@3 unfinished
    records = {
        f"{arch}@{k}": {
            "arch": arch,
            "split": k,
            "test_accuracy": acc,
            "train_accuracy": acc + 0.01,
            "seconds": 2.0,
            "finished": f"2026-01-01T00:00:{10 * k + len(arch):02d}+00:00",
            "n_train": 56000,
            "n_test": 14000,
        }
        for arch, values in accuracies.items()
        for k, acc in enumerate(values)
    }
    report = build_report(config, records)
    assert report.complete_splits == 3
    assert [a.test.n for a in report.archs] == [4, 3]
    assert report.archs[0].train.mean == pytest.approx(np.mean(accuracies["mlp:800"]) + 0.01)
    (comparison,) = report.comparisons
    assert comparison.test.n == 3
    assert comparison.test.mean_diff == pytest.approx(np.mean([0.05, 0.05, 0.035]))
    assert comparison.verdict == "mlp:800 is better than mlp:10 by 4.50 points"
    assert report.ranking == ["mlp:800", "mlp:10"]
    assert report.span_seconds == pytest.approx(30 + 7 - (0 + 6 - 2.0))  # first start to last end


def test_report_only_needs_an_experiment_to_report_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "var"))
    assert cli.main(["experiment", "--report-only", "--out", str(tmp_path / "nothing")]) == 1
    assert "no experiment in" in capsys.readouterr().err
    assert not (tmp_path / "nothing").exists()
