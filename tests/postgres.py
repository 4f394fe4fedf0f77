"""A real PostgreSQL on a free loopback port, made by ``initdb`` in a temp folder.

PostgreSQL refuses to run as root, so when the tests run as root (CI does)
the cluster belongs to the ``postgres`` user that Debian's package creates,
in a folder of its own under /tmp (pytest's folders are root-only).
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.broker import free_port


def _pg_bin(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    for candidate in sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True):
        return str(candidate)
    raise RuntimeError(f"{name} not found: apt-get install postgresql")


class Postgres:
    """One database cluster; ``dsn`` points at database ``estate`` as user ``estate``."""

    def __init__(self) -> None:
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="estate-pg-"))
        self.data = self.dir / "data"
        self.user: str | None = None
        if os.geteuid() == 0:
            self.user = "postgres"
            entry = pwd.getpwnam(self.user)
            os.chown(self.dir, entry.pw_uid, entry.pw_gid)
        self.dir.chmod(0o755)

    @property
    def dsn(self) -> str:
        return f"host=127.0.0.1 port={self.port} user=estate dbname=estate"

    def _run(self, *args: str) -> None:
        out = subprocess.run(
            list(args), user=self.user, capture_output=True, text=True, check=False, timeout=120
        )
        if out.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed: {out.stdout}{out.stderr}")

    def start(self) -> None:
        if not self.data.exists():
            self._run(
                _pg_bin("initdb"),
                "-D",
                str(self.data),
                "-U",
                "estate",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            )
            with (self.data / "postgresql.conf").open("a") as conf:
                conf.write(
                    f"port = {self.port}\nlisten_addresses = '127.0.0.1'\n"
                    f"unix_socket_directories = '{self.dir}'\n"
                    "max_connections = 200\nshared_buffers = 128MB\n"
                )
            self._created = True
        self._run(
            _pg_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.dir / "log"), "-w", "start"
        )
        if getattr(self, "_created", False):
            self._created = False
            self._run(
                _pg_bin("psql") if shutil.which("psql") else "psql",
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "estate",
                "-d",
                "postgres",
                "-c",
                "CREATE DATABASE estate",
            )

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run(_pg_bin("pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
