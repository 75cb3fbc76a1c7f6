"""Carrying out a hub's repair order: rebuild lost shards from k good ones, place them anew.

The order (:class:`lichen.hubmessages.RepairOrder`, already checked against the hub's key,
and each target's owner-signed header against the manifest, by
:func:`lichen.hubwire.open_from_hub`, which hands over the manifest it opened with the order:
:class:`lichen.hubwire.CheckedRepair`) names the object's owner-signed manifest, live holders
to fetch from, and for each lost index its header and a new holder. The repairer fetches
shards over ``coap+tcp`` (its own store first, :func:`edge_agent.datapath.fetch_checked`),
checks each against the manifest, decodes the sealed object bytes and encodes them again
(:func:`lichen.objects.rebuild_pieces`): the piece of each lost index comes out
byte-identical to the original, which is confirmed against its root in the manifest before it
goes anywhere. Each piece is then offered to its new holder under that original header, so no
owner key is needed: the object stays sealed throughout, and the new holder checks the shard
exactly as it would check the owner's.
"""

from __future__ import annotations

import asyncio
import logging
import time

from edge_agent import datapath
from edge_agent.coap_client import AgentClient
from edge_agent.datapath import PARALLEL_TRANSFERS, ShardSource
from edge_agent.store import ShardStore
from lichen import objects
from lichen.errors import IntegrityError, LichenError, NotEnoughShards
from lichen.hubmessages import Endpoint, Repaired, RepairOrder, RepairSource, RepairTarget
from lichen.hubwire import CheckedRepair
from lichen.identity import Identity, format_node_id
from lichen.manifest import Manifest
from lichen.messages import PeerInfo, ShardTransfer

MIN_REPAIR_TIME = 60.0  # seconds a repair may take even when the hub's deadline is nearer
MAX_DETAIL = 250  # characters of explanation sent back (Repaired allows 256)
OWN_STORE = "own store"

Logger = logging.Logger | logging.LoggerAdapter[logging.Logger]


async def _verified_peer(client: AgentClient, endpoint: Endpoint) -> PeerInfo:
    """The endpoint as a peer, once it proved it holds the key of the node id the hub named."""
    proven = await client.hello(
        endpoint.host, endpoint.port, expected_node_id=format_node_id(endpoint.node)
    )
    return PeerInfo(proven.public_key, endpoint.host, endpoint.port)


def shard_sources(
    order: RepairOrder,
    manifest: Manifest,
    client: AgentClient,
    me: Identity,
    store: ShardStore,
) -> dict[int, list[tuple[str, ShardSource]]]:
    """Where each shard not being repaired can be fetched: this agent's own store first, then
    the live holders the order names (each proving the key the hub named before it is asked)."""
    object_cid = manifest.object_cid
    lost = {t.index for t in order.targets}
    sources: dict[int, list[tuple[str, ShardSource]]] = {}
    for index in range(manifest.n):
        if index not in lost and store.shard_info(object_cid, index) is not None:

            async def own(index: int = index) -> tuple[bytes, bytes] | None:
                return await asyncio.to_thread(store.get_shard, object_cid, index)

            sources[index] = [(OWN_STORE, own)]
    for source in order.sources:
        if source.holder.node != me.kid and source.index not in lost:

            async def remote(source: RepairSource = source) -> tuple[bytes, bytes] | None:
                peer = await _verified_peer(client, source.holder)
                got = await client.get_shard(peer, object_cid, source.index, manifest.piece_size)
                return None if got is None else (got.signed_header, got.body)

            where = format_node_id(source.holder.node)[:8]
            sources.setdefault(source.index, []).append((where, remote))
    return sources


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
    checked: CheckedRepair,
    client: AgentClient,
    me: Identity,
    store: ShardStore,
    log: Logger,
) -> Repaired:
    """Do what the order asks and return the signed-to-be report (every target placed or
    failed, with why). Never raises for what peers or the network do."""
    order, manifest = checked.order, checked.manifest
    targets = list(order.targets)
    placed: list[tuple[int, bytes]] = []
    failed: list[int] = []
    notes: list[str] = []
    budget = max(order.deadline - time.time(), MIN_REPAIR_TIME)
    try:
        sources = shard_sources(order, manifest, client, me, store)
        # Own shards first (no network), then data shards before parity (decoding them is a
        # copy).
        first = sorted(sources, key=lambda i: (sources[i][0][0] != OWN_STORE, i))
        pieces, problems = await asyncio.wait_for(
            datapath.fetch_checked(manifest, sources, first), budget
        )
        notes += [f"{i}@{why}" for i, whys in sorted(problems.items()) for why in whys]
        if len(pieces) < manifest.k:
            raise NotEnoughShards(
                f"found {len(pieces)} of the {manifest.k} shards needed",
                found=tuple(sorted(pieces)),
                needed=manifest.k,
            )
        bodies = await asyncio.to_thread(
            objects.rebuild_pieces, manifest, pieces, [t.index for t in targets]
        )
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
