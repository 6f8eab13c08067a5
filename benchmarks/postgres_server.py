"""A throwaway PostgreSQL server: `initdb` in a temporary folder, a free port on 127.0.0.1, removed after.

The tests (`tests/support/postgres.py`) and `photobot bench storage --backend postgresql` use it; nothing
at run time does. It needs PostgreSQL's server binaries (`initdb`, `pg_ctl`, `postgres`; Debian's
`postgresql` package, which `make test` installs when they are missing). PostgreSQL refuses to run as
root, so as root the cluster belongs to the `postgres` user and every server command runs as that user
(`runuser -u postgres --`). The server keeps fsync on: the crash tests need commits that survive.
Connections over TCP need the password (`password`, random per server; it is in `url()`), so a wrong
password is refused as a real server would; the server's own tools use its Unix socket without one.

    with PostgresServer.start() as server:
        url = server.create_database()          # a fresh, empty database: postgresql://…/photobot_1
        ...
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType

SERVER_USER = "postgres"  # the unprivileged owner of the cluster when we run as root
PACKAGE_HINT = "install PostgreSQL's server (`make postgres`, or `apt-get install -y postgresql`)"


class PostgresUnavailable(RuntimeError):
    """PostgreSQL's server binaries are not installed, or the server would not start."""


def find_bin_dir() -> Path:
    """The folder of `initdb` / `pg_ctl`: PG_BIN, Debian's /usr/lib/postgresql/<newest>/bin, or PATH."""
    candidates = [os.environ.get("PG_BIN", "")]
    candidates += sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name), reverse=True
    )
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(str(Path(initdb).resolve().parent))
    for folder in candidates:
        if folder and (Path(folder) / "initdb").is_file() and (Path(folder) / "pg_ctl").is_file():
            return Path(folder)
    raise PostgresUnavailable(f"no PostgreSQL server binaries (initdb, pg_ctl) found: {PACKAGE_HINT}")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PostgresServer:
    """One running throwaway cluster; `stop()` (or leaving the `with`) shuts it down and deletes it."""

    def __init__(self, root: Path, bin_dir: Path, port: int, run_as: str | None) -> None:
        self.root, self.bin_dir, self.port, self._run_as = root, bin_dir, port, run_as
        self.password = secrets.token_hex(12)
        self._databases = 0

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root / "socket"

    @property
    def pid(self) -> int | None:
        """The postmaster's process id while the server runs (its backends are its children)."""
        try:
            return int((self.data_dir / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{SERVER_USER}:{self.password}@127.0.0.1:{self.port}/{database}"

    @classmethod
    def start(cls, *, tries: int = 3) -> PostgresServer:
        """initdb a new cluster in a temporary folder and start it on a free port (127.0.0.1 only)."""
        bin_dir = find_bin_dir()
        run_as = SERVER_USER if os.geteuid() == 0 else None
        root = Path(tempfile.mkdtemp(prefix="photobot-pg-"))
        try:
            if run_as is not None:
                try:
                    owner = pwd.getpwnam(run_as)
                except KeyError:
                    raise PostgresUnavailable(
                        f"running as root, but there is no {run_as!r} user to run PostgreSQL as: "
                        f"{PACKAGE_HINT}"
                    ) from None
                os.chown(root, owner.pw_uid, owner.pw_gid)
            server = cls(root, bin_dir, 0, run_as)
            server._run(
                "initdb",
                "-D",
                str(server.data_dir),
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                f"--pwfile={server._password_file()}",
                f"--username={SERVER_USER}",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            )
            server._run("mkdir", "-p", str(server.socket_dir), program=True)
            for attempt in range(tries):
                server.port = free_port()
                try:
                    server._pg_ctl_start()
                    return server
                except PostgresUnavailable:
                    if attempt == tries - 1:
                        raise
            raise AssertionError("unreachable")
        except BaseException:
            shutil.rmtree(root, ignore_errors=True)
            raise

    def _password_file(self) -> Path:
        path = self.root / "password"
        path.write_text(self.password + "\n")
        if self._run_as is not None:
            owner = pwd.getpwnam(self._run_as)
            os.chown(path, owner.pw_uid, owner.pw_gid)
        path.chmod(0o600)
        return path

    def _pg_ctl_start(self) -> None:
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.socket_dir} -c fsync=on "
            "-c max_connections=200 -c shared_buffers=64MB"
        )
        self._run(
            "pg_ctl",
            "-D",
            str(self.data_dir),
            "-l",
            str(self.root / "server.log"),
            "-w",
            "-t",
            "60",
            "-o",
            options,
            "start",
        )

    def _run(self, command: str, *args: str, program: bool = False) -> str:
        executable = command if program else str(self.bin_dir / command)
        argv = [executable, *args]
        if self._run_as is not None:
            argv = ["runuser", "-u", self._run_as, "--", *argv]
        done = subprocess.run(argv, capture_output=True, text=True, cwd=self.root, check=False)
        if done.returncode != 0:
            log = self.root / "server.log"
            tail = log.read_text(errors="replace")[-2000:] if log.is_file() else ""
            raise PostgresUnavailable(
                f"{command} failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}\n{tail}"
            )
        return done.stdout

    def create_database(self, name: str | None = None, *, template: str = "template0") -> str:
        """A new database (empty from template0, or a copy of `template`); returns its URL."""
        import psycopg

        self._databases += 1
        name = name or f"photobot_{self._databases}"
        with psycopg.connect(self.url(), autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def crash(self) -> None:
        """Stop the server the way a crash does: `immediate` mode, no checkpoint (the WAL is replayed at
        the next start), every client cut off."""
        self._run("pg_ctl", "-D", str(self.data_dir), "-m", "immediate", "-w", "stop")

    def restart(self) -> None:
        """Start the server again on its port, after `crash` (it recovers from its WAL first)."""
        self._pg_ctl_start()

    def stop(self) -> None:
        try:
            if (self.data_dir / "postmaster.pid").exists():
                self._run("pg_ctl", "-D", str(self.data_dir), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
