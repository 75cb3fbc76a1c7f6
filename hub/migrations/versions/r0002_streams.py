"""Sensor streams for the dashboard: streams, stream_counts and readings (described in
:mod:`hub.db_schema`).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create the stream tables, referenced tables first."""
    op.create_table(
        "streams",
        sa.Column("device", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("readings_total", sa.BigInteger(), nullable=False),
        sa.Column("newest_at", sa.Float(), nullable=True),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["device"],
            ["devices.node_id"],
            name=op.f("fk_streams_device_devices"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("device", "name", name=op.f("pk_streams")),
    )
    op.create_table(
        "stream_counts",
        sa.Column("device", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("readings_total", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["device", "name"],
            ["streams.device", "streams.name"],
            name=op.f("fk_stream_counts_device_name_streams"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("device", "name", "at", name=op.f("pk_stream_counts")),
    )
    op.create_index(op.f("ix_stream_counts_at"), "stream_counts", ["at"])
    op.create_table(
        "readings",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("device", sa.String(length=64), nullable=False),
        sa.Column("stream", sa.String(length=64), nullable=False),
        sa.Column("at", sa.Float(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("unit", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["device", "stream"],
            ["streams.device", "streams.name"],
            name=op.f("fk_readings_device_stream_streams"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_readings")),
        sa.UniqueConstraint(
            "device",
            "stream",
            "at",
            "name",
            "value",
            "unit",
            name=op.f("uq_readings_device_stream_at_name_value_unit"),
        ),
    )


def downgrade() -> None:
    """Drop the stream tables, dependents first."""
    op.drop_table("readings")
    op.drop_index(op.f("ix_stream_counts_at"), table_name="stream_counts")
    op.drop_table("stream_counts")
    op.drop_table("streams")
