"""The first schema: devices, objects, shards, placements, parked receipts, epochs, challenges,
proof items, rewards and repairs (described in :mod:`hub.db_schema`).

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Create every table, referenced tables first."""
    op.create_table(
        "devices",
        sa.Column("node_id", sa.String(length=64), nullable=False),
        sa.Column("public_key", sa.LargeBinary(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("enrolled_at", sa.Float(), nullable=False),
        sa.Column("revoked_at", sa.Float(), nullable=True),
        sa.Column("last_seen", sa.Float(), nullable=True),
        sa.Column("online", sa.Boolean(), nullable=False),
        sa.Column("absent_since", sa.Float(), nullable=True),
        sa.Column("capacity_bytes", sa.BigInteger(), nullable=False),
        sa.Column("used_bytes", sa.BigInteger(), nullable=False),
        sa.Column("address", sa.Text(), nullable=True),
        sa.Column("standing_state", sa.String(length=16), nullable=False),
        sa.Column("standing_failures", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("node_id", name=op.f("pk_devices")),
    )
    op.create_table(
        "epochs",
        sa.Column("epoch", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("started", sa.Float(), nullable=False),
        sa.Column("deadline", sa.Float(), nullable=False),
        sa.Column("closed_at", sa.Float(), nullable=True),
        sa.Column("record", sa.LargeBinary(), nullable=True),
        sa.Column("record_hash", sa.LargeBinary(), nullable=True),
        sa.Column("prev_hash", sa.LargeBinary(), nullable=True),
        sa.PrimaryKeyConstraint("epoch", name=op.f("pk_epochs")),
    )
    op.create_table(
        "objects",
        sa.Column("cid", sa.String(length=64), nullable=False),
        sa.Column("owner", sa.String(length=64), nullable=False),
        sa.Column("manifest", sa.LargeBinary(), nullable=False),
        sa.Column("codec", sa.Text(), nullable=False),
        sa.Column("k", sa.Integer(), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("piece_size", sa.BigInteger(), nullable=False),
        sa.Column("block_size", sa.Integer(), nullable=False),
        sa.Column("label", sa.Text(), nullable=True),
        sa.Column("created", sa.Float(), nullable=False),
        sa.Column("expiry", sa.Float(), nullable=False),
        sa.Column("recorded_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("cid", name=op.f("pk_objects")),
    )
    op.create_table(
        "challenges",
        sa.Column("epoch", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("device", sa.String(length=64), nullable=False),
        sa.Column("challenge", sa.LargeBinary(), nullable=False),
        sa.Column("sent_at", sa.Float(), nullable=False),
        sa.Column("deadline", sa.Float(), nullable=False),
        sa.Column("answered_at", sa.Float(), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("items_passed", sa.Integer(), nullable=False),
        sa.Column("items_failed", sa.Integer(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["device"],
            ["devices.node_id"],
            name=op.f("fk_challenges_device_devices"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["epoch"], ["epochs.epoch"], name=op.f("fk_challenges_epoch_epochs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("epoch", "device", name=op.f("pk_challenges")),
    )
    op.create_index(op.f("ix_challenges_device"), "challenges", ["device"])

    op.create_table(
        "parked_receipts",
        sa.Column("cid", sa.String(length=64), nullable=False),
        sa.Column("shard_index", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("holder", sa.String(length=64), nullable=False),
        sa.Column("receipt", sa.LargeBinary(), nullable=False),
        sa.Column("received_at", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["holder"],
            ["devices.node_id"],
            name=op.f("fk_parked_receipts_holder_devices"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("cid", "shard_index", "holder", name=op.f("pk_parked_receipts")),
    )
    op.create_table(
        "repairs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("cid", sa.String(length=64), nullable=False),
        sa.Column("lost_indices", sa.JSON(), nullable=False),
        sa.Column("repairer", sa.String(length=64), nullable=False),
        sa.Column("targets", sa.JSON(), nullable=False),
        sa.Column("ordered_at", sa.Float(), nullable=False),
        sa.Column("finished_at", sa.Float(), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["cid"], ["objects.cid"], name=op.f("fk_repairs_cid_objects"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["repairer"], ["devices.node_id"], name=op.f("fk_repairs_repairer_devices")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_repairs")),
    )
    op.create_index(op.f("ix_repairs_cid"), "repairs", ["cid"])
    op.create_index(op.f("ix_repairs_state"), "repairs", ["state"])

    op.create_table(
        "rewards",
        sa.Column("epoch", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("device", sa.String(length=64), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("proven_bytes", sa.BigInteger(), nullable=False),
        sa.Column("items_passed", sa.Integer(), nullable=False),
        sa.Column("items_failed", sa.Integer(), nullable=False),
        sa.Column("reward", sa.BigInteger(), nullable=False),
        sa.Column("penalty", sa.BigInteger(), nullable=False),
        sa.Column("before_state", sa.String(length=16), nullable=False),
        sa.Column("before_failures", sa.BigInteger(), nullable=False),
        sa.Column("after_state", sa.String(length=16), nullable=False),
        sa.Column("after_failures", sa.BigInteger(), nullable=False),
        sa.Column("explanation", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["device"],
            ["devices.node_id"],
            name=op.f("fk_rewards_device_devices"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["epoch"], ["epochs.epoch"], name=op.f("fk_rewards_epoch_epochs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("epoch", "device", name=op.f("pk_rewards")),
    )
    op.create_index(op.f("ix_rewards_device"), "rewards", ["device"])

    op.create_table(
        "shards",
        sa.Column("cid", sa.String(length=64), nullable=False),
        sa.Column("shard_index", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("root", sa.LargeBinary(), nullable=False),
        sa.Column("signed_header", sa.LargeBinary(), nullable=True),
        sa.ForeignKeyConstraint(
            ["cid"], ["objects.cid"], name=op.f("fk_shards_cid_objects"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("cid", "shard_index", name=op.f("pk_shards")),
    )
    op.create_table(
        "placements",
        sa.Column("cid", sa.String(length=64), nullable=False),
        sa.Column("shard_index", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("holder", sa.String(length=64), nullable=False),
        sa.Column("root", sa.LargeBinary(), nullable=False),
        sa.Column("piece_size", sa.BigInteger(), nullable=False),
        sa.Column("receipt", sa.LargeBinary(), nullable=False),
        sa.Column("accepted_at", sa.Float(), nullable=False),
        sa.Column("expiry", sa.Float(), nullable=False),
        sa.Column("recorded_at", sa.Float(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("lost_at", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(
            ["cid", "shard_index"],
            ["shards.cid", "shards.shard_index"],
            name=op.f("fk_placements_cid_shard_index_shards"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["holder"],
            ["devices.node_id"],
            name=op.f("fk_placements_holder_devices"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("cid", "shard_index", "holder", name=op.f("pk_placements")),
    )
    op.create_index(op.f("ix_placements_cid_state"), "placements", ["cid", "state"])
    op.create_index(op.f("ix_placements_holder_state"), "placements", ["holder", "state"])

    op.create_table(
        "proof_items",
        sa.Column("epoch", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("device", sa.String(length=64), nullable=False),
        sa.Column("cid", sa.String(length=64), nullable=False),
        sa.Column("shard_index", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("passed", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["epoch", "device"],
            ["challenges.epoch", "challenges.device"],
            name=op.f("fk_proof_items_epoch_device_challenges"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "epoch", "device", "cid", "shard_index", name=op.f("pk_proof_items")
        ),
    )


def downgrade() -> None:
    """Downgrade the schema: drop every table, dependents first."""
    op.drop_table("proof_items")
    op.drop_table("placements")
    op.drop_table("shards")
    op.drop_table("rewards")
    op.drop_table("repairs")
    op.drop_table("parked_receipts")
    op.drop_table("challenges")
    op.drop_table("objects")
    op.drop_table("epochs")
    op.drop_table("devices")
