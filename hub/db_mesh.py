"""The mesh half of the hub's repository: devices, objects, shards, placements, parked receipts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import (
    Row,
    Select,
    delete,
    distinct,
    func,
    insert,
    select,
    update,
)

from hub import db_reports
from hub.db_base import (
    MAX_PAGE,
    Store,
    check_cid,
    check_count,
    check_node_id,
    check_page,
    check_text,
    device_of,
    insert_for,
    standing_of,
)
from hub.db_records import (
    Device,
    ObjectHealth,
    ObjectRecord,
    Page,
    ParkedReceipt,
    Placement,
    PlacementRecord,
)
from hub.db_schema import (
    PlacementState,
    devices,
    objects,
    parked_receipts,
    placements,
    shards,
)
from lichen.errors import LocalProtocolError, NotAuthorised
from lichen.identity import format_node_id, node_id_bytes
from lichen.rewards import Standing, State


def _placement(row: Row[Any]) -> Placement:
    return Placement(
        cid=row.cid,
        shard_index=row.shard_index,
        holder=row.holder,
        root=bytes(row.root),
        piece_size=row.piece_size,
        block_size=row.block_size,
        accepted_at=row.accepted_at,
        expiry=row.expiry,
        state=PlacementState(row.state),
        lost_at=row.lost_at,
    )


def _placement_query() -> Select[Any]:
    return (
        select(*placements.c, objects.c.block_size)
        .join(objects, objects.c.cid == placements.c.cid)
        .order_by(placements.c.cid, placements.c.shard_index, placements.c.holder)
    )


class MeshStore(Store):
    """Devices, objects and who holds what (see :class:`hub.db.Database` for the contract)."""

    # -- devices ----------------------------------------------------------------------------

    def enroll_device(
        self, node_id: str, public_key: bytes, name: str, capacity_bytes: int, now: float
    ) -> bool:
        """Record an enrolled device; True if it is new.

        A known device gets the new name and capacity and keeps its enrolment time and
        standing (joining again clears no warning). :class:`NotAuthorised` if it was revoked;
        :class:`LocalProtocolError` if ``node_id`` is not ``public_key``'s.
        """
        if node_id != format_node_id(node_id_bytes(public_key)):
            raise LocalProtocolError("the node id is not the public key's")
        check_text(name, "device name")
        check_count(capacity_bytes, "capacity")
        with self._write() as conn:
            inserted = conn.execute(
                insert_for(conn, devices)
                .values(
                    node_id=node_id,
                    public_key=public_key,
                    name=name,
                    enrolled_at=now,
                    online=False,
                    capacity_bytes=capacity_bytes,
                    used_bytes=0,
                    standing_state=State.OK.value,
                    standing_failures=0,
                )
                .on_conflict_do_nothing(index_elements=[devices.c.node_id])
                .returning(devices.c.node_id)
            ).first()
            if inserted is not None:
                return True
            revoked = conn.execute(
                select(devices.c.revoked_at).where(devices.c.node_id == node_id)
            ).scalar_one()
            if revoked is not None:
                raise NotAuthorised(f"device {node_id} was revoked")
            conn.execute(
                update(devices)
                .where(devices.c.node_id == node_id)
                .values(name=name, capacity_bytes=capacity_bytes)
            )
            return False

    def revoke_device(self, node_id: str, now: float) -> bool:
        """Revoke a device: its messages are refused from now on. False if unknown or revoked."""
        with self._write() as conn:
            result = conn.execute(
                update(devices)
                .where(devices.c.node_id == node_id, devices.c.revoked_at.is_(None))
                .values(revoked_at=now, online=False)
            )
            return result.rowcount == 1

    def update_presence(
        self,
        node_id: str,
        *,
        online: bool,
        now: float,
        capacity_bytes: int | None = None,
        used_bytes: int | None = None,
        address: str | None = None,
    ) -> bool:
        """Record a status: online clears the absence, offline starts it if not started.

        Figures left None keep their old values. False if the device is unknown.
        """
        values: dict[str, Any] = {"online": online}
        if online:
            values.update(last_seen=now, absent_since=None)
        else:
            values["absent_since"] = func.coalesce(devices.c.absent_since, now)
        if capacity_bytes is not None:
            values["capacity_bytes"] = check_count(capacity_bytes, "capacity")
        if used_bytes is not None:
            values["used_bytes"] = check_count(used_bytes, "used bytes")
        if address is not None:
            values["address"] = check_text(address, "address")
        with self._write() as conn:
            result = conn.execute(
                update(devices).where(devices.c.node_id == node_id).values(**values)
            )
            return result.rowcount == 1

    def mark_absent(self, node_id: str, now: float) -> bool:
        """Start a device's absence (a missed challenge) unless it already started."""
        with self._write() as conn:
            result = conn.execute(
                update(devices)
                .where(devices.c.node_id == node_id)
                .values(absent_since=func.coalesce(devices.c.absent_since, now))
            )
            return result.rowcount == 1

    def set_standing(self, node_id: str, standing: Standing) -> bool:
        """Overwrite a device's standing (e.g. back to ok when an evicted device enrols again)."""
        with self._write() as conn:
            result = conn.execute(
                update(devices)
                .where(devices.c.node_id == node_id)
                .values(standing_state=standing.state.value, standing_failures=standing.failures)
            )
            return result.rowcount == 1

    def get_device(self, node_id: str) -> Device | None:
        """The device, revoked or not; None if unknown."""
        with self._read() as conn:
            row = conn.execute(select(devices).where(devices.c.node_id == node_id)).first()
            return None if row is None else device_of(row)

    def public_key(self, node_id: str) -> bytes | None:
        """The key of an enrolled, unrevoked device; None otherwise (refuse its messages)."""
        with self._read() as conn:
            key = conn.execute(
                select(devices.c.public_key).where(
                    devices.c.node_id == node_id, devices.c.revoked_at.is_(None)
                )
            ).scalar_one_or_none()
            return None if key is None else bytes(key)

    def list_devices(self, limit: int = 100, offset: int = 0) -> Page[Device]:
        """Devices by node id, revoked ones included."""
        check_page(limit, offset)
        with self._read() as conn:
            total = conn.execute(select(func.count()).select_from(devices)).scalar_one()
            rows = conn.execute(
                select(devices).order_by(devices.c.node_id).limit(limit).offset(offset)
            )
            return Page(tuple(device_of(r) for r in rows), total, limit, offset)

    def standings(self) -> dict[str, Standing]:
        """Every unrevoked device's standing: the ``previous`` for the next epoch's rewards."""
        with self._read() as conn:
            rows = conn.execute(
                select(
                    devices.c.node_id, devices.c.standing_state, devices.c.standing_failures
                ).where(devices.c.revoked_at.is_(None))
            )
            return {r.node_id: standing_of(r.standing_state, r.standing_failures) for r in rows}

    # -- objects and shards ----------------------------------------------------------------

    def record_object(
        self, obj: ObjectRecord, now: float, headers: Mapping[int, bytes] | None = None
    ) -> bool:
        """Record an object from its manifest, with owner-signed shard ``headers`` by index.

        True if new. A known object keeps its first manifest; headers it lacked are added.
        """
        _check_object(obj, headers or {})
        headers = dict(headers or {})
        with self._write() as conn:
            inserted = conn.execute(
                insert_for(conn, objects)
                .values(
                    cid=obj.cid,
                    owner=obj.owner,
                    manifest=obj.manifest,
                    codec=obj.codec,
                    k=obj.k,
                    n=obj.n,
                    size=obj.size,
                    piece_size=obj.piece_size,
                    block_size=obj.block_size,
                    label=obj.label,
                    created=obj.created,
                    expiry=obj.expiry,
                    recorded_at=now,
                )
                .on_conflict_do_nothing(index_elements=[objects.c.cid])
                .returning(objects.c.cid)
            ).first()
            if inserted is not None:
                conn.execute(
                    insert(shards),
                    [
                        {
                            "cid": obj.cid,
                            "shard_index": index,
                            "root": root,
                            "signed_header": headers.get(index),
                        }
                        for index, root in enumerate(obj.roots)
                    ],
                )
                return True
            for index, header in sorted(headers.items()):
                conn.execute(
                    update(shards)
                    .where(
                        shards.c.cid == obj.cid,
                        shards.c.shard_index == index,
                        shards.c.signed_header.is_(None),
                    )
                    .values(signed_header=header)
                )
            return False

    def manifest(self, cid: str) -> bytes | None:
        """The object's signed manifest as recorded; None if unknown."""
        with self._read() as conn:
            data = conn.execute(
                select(objects.c.manifest).where(objects.c.cid == cid)
            ).scalar_one_or_none()
            return None if data is None else bytes(data)

    def shard_roots(self, cid: str) -> dict[int, bytes]:
        """The manifest's Merkle root of each shard index of the object."""
        with self._read() as conn:
            rows = conn.execute(
                select(shards.c.shard_index, shards.c.root).where(shards.c.cid == cid)
            )
            return {r.shard_index: bytes(r.root) for r in rows}

    def shard_headers(self, cid: str, indices: Sequence[int] | None = None) -> dict[int, bytes]:
        """The owner-signed headers the hub has for the object's shards (all, or ``indices``)."""
        query = select(shards.c.shard_index, shards.c.signed_header).where(
            shards.c.cid == cid, shards.c.signed_header.is_not(None)
        )
        if indices is not None:
            query = query.where(shards.c.shard_index.in_(list(indices)))
        with self._read() as conn:
            return {r.shard_index: bytes(r.signed_header) for r in conn.execute(query)}

    def get_object(self, cid: str) -> ObjectHealth | None:
        """The object with its live shard count; None if unknown."""
        with self._read() as conn:
            found = db_reports.object_health(conn, objects.c.cid == cid, limit=1)
            return found[0] if found else None

    def list_objects(self, limit: int = 100, offset: int = 0) -> Page[ObjectHealth]:
        """Objects by content address, each with its live shard count."""
        check_page(limit, offset)
        with self._read() as conn:
            total = conn.execute(select(func.count()).select_from(objects)).scalar_one()
            items = db_reports.object_health(conn, None, limit=limit, offset=offset)
            return Page(tuple(items), total, limit, offset)

    def objects_at_risk(self, margin: int, limit: int = MAX_PAGE) -> list[ObjectHealth]:
        """Objects with at most ``k + margin`` live shards and no repair under way.

        The fewest live shards first; unreadable ones (fewer than k) are included.
        """
        check_page(limit, 0)
        with self._read() as conn:
            return db_reports.objects_at_risk(conn, check_count(margin, "margin"), limit)

    # -- placements -------------------------------------------------------------------------

    def add_placement(self, placement: PlacementRecord, now: float) -> None:
        """Record (or renew as live) a placement from a verified receipt.

        The object must be recorded and the receipt's root must be the manifest's, else
        :class:`LocalProtocolError` (park a receipt that came before its manifest).
        """
        p = placement
        check_cid(p.cid)
        check_node_id(p.holder)
        check_count(p.piece_size, "piece size")
        with self._write() as conn:
            root = conn.execute(
                select(shards.c.root).where(
                    shards.c.cid == p.cid, shards.c.shard_index == p.shard_index
                )
            ).scalar_one_or_none()
            if root is None:
                raise LocalProtocolError(f"no shard {p.shard_index} of {p.cid} is recorded")
            if bytes(root) != p.root:
                raise LocalProtocolError("the receipt's root is not the manifest's")
            fields = {
                "root": p.root,
                "piece_size": p.piece_size,
                "receipt": p.receipt,
                "accepted_at": p.accepted_at,
                "expiry": p.expiry,
                "recorded_at": now,
                "state": PlacementState.LIVE.value,
                "lost_at": None,
            }
            keys = {"cid": p.cid, "shard_index": p.shard_index, "holder": p.holder}
            conn.execute(
                insert_for(conn, placements)
                .values(**keys, **fields)
                .on_conflict_do_update(index_elements=list(keys), set_=fields)
            )

    def set_placement_state(
        self, cid: str, shard_index: int, holder: str, state: PlacementState, now: float
    ) -> bool:
        """Mark one placement live, lost (at ``now``) or removed. False if there is none."""
        values: dict[str, Any] = {"state": PlacementState(state).value}
        if state == PlacementState.LOST:
            values["lost_at"] = now
        elif state == PlacementState.LIVE:
            values["lost_at"] = None
        with self._write() as conn:
            result = conn.execute(
                update(placements)
                .where(
                    placements.c.cid == cid,
                    placements.c.shard_index == shard_index,
                    placements.c.holder == holder,
                )
                .values(**values)
            )
            return result.rowcount == 1

    def mark_holder_lost(self, holder: str, now: float) -> int:
        """Mark every live placement of ``holder`` lost; how many were."""
        with self._write() as conn:
            result = conn.execute(
                update(placements)
                .where(
                    placements.c.holder == holder,
                    placements.c.state == PlacementState.LIVE.value,
                )
                .values(state=PlacementState.LOST.value, lost_at=now)
            )
            return result.rowcount

    def device_placements(
        self, holder: str, state: PlacementState | None = PlacementState.LIVE
    ) -> list[Placement]:
        """The placements of ``holder`` (live ones by default, all with None), for challenges."""
        query = _placement_query().where(placements.c.holder == holder)
        if state is not None:
            query = query.where(placements.c.state == PlacementState(state).value)
        with self._read() as conn:
            return [_placement(r) for r in conn.execute(query)]

    def live_placements_by_holder(self) -> dict[str, list[Placement]]:
        """Every live placement, by holder, in one query (what challenges are planned from)."""
        by_holder: dict[str, list[Placement]] = {}
        query = _placement_query().where(placements.c.state == PlacementState.LIVE.value)
        with self._read() as conn:
            for row in conn.execute(query):
                by_holder.setdefault(row.holder, []).append(_placement(row))
        return by_holder

    def object_placements(self, cid: str) -> list[Placement]:
        """Every recorded placement of the object, any state."""
        with self._read() as conn:
            rows = conn.execute(_placement_query().where(placements.c.cid == cid))
            return [_placement(r) for r in rows]

    def live_count(self, cid: str) -> int:
        """Distinct shard indices of the object held live somewhere."""
        with self._read() as conn:
            return int(
                conn.execute(
                    select(func.count(distinct(placements.c.shard_index))).where(
                        placements.c.cid == cid,
                        placements.c.state == PlacementState.LIVE.value,
                    )
                ).scalar_one()
            )

    def held_bytes(self, holder: str) -> int:
        """Bytes of the shards ``holder`` holds live, per its receipts."""
        with self._read() as conn:
            return int(
                conn.execute(
                    select(func.coalesce(func.sum(placements.c.piece_size), 0)).where(
                        placements.c.holder == holder,
                        placements.c.state == PlacementState.LIVE.value,
                    )
                ).scalar_one()
            )

    # -- receipts waiting for their manifest -----------------------------------------------

    def park_receipt(self, parked: ParkedReceipt) -> None:
        """Keep a signed receipt until its manifest arrives (a newer one replaces it)."""
        check_cid(parked.cid)
        check_node_id(parked.holder)
        keys = {"cid": parked.cid, "shard_index": parked.shard_index, "holder": parked.holder}
        fields = {"receipt": parked.receipt, "received_at": parked.received_at}
        with self._write() as conn:
            conn.execute(
                insert_for(conn, parked_receipts)
                .values(**keys, **fields)
                .on_conflict_do_update(index_elements=list(keys), set_=fields)
            )

    def take_parked(self, cid: str) -> list[ParkedReceipt]:
        """Remove and return the receipts parked for the object."""
        where = parked_receipts.c.cid == cid
        with self._write() as conn:
            rows = conn.execute(
                select(parked_receipts)
                .where(where)
                .order_by(parked_receipts.c.shard_index, parked_receipts.c.holder)
            ).all()
            conn.execute(delete(parked_receipts).where(where))
            return [
                ParkedReceipt(r.cid, r.shard_index, r.holder, bytes(r.receipt), r.received_at)
                for r in rows
            ]

    def parked_count(self, holder: str) -> int:
        """How many receipts of ``holder`` are parked (the service bounds this)."""
        with self._read() as conn:
            return int(
                conn.execute(
                    select(func.count()).where(parked_receipts.c.holder == holder)
                ).scalar_one()
            )

    def drop_parked(self, received_before: float) -> int:
        """Forget receipts parked before ``received_before``; how many were dropped."""
        with self._write() as conn:
            result = conn.execute(
                delete(parked_receipts).where(parked_receipts.c.received_at < received_before)
            )
            return result.rowcount


def _check_object(obj: ObjectRecord, headers: Mapping[int, bytes]) -> None:
    check_cid(obj.cid)
    check_node_id(obj.owner)
    check_text(obj.codec, "codec")
    check_text(obj.label, "label")
    for what in ("size", "piece_size", "block_size"):
        check_count(getattr(obj, what), what)
    if not 1 <= obj.k <= obj.n or len(obj.roots) != obj.n:
        raise LocalProtocolError("an object needs 1 <= k <= n and one root per shard")
    if any(not 0 <= index < obj.n for index in headers):
        raise LocalProtocolError("a shard header index is out of range")
