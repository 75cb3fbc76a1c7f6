"""What every part of the hub's repository shares: transactions, input checks, row readers.

:class:`Store` owns the engine and opens one transaction per logical operation
(:meth:`Store._write`, :meth:`Store._read`); the repository methods live in its subclasses
(:mod:`hub.db_mesh`, :mod:`hub.db_ledger`) and are gathered by :class:`hub.db.Database`,
whose docstring states the contract. The ``check_*`` functions raise
:class:`LocalProtocolError` for values the caller should never pass.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Engine, Row, Table
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql, sqlite

from hub.db_records import Device, Epoch
from lichen import cid as cids
from lichen.errors import LocalProtocolError, MalformedMessage
from lichen.identity import parse_node_id
from lichen.rewards import Standing, State

MAX_PAGE = 1000
"""Most rows one listing call returns: the API pages, it never dumps a table."""
LEDGER_BATCH = 256
"""Epoch records read per query while walking the ledger (each is a few KiB)."""
MAX_INT = 2**63 - 1
"""Largest integer a BIGINT column holds, on both databases."""
WRITE_OPTION = "lichen_write"
"""Execution option marking a connection whose transaction will write (see hub.db)."""


def check_text(value: str | None, what: str) -> str | None:
    """``value`` if it is text both databases store unchanged (no NUL, no lone surrogate)."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise LocalProtocolError(f"{what} must be text")
    if "\x00" in value:
        raise LocalProtocolError(f"{what} contains NUL, which PostgreSQL text cannot hold")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise LocalProtocolError(f"{what} is not valid Unicode") from exc
    return value


def check_node_id(value: str) -> str:
    """``value`` if it is a node id in canonical text form."""
    try:
        parse_node_id(value)
    except MalformedMessage as exc:
        raise LocalProtocolError(str(exc)[:120]) from exc
    return value


def check_cid(value: str) -> str:
    """``value`` if it is a content address in canonical text form."""
    try:
        cids.from_text(value)
    except MalformedMessage as exc:
        raise LocalProtocolError(str(exc)[:120]) from exc
    return value


def check_count(value: int, what: str) -> int:
    """``value`` if it is an int a BIGINT column holds and not negative."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_INT:
        raise LocalProtocolError(f"{what} must be an integer from 0 to 2**63-1, got {value!r}")
    return value


def check_page(limit: int, offset: int) -> None:
    """Refuse a page size outside 1..MAX_PAGE or a negative offset."""
    if not 1 <= check_count(limit, "limit") <= MAX_PAGE:
        raise LocalProtocolError(f"limit must be 1 to {MAX_PAGE}")
    check_count(offset, "offset")


def insert_for(conn: Connection, table: Table) -> postgresql.Insert | sqlite.Insert:
    """An INSERT that can say ON CONFLICT, in the connection's dialect."""
    if conn.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def standing_of(state: str, failures: int) -> Standing:
    """The standing stored in a row."""
    return Standing(State(state), failures)


def device_of(row: Row[Any]) -> Device:
    """The device in a row of ``devices``."""
    return Device(
        node_id=row.node_id,
        public_key=bytes(row.public_key),
        name=row.name,
        enrolled_at=row.enrolled_at,
        revoked_at=row.revoked_at,
        last_seen=row.last_seen,
        online=bool(row.online),
        absent_since=row.absent_since,
        capacity_bytes=row.capacity_bytes,
        used_bytes=row.used_bytes,
        address=row.address,
        standing=standing_of(row.standing_state, row.standing_failures),
    )


def epoch_of(row: Row[Any]) -> Epoch:
    """The epoch in a row of ``epochs``."""

    def blob(value: Any) -> bytes | None:
        return None if value is None else bytes(value)

    return Epoch(
        epoch=row.epoch,
        started=row.started,
        deadline=row.deadline,
        closed_at=row.closed_at,
        record=blob(row.record),
        record_hash=blob(row.record_hash),
        prev_hash=blob(row.prev_hash),
    )


class Store:
    """An engine and the transactions the repository methods run in."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        """A write transaction (SQLite: BEGIN IMMEDIATE); constraint errors become local ones."""
        try:
            with self.engine.connect() as conn:
                conn.execution_options(**{WRITE_OPTION: True})
                with conn.begin():
                    yield conn
        except sa_exc.IntegrityError as exc:
            raise LocalProtocolError(f"the database refused the change: {exc.orig}") from exc

    @contextmanager
    def _read(self) -> Iterator[Connection]:
        """A read transaction: one snapshot for every statement in it."""
        with self.engine.connect() as conn:
            if conn.dialect.name == "postgresql":
                conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                yield conn
