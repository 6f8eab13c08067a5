"""An experiment's output folder: its configuration, the finished runs, and the runs being trained.

Results are appended, one JSON line per finished run, to `results.jsonl`, under a POSIX record lock and
with one `write` per line. A run is *claimed* by holding a lock on its own file in `claims/` while it
trains; the kernel drops that lock when a process dies, so an interrupted experiment resumes, and any
number of processes sharing the folder never run anything twice.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
from collections.abc import Iterator
from pathlib import Path

from training.experiment_plan import ExperimentConfig, ExperimentError, Run

logger = logging.getLogger(__name__)

RESULTS_FILE = "results.jsonl"
CONFIG_FILE = "experiment.json"
CLAIMS_DIR = "claims"


class ResultsFile:
    """The output folder: `experiment.json`, `results.jsonl` and the per-run claim locks."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = Path(out_dir)
        self.path = self.out_dir / RESULTS_FILE
        self.claims = self.out_dir / CLAIMS_DIR

    def prepare(self, config: ExperimentConfig) -> None:
        """Create the folder, or check that the experiment already in it is this one."""
        self.claims.mkdir(parents=True, exist_ok=True)
        config_path = self.out_dir / CONFIG_FILE
        wanted = config.fingerprint()
        with self._locked(self.out_dir / ".lock"):
            if config_path.is_file():
                found = json.loads(config_path.read_text(encoding="utf-8"))
                if found != wanted:
                    differ = ", ".join(
                        f"{k}={found.get(k)!r} there, {wanted[k]!r} now"
                        for k in wanted
                        if found.get(k) != wanted[k]
                    )
                    raise ExperimentError(
                        f"{self.out_dir} holds a different experiment ({differ}); "
                        "use another --out, or the same settings to resume it"
                    )
            else:
                _write_atomically(config_path, json.dumps(wanted, indent=2, sort_keys=True) + "\n")

    def read(self, config: ExperimentConfig) -> dict[str, dict]:
        """Finished runs of this experiment by run id (first record wins; broken lines are skipped)."""
        if not self.path.is_file():
            return {}
        wanted = config.fingerprint()
        records: dict[str, dict] = {}
        with self.path.open(encoding="utf-8") as lines:
            for number, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    logger.warning(
                        "%s line %d is not JSON (an interrupted write?); ignored", self.path, number
                    )
                    continue
                if record.get("experiment") == wanted:
                    records.setdefault(record["run_id"], record)
        return records

    def append(self, record: dict) -> None:
        """Append one record as one line, under an exclusive lock, and make it durable."""
        line = (json.dumps(record, sort_keys=True) + "\n").encode("utf-8")
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX)
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                line = b"\n" + line  # a writer died mid-line: keep our record on a line of its own
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)  # closing drops the lock

    @contextlib.contextmanager
    def claim(self, run: Run) -> Iterator[bool]:
        """Hold the run's claim lock while the block runs; yields False if another process holds it."""
        path = self.claims / (run.run_id.replace(":", "_").replace(",", "-") + ".lock")
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                yield False
                return
            os.ftruncate(fd, 0)
            os.write(fd, f"{socket.gethostname()} {os.getpid()}\n".encode())
            yield True
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def _locked(self, path: Path) -> Iterator[None]:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)


def _write_atomically(path: Path, text: str) -> None:
    """Write to a temporary file, fsync, rename: readers see the old file or the whole new one."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with temporary.open("w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
