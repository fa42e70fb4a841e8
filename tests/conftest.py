"""Fixtures more than one test file uses: a real PostgreSQL server, started
once per test process when a test asks for it, and a new database per test."""

import itertools
import os

import pytest

from _postgres import PostgresServer, binaries, postgres_server

_DATABASES = itertools.count()


@pytest.fixture(scope="session")
def postgres() -> PostgresServer:
    """A PostgreSQL server of the tests' own (see ``_postgres``). Skipped only
    when PostgreSQL is not installed and BRAIDFLOW_REQUIRE_POSTGRES is unset
    (CI sets it, and ``.ci/run`` installs PostgreSQL)."""
    if binaries() is None and not os.environ.get("BRAIDFLOW_REQUIRE_POSTGRES"):
        pytest.skip(
            "PostgreSQL is not installed (no initdb on the PATH or in /usr/lib/postgresql): "
            "apt-get install postgresql"
        )
    pytest.importorskip(
        "psycopg", reason="psycopg is not installed: pip install braidflow[postgres]"
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
