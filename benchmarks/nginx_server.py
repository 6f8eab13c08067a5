"""nginx from the OS packages as the load balancer in front of bot replicas: a free port, a temporary
config, run unprivileged (as `www-data` when the tests run as root), removed afterwards.

The config is the one docs/operations.md shows for N replicas: round robin over the replicas' webhook
ports, a replica that refuses connections skipped for a while, calls held up to `read_timeout_s`, and a
POST that reached a replica never sent to another (nginx's default for non-idempotent requests): a
replica that dies mid-call answers Telegram 502, and Telegram delivers the update again.

The tests (`tests/support/nginx.py`) and `photobot bench scale` use it; nothing at run time does.

    with Nginx.start([8441, 8442, 8443]) as nginx:
        ...  # WEBHOOK_URL=nginx.url
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

from benchmarks.postgres_server import free_port

PACKAGE_HINT = "install nginx (`make nginx`, or `apt-get install -y nginx`)"
UNPRIVILEGED = "www-data"  # created by Debian's nginx-common

CONFIG = """\
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log {root}/access.log;
    client_body_temp_path {root}/body;
    proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fastcgi;
    uwsgi_temp_path {root}/uwsgi;
    scgi_temp_path {root}/scgi;

    upstream photobot {{
{servers}
        keepalive 16;
    }}
    server {{
        listen 127.0.0.1:{port};
        client_max_body_size 1m;
        location / {{
            proxy_pass http://photobot;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_read_timeout {read_timeout_s}s;
        }}
    }}
}}
"""


class NginxUnavailable(RuntimeError):
    """nginx is not installed, or would not start."""


def find_nginx() -> Path:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").is_file() else None)
    if found is None:
        raise NginxUnavailable(f"no nginx binary found: {PACKAGE_HINT}")
    return Path(found)


def nginx_config(root: Path, port: int, upstreams: list[int], *, read_timeout_s: float = 55.0) -> str:
    servers = "\n".join(f"        server 127.0.0.1:{p} max_fails=1 fail_timeout=5s;" for p in upstreams)
    return CONFIG.format(root=root, port=port, servers=servers, read_timeout_s=int(read_timeout_s))


class Nginx:
    """One running nginx; `stop()` (or leaving the `with`) stops it and deletes its folder."""

    def __init__(self, root: Path, port: int, process: subprocess.Popen[bytes]) -> None:
        self.root, self.port, self.process = root, port, process

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @classmethod
    def start(cls, upstreams: list[int], *, read_timeout_s: float = 55.0) -> Nginx:
        """nginx on a free port in front of `upstreams`, in a new temporary folder (not under pytest's
        tmp_path: that is private to the user running the tests, and nginx runs as another)."""
        binary = find_nginx()
        root = Path(tempfile.mkdtemp(prefix="photobot-nginx-"))
        port = free_port()
        (root / "nginx.conf").write_text(nginx_config(root, port, upstreams, read_timeout_s=read_timeout_s))
        user = UNPRIVILEGED if os.geteuid() == 0 else None
        if user is not None:  # the master too: nothing of it runs as root
            entry = pwd.getpwnam(user)
            for path in [root, *root.rglob("*")]:
                os.chown(path, entry.pw_uid, entry.pw_gid)
        log = open(root / "stderr.log", "wb")  # noqa: SIM115 - the process holds it; closed in stop()
        process = subprocess.Popen(
            [
                str(binary),
                "-p",
                str(root),
                "-e",
                str(root / "error.log"),
                "-c",
                str(root / "nginx.conf"),
                "-g",
                "daemon off;",
            ],
            stdout=log,
            stderr=log,
            user=user,
            group=user,
        )
        log.close()
        nginx = cls(root, port, process)
        deadline = time.monotonic() + 30
        while not _listening(port):
            if process.poll() is not None or time.monotonic() > deadline:
                nginx.stop()
                raise NginxUnavailable(f"nginx did not start: {nginx.errors()}")
            time.sleep(0.05)
        return nginx

    def errors(self) -> str:
        return "\n".join(
            path.read_text(errors="replace")
            for path in (self.root / "stderr.log", self.root / "error.log")
            if path.is_file()
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Nginx:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.2)
        return probe.connect_ex(("127.0.0.1", port)) == 0
