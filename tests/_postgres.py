"""A real PostgreSQL server for the tests and the benchmarks, started on a
temporary directory and a free port with the Debian package's ``initdb`` and
``pg_ctl``. PostgreSQL refuses to run as root: as root it runs as ``nobody``.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path


def binaries() -> Path | None:
    """The directory of ``initdb`` and ``pg_ctl``: on the PATH (``/usr/local/bin``),
    else the newest of ``/usr/lib/postgresql/*/bin``; None if PostgreSQL is not installed."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl", path=str(Path(found).parent)):
        return Path(found).parent
    versions = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda path: int(Path(path).parent.parent.name.split(".")[0]),
    )
    return Path(versions[-1]).parent if versions else None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _as_server_user(command: list[str]) -> list[str]:
    """``command`` run as an unprivileged user when this process is root."""
    if os.geteuid() != 0:
        return command
    return ["runuser", "-u", "nobody", "--", *command]


class PostgresServer:
    """A PostgreSQL server of its own on a temporary directory and a free port
    (see `postgres_server`), which a test may stop and start again."""

    def __init__(self, *, durable: bool) -> None:
        where = binaries()
        if where is None:
            raise FileNotFoundError("PostgreSQL is not installed (no initdb)")
        self.bin = where
        self.root = Path(tempfile.mkdtemp(prefix="braidflow-pg-"))
        self.data = self.root / "data"
        if os.geteuid() == 0:
            nobody = pwd.getpwnam("nobody")
            os.chown(self.root, nobody.pw_uid, nobody.pw_gid)
        self.port = free_port()
        # The DSN of its postgres database: user braidflow, no password.
        self.dsn = f"host=127.0.0.1 port={self.port} user=braidflow dbname=postgres"
        self.options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c max_connections=200"
        )
        if not durable:
            self.options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            "braidflow",
            "--auth=trust",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C",
        )

    def command(self, tool: str, *args: str) -> list[str]:
        """The command line that runs ``tool`` of the server's (``pg_ctl``) on it."""
        return _as_server_user([str(self.bin / tool), *args])

    def _run(self, tool: str, *args: str) -> None:
        _done(self.command(tool, *args))

    def start(self) -> None:
        self._run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-l",
            str(self.root / "server.log"),
            "-o",
            self.options,
            "-w",
            "-t",
            "60",
            "start",
        )

    def stop(self) -> None:
        """Stop at once, dropping every connection (as a crash of the server would)."""
        _done(self.stop_command("immediate"))

    def stop_command(self, mode: str) -> list[str]:
        """The command line that stops the server: ``immediate``, as a crash;
        ``fast``, as a server shut down (its connections dropped, what it
        committed kept)."""
        return self.command("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def running(self) -> bool:
        """Tell whether the server runs (a stopped one leaves no postmaster.pid)."""
        return (self.data / "postmaster.pid").exists()

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def _done(command: list[str]) -> None:
    subprocess.run(command, check=True, capture_output=True, timeout=120)


@contextlib.contextmanager
def postgres_server(*, durable: bool = False) -> Iterator[PostgresServer]:
    """Start a PostgreSQL server on a temporary directory and a free port;
    stop it and remove the directory at the end.

    ``durable``: keep PostgreSQL's default syncing to disk (for the
    benchmarks); the tests switch it off, which a killed client never notices.
    """
    server = PostgresServer(durable=durable)
    try:
        server.start()
        try:
            yield server
        finally:
            with contextlib.suppress(subprocess.CalledProcessError):
                server.stop()
    finally:
        server.remove()
