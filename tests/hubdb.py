"""Helpers for tests of the hub's database: numbered identities and devices, objects,
placements and proof results made up to order, and a bulk mesh for the page tests.

Device ``i`` is :func:`ident` ``(i)`` (a key of 32 bytes ``i``), so tests name devices by number.
"""

from __future__ import annotations

import hashlib

from sqlalchemy import insert

from hub.db import Database
from hub.db_records import ObjectRecord, PlacementRecord
from hub.db_schema import ChallengeOutcome, challenges, devices, epochs, rewards
from lichen import cid as cids
from lichen.audit import ItemVerdict, Verdict
from lichen.identity import Identity
from lichen.proofs import Reason
from lichen.rewards import DeviceProof, Outcome, State

FAR = 2_000_000_000.0  # an expiry no test reaches
EPOCHS = (1, 2, 3)  # the epochs of bulk_mesh: 1 and 2 closed, 3 open


def ident(i: int) -> Identity:
    """Device ``i``'s identity."""
    return Identity(bytes([i]) * 32)


def enroll(db: Database, i: int, now: float = 1.0, name: str | None = None) -> str:
    """Enroll device ``i`` (named ``dev<i>`` unless ``name``); its node id."""
    who = ident(i)
    db.enroll_device(who.node_id, who.public.public_key, name or f"dev{i}", 1000, now)
    return who.node_id


def root(i: int, j: int) -> bytes:
    """The Merkle root of shard ``j`` of object ``i``."""
    return hashlib.sha256(b"%d/%d" % (i, j)).digest()


def make_object(i: int, k: int = 2, n: int = 4, owner: int = 0) -> ObjectRecord:
    """Object ``i``, ``k`` of ``n``, owned by device ``owner``."""
    return ObjectRecord(
        cid=cids.text_of(b"object %d" % i),
        owner=ident(owner).node_id,
        manifest=b"signed manifest %d" % i,
        codec="zfec-rs/1",
        k=k,
        n=n,
        size=1000,
        piece_size=500,
        block_size=128,
        roots=tuple(root(i, j) for j in range(n)),
        created=10.0,
        expiry=FAR,
        label=f"file {i}",
    )


def place(db: Database, obj: ObjectRecord, index: int, holder: str, now: float = 5.0) -> None:
    """Record that ``holder`` keeps shard ``index`` of ``obj``."""
    record = PlacementRecord(
        obj.cid, index, holder, obj.roots[index], obj.piece_size, b"receipt", 4.0, FAR
    )
    db.add_placement(record, now)


def result(epoch: int, who: int, obj: ObjectRecord, reasons: list[Reason]) -> Verdict:
    """The core's verdict on device ``who``'s answer, one item per reason (its rewards input
    is not what the database keeps, so it is left empty)."""
    items = tuple(
        ItemVerdict(cids.from_text(obj.cid), index, reason == Reason.OK, str(reason))
        for index, reason in enumerate(reasons)
    )
    return Verdict(ident(who).node_id, epoch, True, False, items, 0, "", DeviceProof(()))


def bulk_mesh(db: Database, first: int, count: int) -> None:
    """``count`` devices (every fifth warned) with a proof round and a reward each epoch."""
    numbers = range(first, first + count)
    with db.engine.begin() as conn:
        if first == 1:
            conn.execute(
                insert(epochs),
                [{"epoch": e, "started": e * 60.0, "deadline": e * 60.0 + 30} for e in EPOCHS],
            )
            conn.execute(
                epochs.update().where(epochs.c.epoch < 3).values(closed_at=1000.0, record=b"r")
            )
        conn.execute(
            insert(devices),
            [
                {
                    "node_id": ident(i).node_id,
                    "public_key": ident(i).public.public_key,
                    "name": f"dev{i:03d}",
                    "enrolled_at": 1.0,
                    "online": i % 2 == 0,
                    "capacity_bytes": 1000,
                    "used_bytes": i,
                    "standing_state": State.WARNED.value if i % 5 == 0 else State.OK.value,
                    "standing_failures": 1 if i % 5 == 0 else 0,
                }
                for i in numbers
            ],
        )
        conn.execute(
            insert(challenges),
            [
                {
                    "epoch": e,
                    "device": ident(i).node_id,
                    "challenge": b"c",
                    "sent_at": e * 60.0,
                    "deadline": e * 60.0 + 30,
                    "outcome": ChallengeOutcome.PASSED.value,
                    "items_passed": 2,
                    "items_failed": 0,
                    "detail": "",
                }
                for i in numbers
                for e in EPOCHS
            ],
        )
        conn.execute(
            insert(rewards),
            [
                {
                    "epoch": e,
                    "device": ident(i).node_id,
                    "outcome": (Outcome.FAILED if i % 5 == 0 else Outcome.PASSED).value,
                    "proven_bytes": 0,
                    "items_passed": 2,
                    "items_failed": 0,
                    "reward": i,
                    "penalty": 0,
                    "before_state": "ok",
                    "before_failures": 0,
                    "after_state": "ok",
                    "after_failures": 0,
                    "explanation": [f"epoch {e}"],
                }
                for i in numbers
                for e in EPOCHS[:2]
            ],
        )
