"""The hub's database: SQLite (WAL) by default, PostgreSQL by URL, through SQLAlchemy Core.

:class:`Database` is the repository the hub service calls. Its methods come in three parts:
devices, objects, shards, placements and parked receipts (:mod:`hub.db_mesh`); epochs and the
ledger chain, challenges and proof items, rewards, repairs and the views the API and dashboard
show (:mod:`hub.db_ledger`, with the queries in :mod:`hub.db_reports`); sensor streams as agents
report them, for the dashboard (:mod:`hub.db_streams`). The tables are in
:mod:`hub.db_schema`, the rows taken and returned in :mod:`hub.db_records`, transactions and
input checks in :mod:`hub.db_base`. :meth:`Database.upgrade` brings the schema to the newest
alembic revision (``hub/migrations``) with a configuration built in code, so no
``alembic.ini`` is needed at run time.

Contract. Every method is one transaction: it commits whole or not at all. Statements bind
their parameters; no SQL is built from strings. Node ids and content addresses must be in
their canonical text forms when written (a wrong one is a :class:`LocalProtocolError`);
lookups of any string just find nothing. Free text (names, addresses, labels, reasons,
details) is stored and returned unchanged, except that NUL characters and unpaired surrogates
are refused with :class:`LocalProtocolError` on both databases, because PostgreSQL text cannot
hold NUL and UTF-8 cannot hold surrogates. A change that breaks a constraint (a row for an
unknown device, a duplicate) is a :class:`LocalProtocolError`: the caller checks signatures and
existence first. Database outages surface as SQLAlchemy's ``OperationalError`` (see
:data:`UNAVAILABLE`).

SQLite. Every connection turns on WAL (readers do not block the writer), foreign keys and a
busy timeout; write transactions start with ``BEGIN IMMEDIATE`` so two writers queue on the
lock instead of failing when a read turns into a write. Reads run in a deferred transaction,
one consistent snapshot per call. PostgreSQL reads of several statements run in REPEATABLE
READ for the same reason; writes run in READ COMMITTED and use upserts and conditional updates.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import (
    Connection,
    create_engine,
    event,
    select,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, make_url

from hub.db_base import MAX_PAGE, WRITE_OPTION
from hub.db_ledger import LedgerStore
from hub.db_mesh import MeshStore
from hub.db_streams import StreamsStore
from lichen.errors import ConfigError

__all__ = ["DB_FILE", "MAX_PAGE", "UNAVAILABLE", "Database", "default_url"]

DB_FILE = "hub.db"
MIGRATIONS = Path(__file__).resolve().with_name("migrations")
# busy_timeout: a writer waits up to 10 s for another writer's commit before giving up; hub
# transactions are short, so a wait that long means something is stuck.
SQLITE_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA foreign_keys=ON",
    "PRAGMA synchronous=FULL",  # a commit survives a power cut: the ledger must
    "PRAGMA busy_timeout=10000",
)

UNAVAILABLE: tuple[type[sa_exc.SQLAlchemyError], ...] = (
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
    sa_exc.TimeoutError,
)
"""A database that is not answering: down, restarting, refusing connections, out of pooled
connections, locked past the busy timeout, out of disk. Worth trying again later, unlike a
broken constraint (:class:`LocalProtocolError`)."""


def default_url(data_dir: Path) -> str:
    """The SQLite database of a hub data directory."""
    return URL.create("sqlite", database=str(Path(data_dir) / DB_FILE)).render_as_string()


def _on_sqlite_connect(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy's "begin" event issue BEGIN, not the sqlite3 module (which would
    # defer it past SELECTs and break snapshot reads); see the pysqlite dialect docs.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        for pragma in SQLITE_PRAGMAS:
            cursor.execute(pragma)
    finally:
        cursor.close()


def _on_sqlite_begin(conn: Connection) -> None:
    if conn.get_execution_options().get(WRITE_OPTION):
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        conn.exec_driver_sql("BEGIN")


class Database(MeshStore, LedgerStore, StreamsStore):
    """The hub's repository; open one per process with :meth:`open`, then :meth:`upgrade`."""

    # -- lifecycle --------------------------------------------------------------------------

    @classmethod
    def open(cls, url: str, *, echo: bool = False) -> Database:
        """Connect lazily to ``url`` (``sqlite:///file`` or ``postgresql+psycopg://...``).

        :class:`ConfigError` for a URL that is not a file-backed SQLite or a PostgreSQL one.
        """
        try:
            parsed = make_url(url)
        except sa_exc.ArgumentError as exc:
            raise ConfigError(f"not a database URL: {url!r}") from exc
        backend = parsed.get_backend_name()
        if backend == "sqlite":
            if parsed.database in (None, "", ":memory:"):
                raise ConfigError("the SQLite database must be a file (WAL needs one)")
            engine = create_engine(parsed, echo=echo)
            event.listen(engine, "connect", _on_sqlite_connect)
            event.listen(engine, "begin", _on_sqlite_begin)
        elif backend == "postgresql":
            engine = create_engine(parsed, echo=echo, pool_pre_ping=True)
        else:
            raise ConfigError(f"unsupported database {backend!r}: use sqlite or postgresql")
        return cls(engine)

    def close(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self.engine.dialect.name

    def _alembic_config(self, conn: Connection) -> Config:
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        config.attributes["connection"] = conn
        return config

    def upgrade(self, revision: str = "head") -> None:
        """Apply the alembic migrations up to ``revision``, in one transaction."""
        with self._write() as conn:
            command.upgrade(self._alembic_config(conn), revision)

    def revision(self) -> str | None:
        """The schema's alembic revision, or None for an empty database."""
        with self._read() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    def ping(self) -> bool:
        """True when the database answers (for ``/healthz``)."""
        try:
            with self._read() as conn:
                conn.execute(select(1))
        except sa_exc.SQLAlchemyError:
            return False
        return True
