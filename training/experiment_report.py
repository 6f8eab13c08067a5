"""The report of an architecture comparison: a terminal table, Markdown and CSV files, a box plot.

Per architecture: test accuracy (mean, standard deviation, 95% confidence interval, min, max) with the
training accuracy beside it, as the course warns, so over-fitting shows. Per pair: the mean paired
difference with its interval, paired t-test and Wilcoxon p-values, both Holm-corrected over all the
pairs, and a plain verdict. Only splits that both architectures of a pair finished are paired, so a
report of an unfinished experiment is honest about what it rests on.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from training.experiment import ExperimentConfig
from training.stats import ALPHA, PairedTest, Summary, holm, paired_test, summarize, verdict

REPORT_MD = "report.md"
SUMMARY_CSV = "summary.csv"
COMPARISONS_CSV = "comparisons.csv"
RUNS_CSV = "runs.csv"
PLOT_PNG = "accuracy.png"
ACCURACY = (0.0, 1.0)  # what an accuracy's interval may span
_ZOOM_POINTS = 10.0  # the plot's second panel shows the architectures within this many points of the best


@dataclass(frozen=True)
class ArchResult:
    arch: str
    test: Summary
    train: Summary
    seconds: float  # mean seconds per run (training + evaluation)
    parameters: int


@dataclass(frozen=True)
class Comparison:
    a: str
    b: str
    test: PairedTest  # of test accuracy a − b over the splits both finished
    t_holm: float
    wilcoxon_holm: float
    verdict: str


@dataclass(frozen=True)
class ExperimentReport:
    config: ExperimentConfig
    archs: list[ArchResult]  # in the order the experiment lists them; those with no run are left out
    comparisons: list[Comparison]
    runs: list[dict]
    complete_splits: int  # splits that every architecture finished
    wall_seconds: float | None = None  # the command's wall time, when it ran the experiment itself

    @property
    def span_seconds(self) -> float | None:
        """From the first run's start to the last run's end, over all sessions (resumes included)."""
        if not self.runs:
            return None
        ends = [datetime.fromisoformat(r["finished"]).timestamp() for r in self.runs]
        starts = [end - r["seconds"] for end, r in zip(ends, self.runs, strict=True)]
        return max(ends) - min(starts)

    @property
    def compute_seconds(self) -> float:
        """The runs' own times added up (wall time per run, all processes together)."""
        return sum(r["seconds"] for r in self.runs)

    @property
    def ranking(self) -> list[str]:
        return [a.arch for a in sorted(self.archs, key=lambda a: a.test.mean, reverse=True)]


def build_report(
    config: ExperimentConfig, records: dict[str, dict], wall_seconds: float | None = None
) -> ExperimentReport:
    """Summaries per architecture and Holm-corrected paired comparisons from the finished runs."""
    by_arch: dict[str, dict[int, dict]] = {arch: {} for arch in config.archs}
    for record in records.values():
        if record["arch"] in by_arch and record["split"] < config.splits:
            by_arch[record["arch"]][record["split"]] = record
    archs = [_arch_result(arch, runs) for arch, runs in by_arch.items() if runs]
    pairs = [(a.arch, b.arch) for i, a in enumerate(archs) for b in archs[i + 1 :]]
    tests = [_paired(by_arch[a], by_arch[b]) for a, b in pairs]
    t_holm = holm([t.t_pvalue for t in tests])
    w_holm = holm([t.wilcoxon_pvalue for t in tests])
    comparisons = [
        Comparison(a, b, test, tp, wp, verdict(a, b, test.mean_diff, tp))
        for (a, b), test, tp, wp in zip(pairs, tests, t_holm, w_holm, strict=True)
    ]
    complete = sum(all(split in by_arch[arch] for arch in config.archs) for split in range(config.splits))
    runs = sorted(
        (r for runs in by_arch.values() for r in runs.values()), key=lambda r: (r["arch"], r["split"])
    )
    return ExperimentReport(config, archs, comparisons, runs, complete, wall_seconds)


def _arch_result(arch: str, runs: dict[int, dict]) -> ArchResult:
    ordered = [runs[k] for k in sorted(runs)]
    return ArchResult(
        arch=arch,
        test=summarize([r["test_accuracy"] for r in ordered], bounds=ACCURACY),
        train=summarize([r["train_accuracy"] for r in ordered], bounds=ACCURACY),
        seconds=sum(r["seconds"] for r in ordered) / len(ordered),
        parameters=int(ordered[0].get("parameters", 0)),
    )


def _paired(a: dict[int, dict], b: dict[int, dict]) -> PairedTest:
    common = sorted(set(a) & set(b))
    if not common:
        nan = math.nan
        return PairedTest(0, nan, nan, nan, nan, nan, nan, nan)
    return paired_test([a[k]["test_accuracy"] for k in common], [b[k]["test_accuracy"] for k in common])


def _pct(value: float, digits: int = 2) -> str:
    return "—" if math.isnan(value) else f"{value * 100:.{digits}f}"


def _p(value: float) -> str:
    if math.isnan(value):
        return "—"
    return "<0.0001" if value < 1e-4 else f"{value:.4f}"


def unfinished_line(report: ExperimentReport) -> str:
    """Which architectures have not finished every split yet ("" when all have)."""
    done = {a.arch: a.test.n for a in report.archs}
    behind = [
        f"{arch} {done.get(arch, 0)}/{report.config.splits}"
        for arch in report.config.archs
        if done.get(arch, 0) < report.config.splits
    ]
    return ("Unfinished (splits done): " + ", ".join(behind)) if behind else ""


def settings_line(report: ExperimentReport) -> str:
    c = report.config
    runs = report.runs
    sizes = f", {runs[0]['n_train']:,} train / {runs[0]['n_test']:,} test examples" if runs else ""
    return (
        f"{c.data}: {c.splits} splits ({report.complete_splits} complete for every architecture) × "
        f"{c.epochs} epochs, batch {c.batch_size}, seed {c.seed}, "
        f"{round((1 - c.test_fraction) * 100)}/{round(c.test_fraction * 100)} split{sizes}"
    )


def summary_rows(report: ExperimentReport) -> list[list[str]]:
    """The per-architecture table (accuracies in %), header first."""
    header = [
        "arch",
        "params",
        "runs",
        "test mean",
        "test std",
        "test 95% CI",
        "test min",
        "test max",
        "train mean",
        "train − test",
        "s/run",
    ]
    rows = [header]
    for a in report.archs:
        rows.append(
            [
                a.arch,
                f"{a.parameters:,}",
                str(a.test.n),
                _pct(a.test.mean),
                _pct(a.test.std),
                f"{_pct(a.test.ci_low)}–{_pct(a.test.ci_high)}",
                _pct(a.test.min),
                _pct(a.test.max),
                _pct(a.train.mean),
                _pct(a.train.mean - a.test.mean),
                f"{a.seconds:.1f}",
            ]
        )
    return rows


def comparison_rows(report: ExperimentReport) -> list[list[str]]:
    """The paired comparisons (differences in accuracy points), header first."""
    rows = [["a − b", "splits", "mean diff", "95% CI", "t-test p (Holm)", "Wilcoxon p (Holm)", "verdict"]]
    for c in report.comparisons:
        rows.append(
            [
                f"{c.a} − {c.b}",
                str(c.test.n),
                _pct(c.test.mean_diff),
                f"{_pct(c.test.ci_low)} … {_pct(c.test.ci_high)}",
                _p(c.t_holm),
                _p(c.wilcoxon_holm),
                c.verdict,
            ]
        )
    return rows


def format_table(report: ExperimentReport) -> str:
    """Plain-text tables for the terminal."""
    lines = [
        settings_line(report),
        unfinished_line(report),
        "",
        "Accuracy in % (test on each split's held-out part):",
    ]
    lines += _aligned(summary_rows(report))
    if report.comparisons:
        lines += ["", f"Paired differences of test accuracy in points (α = {ALPHA}, Holm-corrected):"]
        lines += _aligned(comparison_rows(report))
    lines += ["", "Ranking by mean test accuracy: " + " > ".join(report.ranking), timing_line(report)]
    return "\n".join(lines)


def timing_line(report: ExperimentReport) -> str:
    """Wall time: this command's, and the span from the first run to the last over every session."""
    parts = []
    if report.wall_seconds is not None:
        parts.append(f"this command {report.wall_seconds / 60:.1f} min")
    if report.span_seconds is not None:
        parts.append(
            f"first run to last {report.span_seconds / 60:.1f} min, "
            f"{len(report.runs)} runs adding up to {report.compute_seconds / 60:.1f} min"
        )
    return ("Wall time: " + "; ".join(parts) + ".") if parts else ""


def _aligned(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    out = []
    for number, row in enumerate(rows):
        out.append("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        if number == 0:
            out.append("  ".join("-" * w for w in widths))
    return out


def markdown(report: ExperimentReport, plot_name: str | None = PLOT_PNG) -> str:
    """The report as Markdown, with the box plot embedded by relative path."""
    c = report.config
    parts = [
        f"# Architecture comparison: {', '.join(c.archs)}",
        "",
        settings_line(report) + ".",
        unfinished_line(report) + ("." if unfinished_line(report) else ""),
        "Each architecture is trained on the same random splits (paired), from fresh random weights "
        "each time. Accuracies are in %; the 95% interval is mean ± t·s/√n over splits.",
        "",
        "## Accuracy per architecture",
        "",
        *_markdown_table(summary_rows(report)),
    ]
    if report.comparisons:
        parts += [
            "",
            f"## Paired differences (test accuracy, points; α = {ALPHA}, Holm-corrected)",
            "",
            *_markdown_table(comparison_rows(report)),
        ]
    parts += ["", "Ranking by mean test accuracy: " + " > ".join(f"`{a}`" for a in report.ranking) + "."]
    parts.append(timing_line(report))
    if plot_name:
        parts += ["", f"![test and training accuracy per architecture]({plot_name})"]
    return "\n".join(parts) + "\n"


def _markdown_table(rows: list[list[str]]) -> list[str]:
    escaped = [[cell.replace("|", "\\|") for cell in row] for row in rows]
    lines = ["| " + " | ".join(escaped[0]) + " |", "|" + "---|" * len(escaped[0])]
    lines += ["| " + " | ".join(row) + " |" for row in escaped[1:]]
    return lines


def summary_csv(report: ExperimentReport) -> str:
    """One row per architecture, accuracies as fractions (machine-readable, full precision)."""
    fields = ["arch", "parameters", "runs", "seconds_per_run"]
    for which in ("test", "train"):
        fields += [f"{which}_{k}" for k in ("mean", "std", "ci_low", "ci_high", "min", "max")]
    rows = []
    for a in report.archs:
        row: dict = {
            "arch": a.arch,
            "parameters": a.parameters,
            "runs": a.test.n,
            "seconds_per_run": a.seconds,
        }
        for which, s in (("test", a.test), ("train", a.train)):
            row |= {f"{which}_{k}": getattr(s, k) for k in ("mean", "std", "ci_low", "ci_high", "min", "max")}
        rows.append(row)
    return _csv(fields, rows)


def comparisons_csv(report: ExperimentReport) -> str:
    fields = [
        "a",
        "b",
        "splits",
        "mean_diff",
        "ci_low",
        "ci_high",
        "t_statistic",
        "t_pvalue",
        "t_pvalue_holm",
        "wilcoxon_statistic",
        "wilcoxon_pvalue",
        "wilcoxon_pvalue_holm",
        "verdict",
    ]
    rows = [
        {
            "a": c.a,
            "b": c.b,
            "splits": c.test.n,
            "mean_diff": c.test.mean_diff,
            "ci_low": c.test.ci_low,
            "ci_high": c.test.ci_high,
            "t_statistic": c.test.t_statistic,
            "t_pvalue": c.test.t_pvalue,
            "t_pvalue_holm": c.t_holm,
            "wilcoxon_statistic": c.test.wilcoxon_statistic,
            "wilcoxon_pvalue": c.test.wilcoxon_pvalue,
            "wilcoxon_pvalue_holm": c.wilcoxon_holm,
            "verdict": c.verdict,
        }
        for c in report.comparisons
    ]
    return _csv(fields, rows)


def runs_csv(report: ExperimentReport) -> str:
    fields = ["arch", "split", "seed", "test_accuracy", "train_accuracy", "n_train", "n_test", "seconds"]
    return _csv(fields, [{k: r.get(k) for k in fields} for r in report.runs])


def _csv(fields: list[str], rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def plot(report: ExperimentReport, path: Path) -> Path:
    """Box plots of test accuracy with training accuracy beside it, per architecture.

    A second panel zooms on the architectures near the best one, when a weak one (mlp:1) would
    otherwise squash the interesting differences into a line.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    best = max(a.test.mean for a in report.archs)
    close = [a.arch for a in report.archs if (best - a.test.mean) * 100 <= _ZOOM_POINTS]
    panels = [[a.arch for a in report.archs]]
    if 2 <= len(close) < len(report.archs):
        panels.append(close)
    figure, axes = plt.subplots(1, len(panels), figsize=(4 + 1.4 * sum(map(len, panels)), 4.8), squeeze=False)
    runs_by_arch: dict[str, list[dict]] = {}
    for run in report.runs:
        runs_by_arch.setdefault(run["arch"], []).append(run)
    for axis, archs in zip(axes[0], panels, strict=True):
        _box_panel(axis, archs, runs_by_arch)
    axes[0][0].set_title(
        f"{report.config.splits} splits × {report.config.epochs} epochs ({report.config.data})"
    )
    if len(panels) > 1:
        axes[0][1].set_title(f"within {_ZOOM_POINTS:g} points of the best")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def _box_panel(axis, archs: list[str], runs_by_arch: dict[str, list[dict]]) -> None:
    positions = range(len(archs))
    test = [[r["test_accuracy"] * 100 for r in runs_by_arch[a]] for a in archs]
    train = [[r["train_accuracy"] * 100 for r in runs_by_arch[a]] for a in archs]
    for values, offset, colour, label in (
        (train, -0.18, "#9ecae1", "train"),
        (test, 0.18, "#fd8d3c", "test"),
    ):
        boxes = axis.boxplot(
            values,
            positions=[p + offset for p in positions],
            widths=0.3,
            patch_artist=True,
            manage_ticks=False,
            medianprops={"color": "black"},
        )
        for box in boxes["boxes"]:
            box.set_facecolor(colour)
        boxes["boxes"][0].set_label(label)
    axis.set_xticks(list(positions), archs, rotation=20)
    axis.set_ylabel("accuracy (%)")
    axis.grid(axis="y", alpha=0.3)
    axis.legend(loc="lower left", fontsize="small")


def write_report(report: ExperimentReport, out_dir: Path) -> dict[str, Path]:
    """Write report.md, summary.csv, comparisons.csv, runs.csv and accuracy.png into `out_dir`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {
        "markdown": out_dir / REPORT_MD,
        "summary_csv": out_dir / SUMMARY_CSV,
        "comparisons_csv": out_dir / COMPARISONS_CSV,
        "runs_csv": out_dir / RUNS_CSV,
    }
    has_runs = bool(report.archs)
    written["markdown"].write_text(markdown(report, PLOT_PNG if has_runs else None), encoding="utf-8")
    written["summary_csv"].write_text(summary_csv(report), encoding="utf-8")
    written["comparisons_csv"].write_text(comparisons_csv(report), encoding="utf-8")
    written["runs_csv"].write_text(runs_csv(report), encoding="utf-8")
    if has_runs:
        written["plot"] = plot(report, out_dir / PLOT_PNG)
    return written
