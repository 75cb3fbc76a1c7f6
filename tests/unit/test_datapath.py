"""The agent's data path on a mesh of fake peers: holders that refuse, and holders that lie.

The fake stands in for :class:`edge_agent.coap_client.AgentClient` (no sockets): each peer
accepts shards as a real holder decides (:func:`lichen.holder.accept_shard`) and answers
fetches from what it accepted, unless a test makes it refuse or answer with another shard.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from edge_agent import datapath
from lichen import holder, manifest, messages
from lichen.errors import NotEnoughShards, Refused
from lichen.identity import Identity

OWNER = Identity(bytes(range(32)))
KEY = bytes(range(100, 132))
GIB = 1 << 30


class FakeMesh:
    """Peers by node id, each with the shards it accepted; see the module docstring."""

    def __init__(self, count: int, domains: list[str] | None = None) -> None:
        self.identities = [Identity(bytes([i + 1]) * 32) for i in range(count)]
        names = domains or [""] * count
        self.peers = [
            messages.PeerInfo(i.public.public_key, "127.0.0.1", 5683 + n, names[n], (), GIB)
            for n, i in enumerate(self.identities)
        ]
        self.by_id = {i.node_id: i for i in self.identities}
        self.held: dict[tuple[str, int], messages.ShardTransfer] = {}
        self.refusing: set[str] = set()
        self.answers_with: dict[str, int] = {}  # node id -> the index it sends, whatever asked
        self.offers: list[str] = []

    async def put_shard(
        self, peer: messages.PeerInfo, transfer: messages.ShardTransfer
    ) -> tuple[manifest.Receipt, bytes]:
        self.offers.append(peer.node_id)
        if peer.node_id in self.refusing:
            raise Refused("no room today")
        decision = holder.accept_shard(
            transfer,
            holder=self.by_id[peer.node_id],
            now=int(time.time()),
            free_bytes=GIB,
            held_root=lambda _cid, _index: None,
        )
        self.held[peer.node_id, decision.shard.header.index] = transfer
        return decision.receipt, decision.signed_receipt

    async def put_manifest(self, host: str, port: int, signed: bytes) -> None:
        pass

    async def get_shard(
        self, peer: messages.PeerInfo, object_cid: bytes, index: int, max_body: int
    ) -> messages.ShardTransfer | None:
        index = self.answers_with.get(peer.node_id, index)
        return next((t for (n, i), t in self.held.items() if i == index), None)


def put(mesh: FakeMesh, data: bytes, k: int, n: int, nonce: bytes = bytes(24)) -> Any:
    client: Any = mesh
    return asyncio.run(
        datapath.put(
            client,
            data,
            owner=OWNER,
            key_for_new_object=lambda: (nonce, KEY),
            peers=mesh.peers,
            k=k,
            n=n,
        )
    )


def get(mesh: FakeMesh, result: datapath.PutResult) -> bytes:
    client: Any = mesh
    decoded = asyncio.run(datapath.get(client, result.manifest, KEY, mesh.peers))
    return decoded.plaintext


def holder_of(mesh: FakeMesh, result: datapath.PutResult, index: int) -> str:
    return next(i.node_id for i in mesh.identities if i.kid == result.manifest.holders[index])


def test_a_holder_that_sends_another_valid_shard_is_passed_over() -> None:
    mesh = FakeMesh(4)
    data = b"kitchen readings " * 500
    result = put(mesh, data, 2, 4)
    # The holder of shard 0 answers with shard 3: signed by the owner, of this object, but
    # not the shard asked for. It is set aside and another shard fetched in its place.
    mesh.answers_with[holder_of(mesh, result, 0)] = 3
    assert get(mesh, result) == data

    for index in range(1, 4):
        mesh.answers_with[holder_of(mesh, result, index)] = 0
    with pytest.raises(NotEnoughShards, match="offered as shard 1 but is shard 0"):
        get(mesh, result)


def test_a_refused_shard_goes_where_a_repair_would_put_it() -> None:
    # Three failure domains for two shards: a refused shard never joins the other's domain
    # while a third domain has room.
    mesh = FakeMesh(4, ["x", "x", "y", "z"])
    domain = {p.node_id: p.domain for p in mesh.peers}
    data = b"garden readings " * 300
    for seed in range(6):
        nonce = seed.to_bytes(24, "big")
        first = put(mesh, data, 1, 2, nonce)
        refuser = holder_of(mesh, first, 1)
        mesh.refusing = {refuser}
        mesh.offers.clear()
        second = put(mesh, data, 1, 2, nonce)
        new, kept = holder_of(mesh, second, 1), holder_of(mesh, second, 0)
        assert mesh.offers.count(refuser) == 1 and new != refuser
        assert domain[new] != domain[kept], (seed, domain[new])
        mesh.refusing = set()


def test_a_peer_without_room_is_never_offered_a_refused_shard() -> None:
    mesh = FakeMesh(3)
    small = mesh.peers[2]
    mesh.peers[2] = messages.PeerInfo(small.public_key, small.host, small.port, free_bytes=10)
    mesh.refusing = {mesh.peers[0].node_id}
    with pytest.raises(datapath.NotEnoughPeers, match="no peer accepted shard"):
        put(mesh, b"x" * 5000, 1, 2)
    assert small.node_id not in mesh.offers
    assert mesh.offers.count(mesh.peers[0].node_id) == 1
