"""Alembic's entry point for the hub's migrations.

:meth:`hub.db.Database.upgrade` hands over an open connection in
``config.attributes["connection"]``; a developer running the ``alembic`` command instead sets
``sqlalchemy.url``. SQLite gets batch mode, so later revisions can alter tables it cannot
``ALTER`` in place.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine

from hub.db_schema import metadata
from lichen.errors import ConfigError


def _run(conn: Connection) -> None:
    context.configure(
        connection=conn,
        target_metadata=metadata,
        render_as_batch=conn.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def main() -> None:
    """Run the migrations on the connection given, or on ``sqlalchemy.url``."""
    if context.is_offline_mode():
        raise ConfigError("the hub migrations run online only (no SQL script mode)")
    conn = context.config.attributes.get("connection")
    if conn is not None:
        _run(conn)
        return
    url = context.config.get_main_option("sqlalchemy.url")
    if not url:
        raise ConfigError("the hub migrations need a connection or sqlalchemy.url")
    engine = create_engine(url)
    try:
        with engine.connect() as fresh:
            _run(fresh)
            fresh.commit()
    finally:
        engine.dispose()


main()
