"""Fixtures shared by the unit tests.

``db``, for the tests of ``hub.db*``: an empty, migrated hub database, once on SQLite and
once on PostgreSQL (``sqlite_db``: on SQLite only). Migrating takes most of a second, so each
module migrates once: SQLite tests copy a migrated file, PostgreSQL tests empty the module's
database (named after the module, so modules never share one).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from hub import db_schema
from hub.db import DB_FILE, Database, default_url
from tests.pg import Cluster, pg_cluster  # noqa: F401  (a fixture pg_migrated uses)


@pytest.fixture(scope="module")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file that each test copies (quicker than migrating each time)."""
    path = tmp_path_factory.mktemp("template")
    with Database.open(default_url(path)) as database:
        database.upgrade()
    assert not (path / f"{DB_FILE}-wal").exists()  # closing checkpointed everything
    return path / DB_FILE


@pytest.fixture(scope="module")
def pg_migrated(request: pytest.FixtureRequest) -> str:
    """A migrated PostgreSQL database of this test module that each test empties first."""
    cluster: Cluster = request.getfixturevalue("pg_cluster")
    module = request.module.__name__.rsplit(".", 1)[-1]
    url = cluster.create_database(f"{module}_{os.getpid()}")
    with Database.open(url) as database:
        database.upgrade()
    return url


@pytest.fixture
def sqlite_db(sqlite_template: Path, tmp_path: Path) -> Iterator[Database]:
    """An empty, migrated SQLite database."""
    shutil.copyfile(sqlite_template, tmp_path / DB_FILE)
    with Database.open(default_url(tmp_path)) as database:
        yield database


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest) -> Iterator[Database]:
    """An empty, migrated database of each kind."""
    if request.param == "sqlite":
        yield request.getfixturevalue("sqlite_db")
        return
    with Database.open(request.getfixturevalue("pg_migrated")) as database:
        with database.engine.begin() as conn:
            for table in reversed(db_schema.metadata.sorted_tables):
                conn.execute(table.delete())  # on tiny tables far quicker than TRUNCATE
        yield database
