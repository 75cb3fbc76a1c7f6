"""The hub's database schema: SQLAlchemy Core tables, portable between SQLite and PostgreSQL.

Conventions, the same in every table: node ids and content addresses are their text forms
(32 base32 characters, ``bafk...``); times are float unix seconds; signed messages are kept
byte for byte as ``LargeBinary``; amounts are integer micro-units. States are short strings
from the ``StrEnum`` types below. Explanation lines, lost indices and repair targets are JSON.

The tables:

``devices``
    Enrolled agents: public key, name, presence (``online``, ``last_seen``, and
    ``absent_since``, which starts the repair clock), capacity, standing (state and run of
    failing epochs, as :class:`lichen.rewards.Standing`). A revoked device keeps its row.
``objects``
    Objects known from owner-signed manifests, kept whole for repair orders, with the erasure
    parameters the health queries need (k, n, piece and block size).
``shards``
    Every index of every object: the Merkle root from the manifest and, once the owner sent
    it, the owner-signed shard header that a repaired shard is stored under.
``placements``
    Who holds which shard, learnt only from holder-signed receipts (kept byte for byte), with
    the root the holder is challenged against; ``state`` is live, lost or removed.
``parked_receipts``
    Signed receipts that arrived before their object's manifest, waiting for it.
``epochs``
    Proof epochs; a closed one holds its hub-signed ledger record, the record's hash and the
    previous record's hash (the chain).
``challenges``
    One hub-signed challenge per device and epoch, and what its answer came to.
``proof_items``
    The verdict on each shard a challenge asked about (passed, and why not).
``rewards``
    Each device's part of an epoch's ledger record: outcome, proven bytes, reward, penalty,
    standing before and after, and the explanation lines (JSON list of strings).
``repairs``
    Repair orders: the object, its lost indices (JSON list), the repairing device, the new
    holders (JSON list of ``[index, node id]``), when ordered and finished, and how it ended.
``streams``
    Each device's sensor streams as its stream reports tell them: the count of readings ever
    accepted, the time of the newest, when the hub last heard (:mod:`hub.db_streams`).
``stream_counts``
    Samples of each stream's count at hub receive times, for readings per minute; pruned to
    the last hour.
``readings``
    The newest numeric readings of each stream, only from devices whose operator shares
    reading values; a few hundred per stream.

Warnings are not a table: they are the devices whose standing is not ``ok``.

This module describes the newest schema; the migrations in ``hub/migrations/versions`` build
it step by step, and a test checks that the two agree on both databases.
"""

from __future__ import annotations

from enum import StrEnum

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

ID_LENGTH = 64
"""Column width of node ids (32 characters) and content addresses (59), with room to spare."""

STATE_LENGTH = 16
"""Column width of state names (``penalised``, ``no-answer``...)."""

# Deterministic constraint names, so later migrations (SQLite batch mode) can refer to them.
NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_N_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING)


class PlacementState(StrEnum):
    """Whether a holder is counted on to keep a shard."""

    LIVE = "live"
    LOST = "lost"
    """The holder failed proofs or vanished past the repair threshold."""
    REMOVED = "removed"
    """Dropped on purpose (expired, or replaced after a repair)."""


class ChallengeOutcome(StrEnum):
    """What became of one challenge sent to one device."""

    PENDING = "pending"
    PASSED = "passed"
    FAILED = "failed"
    """Answered, with at least one item not proven (late answers fail every item)."""
    REJECTED = "rejected"
    """An answer unusable as a whole: bad signature, malformed, a replay."""
    NO_ANSWER = "no-answer"


class RepairState(StrEnum):
    """Where a repair order stands."""

    ORDERED = "ordered"
    DONE = "done"
    FAILED = "failed"


devices = Table(
    "devices",
    metadata,
    Column("node_id", String(ID_LENGTH), primary_key=True),
    Column("public_key", LargeBinary, nullable=False),
    Column("name", Text, nullable=False),
    Column("enrolled_at", Float, nullable=False),
    Column("revoked_at", Float),
    Column("last_seen", Float),
    Column("online", Boolean, nullable=False),
    Column("absent_since", Float),
    Column("capacity_bytes", BigInteger, nullable=False),
    Column("used_bytes", BigInteger, nullable=False),
    Column("address", Text),
    Column("standing_state", String(STATE_LENGTH), nullable=False),
    Column("standing_failures", BigInteger, nullable=False),
)

objects = Table(
    "objects",
    metadata,
    Column("cid", String(ID_LENGTH), primary_key=True),
    Column("owner", String(ID_LENGTH), nullable=False),
    Column("manifest", LargeBinary, nullable=False),
    Column("codec", Text, nullable=False),
    Column("k", Integer, nullable=False),
    Column("n", Integer, nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("piece_size", BigInteger, nullable=False),
    Column("block_size", Integer, nullable=False),
    Column("label", Text),
    Column("created", Float, nullable=False),
    Column("expiry", Float, nullable=False),
    Column("recorded_at", Float, nullable=False),
)

shards = Table(
    "shards",
    metadata,
    Column(
        "cid",
        String(ID_LENGTH),
        ForeignKey("objects.cid", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("shard_index", Integer, primary_key=True, autoincrement=False),
    Column("root", LargeBinary, nullable=False),
    Column("signed_header", LargeBinary),
)

placements = Table(
    "placements",
    metadata,
    Column("cid", String(ID_LENGTH), primary_key=True),
    Column("shard_index", Integer, primary_key=True, autoincrement=False),
    Column(
        "holder",
        String(ID_LENGTH),
        ForeignKey("devices.node_id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("root", LargeBinary, nullable=False),
    Column("piece_size", BigInteger, nullable=False),
    Column("receipt", LargeBinary, nullable=False),
    Column("accepted_at", Float, nullable=False),
    Column("expiry", Float, nullable=False),
    Column("recorded_at", Float, nullable=False),
    Column("state", String(STATE_LENGTH), nullable=False),
    Column("lost_at", Float),
    ForeignKeyConstraint(
        ["cid", "shard_index"], ["shards.cid", "shards.shard_index"], ondelete="CASCADE"
    ),
    Index(None, "holder", "state"),
    Index(None, "cid", "state"),
)

parked_receipts = Table(
    "parked_receipts",
    metadata,
    Column("cid", String(ID_LENGTH), primary_key=True),
    Column("shard_index", Integer, primary_key=True, autoincrement=False),
    Column(
        "holder",
        String(ID_LENGTH),
        ForeignKey("devices.node_id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("receipt", LargeBinary, nullable=False),
    Column("received_at", Float, nullable=False),
)

epochs = Table(
    "epochs",
    metadata,
    Column("epoch", BigInteger, primary_key=True, autoincrement=False),
    Column("started", Float, nullable=False),
    Column("deadline", Float, nullable=False),
    Column("closed_at", Float),
    Column("record", LargeBinary),
    Column("record_hash", LargeBinary),
    Column("prev_hash", LargeBinary),
)

challenges = Table(
    "challenges",
    metadata,
    Column(
        "epoch",
        BigInteger,
        ForeignKey("epochs.epoch", ondelete="CASCADE"),
        primary_key=True,
        autoincrement=False,
    ),
    Column(
        "device",
        String(ID_LENGTH),
        ForeignKey("devices.node_id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("challenge", LargeBinary, nullable=False),
    Column("sent_at", Float, nullable=False),
    Column("deadline", Float, nullable=False),
    Column("answered_at", Float),
    Column("outcome", String(STATE_LENGTH), nullable=False),
    Column("items_passed", Integer, nullable=False),
    Column("items_failed", Integer, nullable=False),
    Column("detail", Text, nullable=False),
    Index(None, "device"),
)

proof_items = Table(
    "proof_items",
    metadata,
    Column("epoch", BigInteger, primary_key=True, autoincrement=False),
    Column("device", String(ID_LENGTH), primary_key=True),
    Column("cid", String(ID_LENGTH), primary_key=True),
    Column("shard_index", Integer, primary_key=True, autoincrement=False),
    Column("passed", Boolean, nullable=False),
    Column("reason", Text, nullable=False),
    ForeignKeyConstraint(
        ["epoch", "device"], ["challenges.epoch", "challenges.device"], ondelete="CASCADE"
    ),
)

rewards = Table(
    "rewards",
    metadata,
    Column(
        "epoch",
        BigInteger,
        ForeignKey("epochs.epoch", ondelete="CASCADE"),
        primary_key=True,
        autoincrement=False,
    ),
    Column(
        "device",
        String(ID_LENGTH),
        ForeignKey("devices.node_id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("outcome", String(STATE_LENGTH), nullable=False),
    Column("proven_bytes", BigInteger, nullable=False),
    Column("items_passed", Integer, nullable=False),
    Column("items_failed", Integer, nullable=False),
    Column("reward", BigInteger, nullable=False),
    Column("penalty", BigInteger, nullable=False),
    Column("before_state", String(STATE_LENGTH), nullable=False),
    Column("before_failures", BigInteger, nullable=False),
    Column("after_state", String(STATE_LENGTH), nullable=False),
    Column("after_failures", BigInteger, nullable=False),
    Column("explanation", JSON, nullable=False),
    Index(None, "device"),
)

repairs = Table(
    "repairs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("cid", String(ID_LENGTH), ForeignKey("objects.cid", ondelete="CASCADE"), nullable=False),
    Column("lost_indices", JSON, nullable=False),
    Column("repairer", String(ID_LENGTH), ForeignKey("devices.node_id"), nullable=False),
    Column("targets", JSON, nullable=False),
    Column("ordered_at", Float, nullable=False),
    Column("finished_at", Float),
    Column("state", String(STATE_LENGTH), nullable=False),
    Column("detail", Text, nullable=False),
    Index(None, "state"),
    Index(None, "cid"),
)

streams = Table(
    "streams",
    metadata,
    Column(
        "device",
        String(ID_LENGTH),
        ForeignKey("devices.node_id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("name", String(ID_LENGTH), primary_key=True),
    Column("readings_total", BigInteger, nullable=False),
    Column("newest_at", Float),
    Column("updated_at", Float, nullable=False),
)

stream_counts = Table(
    "stream_counts",
    metadata,
    Column("device", String(ID_LENGTH), primary_key=True),
    Column("name", String(ID_LENGTH), primary_key=True),
    Column("at", Float, primary_key=True),
    Column("readings_total", BigInteger, nullable=False),
    ForeignKeyConstraint(
        ["device", "name"], ["streams.device", "streams.name"], ondelete="CASCADE"
    ),
    Index(None, "at"),
)

readings = Table(
    "readings",
    metadata,
    # 64-bit on PostgreSQL (rows come and go for as long as the hub runs); SQLite's INTEGER
    # primary key is the 64-bit rowid already.
    Column(
        "id",
        BigInteger().with_variant(Integer(), "sqlite"),
        primary_key=True,
        autoincrement=True,
    ),
    Column("device", String(ID_LENGTH), nullable=False),
    Column("stream", String(ID_LENGTH), nullable=False),
    Column("at", Float, nullable=False),
    Column("name", Text, nullable=False),
    Column("value", Float, nullable=False),
    Column("unit", Text, nullable=False),
    ForeignKeyConstraint(
        ["device", "stream"], ["streams.device", "streams.name"], ondelete="CASCADE"
    ),
    # An exact duplicate (a QoS 1 message delivered twice) is stored once.
    UniqueConstraint("device", "stream", "at", "name", "value", "unit"),
)
