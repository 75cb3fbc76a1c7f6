"""Carrying out a hub's repair order: rebuild lost shards from k good ones, place them anew.

The order (:class:`lichen.hubmessages.RepairOrder`, already checked against the hub's key)
names the object's owner-signed manifest, live holders to fetch from, and for each lost index
its owner-signed header and a new holder. The repairer fetches shards over ``coap+tcp`` (its
own store first), checks each against the manifest, decodes the sealed object bytes with
:mod:`lichen.erasure` and encodes them again: the piece of each lost index comes out
byte-identical to the original, which :func:`lichen.shard.verify_body` confirms against the
root in the owner's header before it goes anywhere. Each piece is then offered to its new
holder under that original header, so no owner key is needed: the object stays sealed
throughout, and the new holder checks the shard exactly as it would check the owner's.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence

from edge_agent.coap_client import AgentClient
from edge_agent.datapath import PARALLEL_TRANSFERS
from edge_agent.store import ShardStore
from lichen import cid, erasure, objects, shard
from lichen.errors import IntegrityError, LichenError, NotEnoughShards
from lichen.hubmessages import Endpoint, Repaired, RepairOrder, RepairTarget
from lichen.identity import Identity, PublicIdentity, format_node_id
from lichen.manifest import Manifest, open_manifest
from lichen.messages import PeerInfo, ShardTransfer

MIN_REPAIR_TIME = 60.0  # seconds a repair may take even when the hub's deadline is nearer
MAX_DETAIL = 250  # characters of explanation sent back (Repaired allows 256)

Logger = logging.Logger | logging.LoggerAdapter[logging.Logger]


async def _verified_peer(client: AgentClient, endpoint: Endpoint) -> PeerInfo:
    """The endpoint as a peer, once it proved it holds the key of the node id the hub named."""
    proven = await client.hello(
        endpoint.host, endpoint.port, expected_node_id=format_node_id(endpoint.node)
    )
    return PeerInfo(proven.public_key, endpoint.host, endpoint.port)


async def fetch_pieces(
    order: RepairOrder,
    manifest: Manifest,
    client: AgentClient,
    me: Identity,
    store: ShardStore,
) -> tuple[dict[int, bytes], list[str]]:
    """At least k checked shard bodies by index (fewer if not found), and what went wrong."""
    object_cid = manifest.object_cid
    lost = {t.index for t in order.targets}
    candidates: dict[int, list[Endpoint | None]] = {}  # None: this agent's own store
    for index in range(manifest.n):
        if index not in lost and store.shard_info(object_cid, index) is not None:
            candidates[index] = [None]
    for source in order.sources:
        if source.holder.node != me.kid and source.index not in lost:
            candidates.setdefault(source.index, []).append(source.holder)
    pieces: dict[int, bytes] = {}
    problems: list[str] = []
    limit = asyncio.Semaphore(PARALLEL_TRANSFERS)

    async def fetch(index: int) -> None:
        for endpoint in candidates[index]:
            where = "own store" if endpoint is None else format_node_id(endpoint.node)[:8]
            try:
                if endpoint is None:
                    got = await asyncio.to_thread(store.get_shard, object_cid, index)
                else:
                    async with limit:
                        peer = await _verified_peer(client, endpoint)
                        transfer = await client.get_shard(
                            peer, object_cid, index, manifest.piece_size
                        )
                    got = None if transfer is None else (transfer.signed_header, transfer.body)
                if got is None:
                    problems.append(f"{index}@{where}: not held")
                    continue
                checked = await asyncio.to_thread(objects.check_shard, manifest, *got)
                if checked.header.index != index:
                    raise IntegrityError(f"sent shard {checked.header.index} for {index}")
            except LichenError as exc:
                problems.append(f"{index}@{where}: {exc}")
                continue
            pieces[index] = checked.body
            return

    # Own shards first (no network), then data shards before parity (decoding them is a
    # copy). Each round asks for as many more as are missing, so a failure costs one round.
    pending = sorted(candidates, key=lambda i: (candidates[i][0] is not None, i))
    while len(pieces) < manifest.k and pending:
        wanted = manifest.k - len(pieces)
        batch, pending = pending[:wanted], pending[wanted:]
        await asyncio.gather(*(fetch(i) for i in batch))
    return pieces, problems


def rebuild(
    manifest: Manifest, pieces: Mapping[int, bytes], targets: Sequence[RepairTarget]
) -> dict[int, bytes]:
    """The bodies of the ``targets``' shards, rebuilt from ``pieces`` and checked against the
    roots in their owner-signed headers. Raises :class:`NotEnoughShards` or
    :class:`IntegrityError` (the rebuilt bytes are not the object's)."""
    erasure.check_codec(manifest.codec)
    sealed = erasure.decode(pieces, manifest.k, manifest.n, manifest.size)
    if cid.of(sealed) != manifest.object_cid:
        raise IntegrityError(f"rebuilt bytes do not match address {manifest.cid_text}")
    again = erasure.encode(sealed, manifest.k, manifest.n)
    owner = PublicIdentity(manifest.owner)
    bodies = {}
    for target in targets:
        header = shard.open_header(target.signed_header, owner=owner)
        shard.verify_body(header, again[target.index])
        bodies[target.index] = again[target.index]
    return bodies


async def _place(
    client: AgentClient, manifest: Manifest, target: RepairTarget, body: bytes
) -> None:
    peer = await _verified_peer(client, target.holder)
    receipt, _ = await client.put_shard(peer, ShardTransfer(target.signed_header, body))
    said = (receipt.object_cid, receipt.index, receipt.root, receipt.holder)
    wanted = (manifest.object_cid, target.index, manifest.roots[target.index], target.holder.node)
    if said != wanted:
        raise IntegrityError("the new holder signed a receipt for another shard")


async def carry_out(
    order: RepairOrder,
    client: AgentClient,
    me: Identity,
    store: ShardStore,
    log: Logger,
) -> Repaired:
    """Do what ``order`` asks and return the signed-to-be report (every target placed or
    failed, with why). Never raises for what peers or the network do."""
    manifest = open_manifest(order.signed_manifest)
    targets = list(order.targets)
    placed: list[tuple[int, bytes]] = []
    failed: list[int] = []
    notes: list[str] = []
    budget = max(order.deadline - time.time(), MIN_REPAIR_TIME)
    try:
        pieces, problems = await asyncio.wait_for(
            fetch_pieces(order, manifest, client, me, store), budget
        )
        notes += problems
        if len(pieces) < manifest.k:
            raise NotEnoughShards(
                f"found {len(pieces)} of the {manifest.k} shards needed",
                found=tuple(sorted(pieces)),
                needed=manifest.k,
            )
        bodies = await asyncio.to_thread(rebuild, manifest, pieces, targets)
    except (LichenError, TimeoutError) as exc:
        why = str(exc) or "timed out"
        log.warning("repair %d of %s failed: %s", order.repair_id, manifest.cid_text, why)
        return _report(order, manifest, [], [t.index for t in targets], [why, *notes])

    limit = asyncio.Semaphore(PARALLEL_TRANSFERS)

    async def place(target: RepairTarget) -> None:
        try:
            async with limit:
                await _place(client, manifest, target, bodies[target.index])
        except LichenError as exc:
            failed.append(target.index)
            notes.append(f"{target.index}->{format_node_id(target.holder.node)[:8]}: {exc}")
            return
        placed.append((target.index, target.holder.node))

    try:
        await asyncio.wait_for(asyncio.gather(*(place(t) for t in targets)), budget)
    except TimeoutError:
        done = {i for i, _ in placed} | set(failed)
        failed += [t.index for t in targets if t.index not in done]
        notes.append("timed out placing shards")
    return _report(order, manifest, placed, failed, notes)


def _report(
    order: RepairOrder,
    manifest: Manifest,
    placed: list[tuple[int, bytes]],
    failed: list[int],
    notes: list[str],
) -> Repaired:
    detail = "; ".join(notes)
    if len(detail) > MAX_DETAIL:
        detail = detail[: MAX_DETAIL - 3] + "..."
    return Repaired(
        order.repair_id,
        manifest.object_cid,
        tuple(sorted(placed)),
        tuple(sorted(failed)),
        detail,
        int(time.time()),
    )
