"""Fixtures more than one test file uses: a real PostgreSQL server, started
once per test process when a test asks for it, and a new database per test;
a server that counts the calls in progress (for shared limiters)."""

import itertools
import os
import socketserver
import threading
import time

import pytest

from _postgres import PostgresServer, binaries, postgres_server

_DATABASES = itertools.count()

# The "postgres" parameter of a fixture that gives the same test a store of each kind:
# marked, so that make test leaves it to make test-rest.
POSTGRES = pytest.param("postgres", marks=pytest.mark.postgres)


@pytest.fixture
def postgres(request) -> PostgresServer:
    """The tests' PostgreSQL server, for a test marked ``postgres`` (make test runs
    none of them: an unmarked one fails here, saying so)."""
    if request.node.get_closest_marker("postgres") is None:
        pytest.fail(
            f"{request.node.nodeid} uses PostgreSQL but is not marked: add "
            "@pytest.mark.postgres, or give its parameter as conftest.POSTGRES",
            pytrace=False,
        )
    return request.getfixturevalue("running_postgres")


@pytest.fixture(scope="session")
def running_postgres() -> PostgresServer:
    """A PostgreSQL server of the tests' own (see ``_postgres``), one per test
    process. Skipped only when PostgreSQL is not installed and
    BRAIDFLOW_REQUIRE_POSTGRES is unset (CI sets it, and ``.ci/run`` installs it)."""
    if binaries() is None and not os.environ.get("BRAIDFLOW_REQUIRE_POSTGRES"):
        pytest.skip(
            "PostgreSQL is not installed (no initdb on the PATH or in /usr/lib/postgresql): "
            "apt-get install postgresql"
        )
    if not os.environ.get("BRAIDFLOW_REQUIRE_POSTGRES"):
        pytest.importorskip(
            "psycopg", reason="psycopg is not installed: pip install 'braidflow[postgres]'"
        )
    with postgres_server() as server:
        yield server


def new_database(server: PostgresServer) -> str:
    """Make a new, empty database on ``server``; return its DSN."""
    import psycopg

    name = f"test_{os.getpid()}_{next(_DATABASES)}"
    with psycopg.connect(server.dsn, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    return server.dsn.replace("dbname=postgres", f"dbname={name}")


@pytest.fixture
def postgres_dsn(postgres) -> str:
    """The DSN of a new, empty database on the tests' server."""
    return new_database(postgres)


class Counting(socketserver.ThreadingTCPServer):
    """The called server: counts the calls in progress, and the most at once."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.now = self.peak = self.calls = 0


class _Handler(socketserver.StreamRequestHandler):
    def handle(self):
        server = self.server
        self.rfile.readline()
        with server.lock:
            server.now += 1
            server.calls += 1
            server.peak = max(server.peak, server.now)
        time.sleep(0.002)  # a call that takes a while, so calls overlap
        with server.lock:
            server.now -= 1
        self.wfile.write(b"ok\n")


@pytest.fixture
def counting():
    server = Counting()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
