"""Putting an object on the mesh and getting it back, over CoAP, around the core pipeline.

``put``: seal and shard on this device (:mod:`lichen.objects`), choose holders by rendezvous
placement (:mod:`lichen.placement`), send each shard over ``coap+tcp`` and collect the
holders' signed receipts (a refusing or dead holder is replaced by the peer a repair would
choose, :func:`lichen.placement.repair_targets`), then sign the manifest and leave copies with
several agents. The owner's own agent (``home``) also gets the manifest with all n
owner-signed shard headers, which it forwards to the hub so that the hub can order repairs
without the owner.

``get``: find the manifest, fetch shards in parallel (data shards first; each failure starts
another fetch), check every shard against the manifest, rebuild and unseal.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

from edge_agent.coap_client import AgentClient
from lichen import objects, placement
from lichen.errors import LichenError, NotEnoughShards
from lichen.identity import Identity, PublicIdentity, format_node_id
from lichen.manifest import Manifest, Receipt
from lichen.messages import PeerInfo, ShardTransfer
from lichen.seal import ReadCapability

log = logging.getLogger("lichen.datapath")

PARALLEL_TRANSFERS = 4  # shards in flight at once: enough to fill a LAN, gentle on a Pi
MANIFEST_COPIES = 3  # agents besides the writer that keep the manifest
DEFAULT_LIFETIME = 365 * 24 * 3600  # seconds an object is kept unless the owner says otherwise

Progress = Callable[[int], None]
"""Called with a number of bytes just moved."""


class NotEnoughPeers(LichenError):
    """Fewer peers accepted shards than the object needs."""


@dataclass(frozen=True)
class PutResult:
    """What a put did: the signed manifest, the read capability and the receipts."""

    manifest: Manifest
    signed_manifest: bytes
    capability: ReadCapability
    receipts: dict[int, bytes] = field(repr=False)
    signed_headers: tuple[bytes, ...] = field(default=(), repr=False)
    """The n owner-signed shard headers, by index."""


def _ranking_peers(peers: Sequence[PeerInfo]) -> list[placement.Peer]:
    return [placement.Peer(p.node_id, p.domain, frozenset(p.tags), p.free_bytes) for p in peers]


async def put(
    client: AgentClient,
    data: bytes,
    *,
    owner: Identity,
    key_for_new_object: Callable[[], tuple[bytes, bytes]],
    peers: Sequence[PeerInfo],
    k: int,
    n: int,
    lifetime: int = DEFAULT_LIFETIME,
    label: str | None = None,
    progress: Progress | None = None,
    home: PeerInfo | None = None,
) -> PutResult:
    """Store ``data`` on ``peers``; ``key_for_new_object`` returns a fresh (nonce, key).

    ``home``: the owner's own agent, given the manifest and its signed headers for the hub
    (a failure there is logged, not raised: the object is stored all the same).
    """
    by_id = {p.node_id: p for p in peers}
    if len(by_id) < n:
        raise NotEnoughPeers(f"{n} shards need {n} peers, {len(by_id)} are verified")
    nonce, key = key_for_new_object()
    now = int(time.time())
    encoded = await asyncio.to_thread(
        objects.encode_object,
        data,
        key=key,
        nonce=nonce,
        k=k,
        n=n,
        owner=owner,
        expiry=now + lifetime,
    )
    ranked = _ranking_peers(list(by_id.values()))
    try:
        first = placement.place(encoded.object_cid, n, ranked, shard_size=encoded.piece_size)
    except placement.NotEnoughPeers as exc:
        raise NotEnoughPeers(str(exc)) from None
    holder_of = dict(enumerate(first))  # the peer each index is offered to now
    refused: set[str] = set()
    limit = asyncio.Semaphore(PARALLEL_TRANSFERS)
    problems: list[str] = []

    def replace_holder(index: int) -> str | None:
        """The next holder for ``index``, chosen as a repair would (domains, free space)."""
        refused.add(holder_of[index])
        found = placement.repair_targets(
            encoded.object_cid,
            n,
            holder_of,
            [index],
            ranked,
            placement.Policy(exclude_nodes=frozenset(refused)),
            shard_size=encoded.piece_size,
        ).get(index)
        if found is not None:
            holder_of[index] = found
        return found

    async def place_one(index: int) -> tuple[str, Receipt, bytes]:
        s = encoded.shards[index]
        transfer = ShardTransfer(s.signed_header, s.body)
        node_id: str | None = holder_of[index]
        while node_id is not None:
            try:
                async with limit:
                    receipt, signed = await client.put_shard(by_id[node_id], transfer)
            except LichenError as exc:
                problems.append(f"shard {index} on {node_id[:8]}: {exc}")
                log.warning("shard %d refused by %s: %s", index, node_id[:8], exc)
                node_id = replace_holder(index)
                continue
            if (receipt.object_cid, receipt.index, receipt.root) != (
                s.header.object_cid,
                index,
                s.header.root,
            ):
                problems.append(f"shard {index}: {node_id[:8]} signed a receipt for another")
                node_id = replace_holder(index)
                continue
            if progress is not None:
                progress(len(s.body))
            return node_id, receipt, signed
        raise NotEnoughPeers(f"no peer accepted shard {index}: " + "; ".join(problems[-5:]))

    placed = await asyncio.gather(*(place_one(i) for i in range(n)))
    holders = [PublicIdentity(by_id[node_id].public_key).kid for node_id, _, _ in placed]
    manifest = objects.make_manifest(encoded, holders, owner=owner, created=now, label=label)
    signed_manifest = manifest.sign(owner)
    await _spread_manifest(client, signed_manifest, [by_id[node_id] for node_id, _, _ in placed])
    headers = tuple(s.signed_header for s in encoded.shards)
    if home is not None:
        try:
            await client.put_owned_headers(home.host, home.port, signed_manifest, headers)
        except LichenError as exc:
            log.warning("manifest and headers not left with our agent for the hub: %s", exc)
    return PutResult(
        manifest,
        signed_manifest,
        ReadCapability(encoded.object_cid, key),
        {i: signed for i, (_, _, signed) in enumerate(placed)},
        headers,
    )


async def _spread_manifest(client: AgentClient, signed: bytes, holders: list[PeerInfo]) -> None:
    stored = 0
    for peer in holders:
        if stored >= MANIFEST_COPIES:
            break
        try:
            await client.put_manifest(peer.host, peer.port, signed)
            stored += 1
        except LichenError as exc:
            log.warning("manifest not stored on %s: %s", peer.node_id[:8], exc)
    if stored == 0:
        raise NotEnoughPeers("no agent accepted the manifest")


async def find_manifest(
    client: AgentClient, object_cid: bytes, peers: Sequence[PeerInfo]
) -> Manifest:
    """The manifest of ``object_cid`` from the first of ``peers`` (in order) that has it."""
    reasons = []
    for peer in peers:
        try:
            found = await client.get_manifest(peer.host, peer.port, object_cid)
        except LichenError as exc:
            reasons.append(f"{peer.node_id[:8]}: {exc}")
            continue
        if found is not None:
            return found
    detail = f" ({'; '.join(reasons[:5])})" if reasons else ""
    raise NotEnoughShards(f"no agent reached has the manifest of this object{detail}", found=())


ShardSource = Callable[[], Awaitable[tuple[bytes, bytes] | None]]
"""Fetches one shard (signed header, body) from one place; None when it is not held there."""


async def fetch_checked(
    manifest: Manifest,
    sources: Mapping[int, Sequence[tuple[str, ShardSource]]],
    order: Sequence[int],
    progress: Progress | None = None,
) -> tuple[dict[int, bytes], dict[int, list[str]]]:
    """Bodies of k shards of ``manifest`` checked against it (fewer if not found), and what
    went wrong, by index.

    Indices are tried in ``order``, each from its named ``sources`` in turn; each round asks
    for as many more as are still missing, so a failure costs one round, not a restart.
    """
    fetched: dict[int, bytes] = {}
    why: dict[int, list[str]] = {}
    limit = asyncio.Semaphore(PARALLEL_TRANSFERS)

    async def fetch(index: int) -> None:
        for where, source in sources[index]:
            try:
                async with limit:
                    got = await source()
            except LichenError as exc:
                why.setdefault(index, []).append(f"{where}: {exc}")
                continue
            if got is None:
                why.setdefault(index, []).append(f"{where} no longer holds it")
                continue
            try:
                # Checked here, off the event loop, so a bad shard is replaced by another fetch.
                await asyncio.to_thread(objects.check_shard, manifest, index, *got)
            except LichenError as exc:
                why.setdefault(index, []).append(f"{where} sent a bad shard: {exc}")
                continue
            fetched[index] = got[1]
            if progress is not None:
                progress(len(got[1]))
            return

    pending = list(order)
    while len(fetched) < manifest.k and pending:
        wanted = manifest.k - len(fetched)
        batch, pending = pending[:wanted], pending[wanted:]
        await asyncio.gather(*(fetch(i) for i in batch))
    return fetched, why


async def get(
    client: AgentClient,
    manifest: Manifest,
    key: bytes | Callable[[bytes], bytes],
    peers: Sequence[PeerInfo],
    *,
    progress: Progress | None = None,
) -> objects.Decoded:
    """Fetch any k good shards of ``manifest``'s object from ``peers`` and decode it."""
    by_kid = {PublicIdentity(p.public_key).kid: p for p in peers}
    sources: dict[int, list[tuple[str, ShardSource]]] = {}
    why: dict[int, list[str]] = {}
    for index, kid in enumerate(manifest.holders):
        holder = by_kid.get(kid)
        if holder is None:
            why[index] = [f"holder {format_node_id(kid)[:8]} not reachable"]
            continue

        async def from_holder(
            holder: PeerInfo = holder, index: int = index
        ) -> tuple[bytes, bytes] | None:
            got = await client.get_shard(holder, manifest.object_cid, index, manifest.piece_size)
            return None if got is None else (got.signed_header, got.body)

        sources[index] = [(holder.node_id[:8], from_holder)]
    # Data shards first: decoding them is a copy.
    fetched, failed = await fetch_checked(manifest, sources, sorted(sources), progress)
    why.update(failed)
    if len(fetched) < manifest.k:
        found = tuple(sorted(fetched))
        detail = "; ".join(f"shard {i}: {'; '.join(w)}" for i, w in sorted(why.items()))
        raise NotEnoughShards(
            f"not enough shards: {manifest.cid_text} needs {manifest.k} of {manifest.n}, "
            f"found {len(found)} {list(found)} ({detail})",
            found=found,
            needed=manifest.k,
        )
    return await asyncio.to_thread(objects.decode_checked, manifest, fetched, key)
