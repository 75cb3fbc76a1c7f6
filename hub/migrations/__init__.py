"""Alembic migrations of the hub's database; run them with :meth:`hub.db.Database.upgrade`."""
