"""Shard placement: rendezvous hashing, failure domains, policies, stability under churn."""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lichen import cid
from lichen.errors import LocalProtocolError
from lichen.placement import (
    MAX_SHARDS,
    NotEnoughPeers,
    Peer,
    Policy,
    default_k_n,
    eligible,
    max_placeable,
    place,
    ranking,
    repair_targets,
)

OBJECT = cid.of(b"lichen placement test object")
GIB = 2**30


def mesh(count: int, prefix: str = "node", domains: int = 0, free: int = GIB) -> list[Peer]:
    """``count`` peers; with ``domains``, peer i sits in domain ``d{i % domains}``."""
    return [
        Peer(f"{prefix}{i:04d}", domain=f"d{i % domains}" if domains else "", free_bytes=free)
        for i in range(count)
    ]


def collision_losers(object_cid: bytes, holders: tuple[str, ...], peers: list[Peer]) -> set[int]:
    """Indices whose holder is not the first peer of their own ranking."""
    return {i for i, holder in enumerate(holders) if ranking(object_cid, i, peers)[0] != holder}


# -- basics -----------------------------------------------------------------------------------


def test_golden_placement() -> None:
    # Agents and the hub must compute the same placement: a change to the hashing fails here.
    assert place(OBJECT, 5, mesh(12)) == (
        "node0011",
        "node0010",
        "node0000",
        "node0007",
        "node0001",
    )


def test_distinct_holders_from_the_given_peers() -> None:
    peers = mesh(30)
    holders = place(OBJECT, 10, peers)
    assert len(holders) == 10
    assert len(set(holders)) == 10
    assert set(holders) <= {p.node_id for p in peers}


@settings(max_examples=50, deadline=None)
@given(st.randoms(use_true_random=False), st.integers(1, 12))
def test_result_does_not_depend_on_peer_order(rnd: random.Random, n: int) -> None:
    peers = mesh(20, domains=7)
    shuffled = list(peers)
    rnd.shuffle(shuffled)
    assert place(OBJECT, n, shuffled) == place(OBJECT, n, peers)
    # Listing a peer twice is harmless.
    assert place(OBJECT, n, shuffled + peers[:3]) == place(OBJECT, n, peers)


def test_different_objects_get_different_holders() -> None:
    peers = mesh(50)
    placements = {place(cid.of(bytes([i])), 5, peers) for i in range(20)}
    assert len(placements) == 20


def test_load_is_spread_evenly_over_objects() -> None:
    peers = mesh(20)
    load = Counter(h for i in range(400) for h in place(cid.of(i.to_bytes(2, "big")), 5, peers))
    # 2000 shards over 20 peers: 100 each on average; binomial sd is about 9.7.
    assert len(load) == 20
    assert min(load.values()) > 60 and max(load.values()) < 140


def test_shard_index_rankings_agree_with_place() -> None:
    peers = mesh(200)
    holders = place(OBJECT, 8, peers)
    for i, holder in enumerate(holders):
        order = ranking(OBJECT, i, peers)
        assert sorted(order) == sorted(p.node_id for p in peers)
        if i not in collision_losers(OBJECT, holders, peers):
            assert order[0] == holder


def test_ten_thousand_peers() -> None:
    peers = mesh(10_000, domains=2500)
    holders = place(OBJECT, 10, peers, shard_size=1024)
    assert len(set(holders)) == 10
    domain_of = {p.node_id: p.domain for p in peers}
    assert len({domain_of[h] for h in holders}) == 10


def test_one_huge_domain_among_small_ones() -> None:
    # The rebuild path: the big domain fills after one shard and is dropped from the rankings.
    peers = [Peer(f"big{i:05d}", domain="big", free_bytes=GIB) for i in range(5000)]
    peers += [Peer(f"solo{i}", free_bytes=GIB) for i in range(9)]
    holders = place(OBJECT, 10, peers)
    assert sum(h.startswith("big") for h in holders) == 1
    assert sum(h.startswith("solo") for h in holders) == 9
    assert place(OBJECT, 10, list(reversed(peers))) == holders


# -- errors -----------------------------------------------------------------------------------


def test_not_enough_peers_raises_with_the_numbers() -> None:
    with pytest.raises(NotEnoughPeers) as info:
        place(OBJECT, 6, mesh(4))
    assert info.value.needed == 6
    assert info.value.available == 4
    assert isinstance(info.value, LocalProtocolError)
    assert max_placeable(mesh(4)) == 4


def test_no_peers_at_all() -> None:
    with pytest.raises(NotEnoughPeers):
        place(OBJECT, 1, [])
    assert repair_targets(OBJECT, 3, {0: "a", 1: "b"}, [2], []) == {}


@pytest.mark.parametrize("n", [0, -1, MAX_SHARDS + 1, True, 2.0])
def test_bad_n_is_refused(n: object) -> None:
    with pytest.raises(LocalProtocolError):
        place(OBJECT, n, mesh(5))  # type: ignore[arg-type]


@pytest.mark.parametrize("object_cid", [b"", "bafk", None])
def test_bad_object_cid_is_refused(object_cid: object) -> None:
    with pytest.raises(LocalProtocolError):
        place(object_cid, 1, mesh(5))  # type: ignore[arg-type]


def test_conflicting_peers_with_one_node_id_are_refused() -> None:
    with pytest.raises(LocalProtocolError, match="share node id"):
        place(OBJECT, 1, [Peer("a", domain="x"), Peer("a", domain="y")])


def test_bad_policy_and_sizes_are_refused() -> None:
    with pytest.raises(LocalProtocolError):
        Policy(max_per_domain=0)
    with pytest.raises(LocalProtocolError):
        Policy(min_free_bytes=-1)
    with pytest.raises(LocalProtocolError):
        place(OBJECT, 1, mesh(3), shard_size=-1)
    with pytest.raises(LocalProtocolError):
        ranking(OBJECT, -1, mesh(3))
    with pytest.raises(LocalProtocolError):
        ranking(OBJECT, MAX_SHARDS, mesh(3))


# -- policies ---------------------------------------------------------------------------------


def test_policy_filters_tags_nodes_and_space() -> None:
    peers = [
        Peer("ssd-big", tags=frozenset({"ssd", "always-on"}), free_bytes=10 * GIB),
        Peer("ssd-small", tags=frozenset({"ssd", "always-on"}), free_bytes=GIB),
        Peer("ssd-flaky", tags=frozenset({"ssd", "battery"}), free_bytes=10 * GIB),
        Peer("sd-card", tags=frozenset({"always-on"}), free_bytes=10 * GIB),
        Peer("banned", tags=frozenset({"ssd", "always-on"}), free_bytes=10 * GIB),
    ]
    policy = Policy(
        require_tags=frozenset({"ssd"}),
        exclude_tags=frozenset({"battery"}),
        exclude_nodes=frozenset({"banned"}),
        min_free_bytes=2 * GIB,
    )
    assert [p.node_id for p in eligible(peers, policy)] == ["ssd-big"]
    assert place(OBJECT, 1, peers, policy) == ("ssd-big",)
    with pytest.raises(NotEnoughPeers):
        place(OBJECT, 2, peers, policy)
    # The shard itself must fit, whatever the policy says.
    assert {p.node_id for p in eligible(peers, Policy(), shard_size=2 * GIB)} == {
        "ssd-big",
        "ssd-flaky",
        "sd-card",
        "banned",
    }
    assert max_placeable(peers, Policy(), shard_size=20 * GIB) == 0


def test_an_excluded_node_never_holds_anything() -> None:
    peers = mesh(12)
    for i in range(30):
        holders = place(
            cid.of(bytes([i])), 10, peers, Policy(exclude_nodes=frozenset({"node0003"}))
        )
        assert "node0003" not in holders


# -- failure domains --------------------------------------------------------------------------


def domains_of(holders: tuple[str, ...], peers: list[Peer]) -> Counter[str]:
    domain_of = {p.node_id: p.domain_key for p in peers}
    return Counter(domain_of[h] for h in holders)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(1, 6), min_size=1, max_size=10),
    st.integers(1, 20),
    st.binary(min_size=1, max_size=8),
)
def test_domains_are_used_as_evenly_as_they_allow(
    sizes: list[int], n: int, object_cid: bytes
) -> None:
    peers = [
        Peer(f"d{d}-p{i}", domain=f"d{d}", free_bytes=GIB)
        for d, size in enumerate(sizes)
        for i in range(size)
    ]
    if n > len(peers):
        with pytest.raises(NotEnoughPeers):
            place(object_cid, n, peers)
        return
    counts = domains_of(place(object_cid, n, peers), peers)
    # The smallest per-domain limit under which n shards fit at all.
    best = min(c for c in range(1, n + 1) if sum(min(s, c) for s in sizes) >= n)
    assert max(counts.values()) == best
    if len(sizes) >= n:
        assert best == 1  # no two shards share a domain while there are n domains


def test_one_shard_per_domain_when_there_are_enough_domains() -> None:
    peers = mesh(40, domains=10)
    for i in range(20):
        counts = domains_of(place(cid.of(bytes([i])), 10, peers), peers)
        assert set(counts.values()) == {1}


def test_fewer_domains_than_shards_spread_evenly() -> None:
    peers = mesh(30, domains=3)
    counts = domains_of(place(OBJECT, 7, peers), peers)
    assert sorted(counts.values()) == [2, 2, 3]


def test_peers_without_a_domain_are_each_their_own() -> None:
    peers = [*mesh(3, prefix="solo"), *mesh(3, prefix="house", domains=1)]
    counts = domains_of(place(OBJECT, 4, peers), peers)
    assert counts["d0"] == 1
    assert len(counts) == 4


def test_fixed_max_per_domain() -> None:
    peers = mesh(12, domains=3)
    holders = place(OBJECT, 6, peers, Policy(max_per_domain=2))
    assert set(domains_of(holders, peers).values()) == {2}
    assert max_placeable(peers, Policy(max_per_domain=2)) == 6
    with pytest.raises(NotEnoughPeers) as info:
        place(OBJECT, 7, peers, Policy(max_per_domain=2))
    assert info.value.available == 6


# -- stability under churn --------------------------------------------------------------------


churn = settings(max_examples=120, deadline=None)


@churn
@given(st.integers(1, 40), st.integers(0, 60), st.binary(min_size=1, max_size=8))
def test_a_joining_peer_only_takes_shards(n: int, extra: int, object_cid: bytes) -> None:
    peers = mesh(n + extra)
    newcomer = Peer("newcomer", free_bytes=GIB)
    before = place(object_cid, n, peers)
    after = place(object_cid, n, [*peers, newcomer])
    changed = {i for i in range(n) if before[i] != after[i]}
    elsewhere = {i for i in changed if after[i] != newcomer.node_id}
    # The newcomer holds at most one shard. Any other move is an index that lost a collision
    # (its first-ranked peer went to another index) before or after the join.
    assert len(changed - elsewhere) <= 1
    losers = collision_losers(object_cid, before, peers) | collision_losers(
        object_cid, after, [*peers, newcomer]
    )
    assert elsewhere <= losers


@churn
@given(st.integers(1, 40), st.integers(1, 60), st.binary(min_size=1, max_size=8), st.data())
def test_a_leaving_peer_only_gives_up_its_shards(
    n: int, extra: int, object_cid: bytes, data: st.DataObject
) -> None:
    peers = mesh(n + extra)
    before = place(object_cid, n, peers)
    leaver = data.draw(st.sampled_from(peers))
    rest = [p for p in peers if p != leaver]
    after = place(object_cid, n, rest)
    changed = {i for i in range(n) if before[i] != after[i]}
    own = {i for i, h in enumerate(before) if h == leaver.node_id}
    assert own <= changed
    assert changed - own <= collision_losers(object_cid, before, peers) | collision_losers(
        object_cid, after, rest
    )


def test_churn_moves_little_in_practice() -> None:
    # Seeded measurement over many objects: with peers well above n, moves other than the
    # newcomer's own shard are rare, and the average movement is close to the ideal n / peers.
    rnd = random.Random(7)
    peers = mesh(200)
    newcomer = Peer("newcomer", free_bytes=GIB)
    moves = stray = 0
    trials = 300
    for _ in range(trials):
        object_cid = rnd.randbytes(36)
        before = place(object_cid, 10, peers)
        after = place(object_cid, 10, [*peers, newcomer])
        changed = [i for i in range(10) if before[i] != after[i]]
        moves += len(changed)
        stray += sum(after[i] != "newcomer" for i in changed)
    assert stray <= trials * 0.02
    assert abs(moves / trials - 10 / 201) < 0.03


def test_leave_then_rejoin_restores_the_placement() -> None:
    peers = mesh(25)
    before = place(OBJECT, 10, peers)
    gone = [p for p in peers if p.node_id != before[4]]
    assert place(OBJECT, 10, gone)[4] != before[4]
    assert place(OBJECT, 10, [*gone, peers[int(before[4][4:])]]) == before


# -- repair -----------------------------------------------------------------------------------


def test_repair_replaces_only_the_lost_shards_on_new_nodes() -> None:
    peers = mesh(30)
    holders = place(OBJECT, 10, peers)
    current = dict(enumerate(holders))
    targets = repair_targets(OBJECT, 10, current, [2, 7], peers)
    assert set(targets) == {2, 7}
    assert not set(targets.values()) & set(holders)
    assert len(set(targets.values())) == 2


def test_repair_avoids_domains_of_live_shards_when_it_can() -> None:
    peers = mesh(24, domains=6)
    holders = place(OBJECT, 4, peers)
    live_domains = set(domains_of(holders, peers)) - set(domains_of(holders[:1], peers))
    targets = repair_targets(OBJECT, 4, dict(enumerate(holders)), [0], peers)
    new_domain = {p.node_id: p.domain_key for p in peers}[targets[0]]
    assert new_domain not in live_domains


def test_repair_reuses_a_domain_when_there_is_no_other() -> None:
    peers = mesh(6, domains=2)
    holders = place(OBJECT, 4, peers)
    targets = repair_targets(OBJECT, 4, dict(enumerate(holders)), [1], peers)
    assert targets[1] not in holders
    assert max(domains_of((*holders[:1], *holders[2:], targets[1]), peers).values()) == 2


def test_repair_is_partial_when_peers_run_out() -> None:
    peers = mesh(5)
    holders = place(OBJECT, 4, peers)
    targets = repair_targets(OBJECT, 4, dict(enumerate(holders)), [0, 1, 2], peers)
    assert len(targets) == 1
    assert set(targets.values()) == {p.node_id for p in peers} - set(holders)


def test_repair_respects_the_policy() -> None:
    peers = [*mesh(6), Peer("vip", tags=frozenset({"ssd"}), free_bytes=GIB)]
    current = dict(enumerate(place(OBJECT, 3, peers[:6])))
    targets = repair_targets(
        OBJECT, 3, current, [0], peers, Policy(require_tags=frozenset({"ssd"}))
    )
    assert targets == {0: "vip"}
    assert repair_targets(OBJECT, 3, current, [0], peers, shard_size=2 * GIB) == {}


def test_repair_with_nothing_lost_and_bad_indices() -> None:
    current = {0: "node0000", 1: "node0001"}
    assert repair_targets(OBJECT, 2, current, [], mesh(5)) == {}
    with pytest.raises(LocalProtocolError):
        repair_targets(OBJECT, 2, current, [2], mesh(5))
    with pytest.raises(LocalProtocolError):
        repair_targets(OBJECT, 2, {5: "node0000"}, [0], mesh(5))


# -- default erasure width --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("peers", "expected"),
    [
        (1, (1, 1)),
        (2, (1, 2)),
        (3, (1, 3)),
        (4, (2, 4)),
        (5, (2, 5)),
        (6, (2, 6)),
        (7, (3, 7)),
        (9, (3, 9)),
        (10, (4, 10)),
        (11, (4, 10)),
        (10_000, (4, 10)),
    ],
)
def test_default_k_n_table(peers: int, expected: tuple[int, int]) -> None:
    assert default_k_n(peers) == expected


@given(st.integers(2, 100_000))
def test_default_k_n_overhead_stays_between_two_and_three(peers: int) -> None:
    k, n = default_k_n(peers)
    assert 1 <= k < n <= min(peers, 10)
    assert 2 <= n / k <= 3


def test_default_k_n_needs_a_peer() -> None:
    with pytest.raises(LocalProtocolError):
        default_k_n(0)
