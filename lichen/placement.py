"""Where an object's shards go: rendezvous hashing over known peers, spread across domains.

Each shard index ``i`` of an object ranks every eligible peer ``p`` by the score
``H(object, p) XOR H(object, i)`` (64-bit BLAKE2b halves). That is rendezvous (highest random
weight) hashing with one ranking per shard index: a peer that joins can only take a shard
whose ranking it now tops, and a peer that leaves gives up only its own shards. Indices are
served in one global order of (score, index) pairs, each taking its best peer that is still
free and whose failure domain is not full, so two indices that top-rank the same peer do not
both get it.

Cost: one hash per peer per object, a sort, and per ranking step a walk down a binary trie
laid over the sorted hashes (a few ``bisect`` calls): ten thousand peers place in about 15 ms,
most of it hashing. The XOR form is what makes that walk possible: computing an independent hash per
(index, peer) would cost ``n`` times as much.

Movement is minimal except in two cases a test measures: when a domain limit binds, and when
two indices rank the same peer first (roughly ``n * n / (2 * peers)`` such collisions per
object), the index that loses the collision falls back to its next peer, so a join or leave
that changes who wins a collision can move one more shard. Exactly minimal movement for every
peer set is not possible when each peer may hold only one shard.

Failure domains: peers sharing a non-empty ``domain`` (a house, a power circuit) fail
together. Unless the policy fixes ``max_per_domain``, the limit is the smallest that still
lets all ``n`` shards be placed: one per domain while there are at least ``n`` domains,
otherwise as even as the domains' sizes allow.
"""

from __future__ import annotations

import hashlib
import heapq
from bisect import bisect_left
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from operator import itemgetter

from lichen.erasure import MAX_PIECES
from lichen.errors import LocalProtocolError
from lichen.fieldcheck import is_uint

MAX_SHARDS = MAX_PIECES
"""Most shards one object can have: as many pieces as the erasure codec can make."""

MAX_MESH_FOR_DEFAULT = 10
"""Widest default erasure code: Tahoe-LAFS's 10 shares. Wider codes make each write and each
proof round touch more small devices for little gain in durability at the same overhead."""

DEFAULT_OVERHEAD = 3
"""Default storage overhead bound ``n / k``: ``k = ceil(n / 3)`` keeps ``n / k`` in [2, 3]."""

_BITS = 64
# A domain with at least this many peers that fills up triggers a rebuild of the candidate
# list, so later rankings do not step over thousands of peers they can no longer use.
_REBUILD_MIN = 16
_PERSON_PEER = b"lichen-place-p"
_PERSON_INDEX = b"lichen-place-i"


class NotEnoughPeers(LocalProtocolError):
    """Fewer eligible peers (or domain slots) than shards were asked for.

    ``needed`` is the number of shards asked for, ``available`` the most that could be placed
    (what :func:`max_placeable` tells beforehand).
    """

    def __init__(self, message: str, *, needed: int, available: int) -> None:
        super().__init__(message)
        self.needed = needed
        self.available = available


@dataclass(frozen=True)
class Peer:
    """A peer that could hold shards, as the placer knows it."""

    node_id: str
    """The peer's node id (text form)."""

    domain: str = ""
    """Failure domain (a house, a power circuit); empty means the peer is a domain of its own."""

    tags: frozenset[str] = field(default_factory=frozenset)
    """Labels owners' policies select on, e.g. ``"ssd"`` or ``"always-on"``."""

    free_bytes: int = 0
    """Bytes the peer has said it can still accept."""

    @property
    def domain_key(self) -> str:
        """The domain this peer counts against; a peer without a domain is its own."""
        # "\0" cannot start a configured domain name, so node-id domains never collide with one.
        return self.domain if self.domain else "\0" + self.node_id


@dataclass(frozen=True)
class Policy:
    """An owner's constraints on where shards of an object may go."""

    require_tags: frozenset[str] = field(default_factory=frozenset)
    """A holder must carry every one of these tags."""

    exclude_tags: frozenset[str] = field(default_factory=frozenset)
    """A holder must carry none of these tags."""

    exclude_nodes: frozenset[str] = field(default_factory=frozenset)
    """Node ids that must not hold any shard."""

    max_per_domain: int | None = None
    """Most shards in one failure domain; None spreads them as evenly as the domains allow."""

    min_free_bytes: int = 0
    """A holder must have at least this much free space (and always room for one shard)."""

    def __post_init__(self) -> None:
        if self.max_per_domain is not None and self.max_per_domain < 1:
            raise LocalProtocolError("max_per_domain must be at least 1 (or None)")
        if self.min_free_bytes < 0:
            raise LocalProtocolError("min_free_bytes must not be negative")


DEFAULT_POLICY = Policy()


def eligible(
    peers: Iterable[Peer], policy: Policy = DEFAULT_POLICY, shard_size: int = 0
) -> list[Peer]:
    """The peers ``policy`` allows to hold a shard of ``shard_size`` bytes, sorted by node id.

    Raises :class:`LocalProtocolError` if two different peers share a node id.
    """
    return sorted(_eligible(peers, policy, shard_size), key=lambda peer: peer.node_id)


def max_placeable(
    peers: Iterable[Peer], policy: Policy = DEFAULT_POLICY, shard_size: int = 0
) -> int:
    """The most shards :func:`place` can put on ``peers`` under ``policy`` (one per peer)."""
    sizes = Counter(peer.domain_key for peer in _eligible(peers, policy, shard_size))
    if policy.max_per_domain is None:
        return sum(sizes.values())
    return sum(min(size, policy.max_per_domain) for size in sizes.values())


def place(
    object_cid: bytes,
    n: int,
    peers: Iterable[Peer],
    policy: Policy = DEFAULT_POLICY,
    shard_size: int = 0,
) -> tuple[str, ...]:
    """The holder of each shard index ``0..n-1`` of ``object_cid``, one distinct peer each.

    The result depends only on the arguments, never on the order of ``peers``. Raises
    :class:`NotEnoughPeers` when fewer than ``n`` shards can be placed.
    """
    _check_request(object_cid, n)
    keyed = _keyed(object_cid, _eligible(peers, policy, shard_size))
    sizes = Counter(domain for _, _, domain in keyed)
    cap = _domain_cap(n, sizes, {}, policy.max_per_domain)
    chosen = _assign(object_cid, range(n), keyed, sizes, set(), Counter(), cap)
    if len(chosen) < n:
        raise NotEnoughPeers(
            f"{n} shards asked for but only {len(chosen)} can be placed on "
            f"{len(keyed)} eligible peers in {len(sizes)} domains",
            needed=n,
            available=len(chosen),
        )
    return tuple(chosen[i] for i in range(n))


def repair_targets(
    object_cid: bytes,
    n: int,
    current: Mapping[int, str],
    lost: Iterable[int],
    peers: Iterable[Peer],
    policy: Policy = DEFAULT_POLICY,
    shard_size: int = 0,
) -> dict[int, str]:
    """New holders for the ``lost`` shard indices of an object whose holders are ``current``.

    New holders avoid every node in ``current`` (live holders, and the holders that lost
    their shard, which are not trusted with it again) and, as far as the domains allow, the
    domains of live holders. Indices no eligible peer can take are left out of the result
    rather than raising: a partial repair still helps.
    """
    _check_request(object_cid, n)
    lost_set = set(lost)
    for index in lost_set | set(current):
        if not isinstance(index, int) or not 0 <= index < n:
            raise LocalProtocolError(f"shard index {index!r} is outside 0..{n - 1}")
    if not lost_set:
        return {}
    peers = list(peers)
    # Domains of live holders count even when the policy would not pick those peers today.
    domain_of = {peer.node_id: peer.domain_key for peer in _eligible(peers, DEFAULT_POLICY, 0)}
    live = Counter(
        domain_of[holder]
        for index, holder in current.items()
        if index not in lost_set and holder in domain_of
    )
    used = set(current.values())
    keyed = [
        item
        for item in _keyed(object_cid, _eligible(peers, policy, shard_size))
        if item[1] not in used
    ]
    sizes = Counter(domain for _, _, domain in keyed)
    cap = _domain_cap(len(lost_set), sizes, live, policy.max_per_domain)
    return _assign(object_cid, sorted(lost_set), keyed, sizes, used, live, cap)


def ranking(
    object_cid: bytes,
    index: int,
    peers: Iterable[Peer],
    policy: Policy = DEFAULT_POLICY,
    shard_size: int = 0,
) -> tuple[str, ...]:
    """Every eligible peer, most preferred first, for shard ``index`` of ``object_cid``.

    :func:`place` gives each index the first peer of its ranking that no index served
    earlier took and whose domain is not full; this is for tests and for explaining why a
    shard sits where it does.
    """
    if not is_uint(index, MAX_SHARDS):
        raise LocalProtocolError(f"shard index must be in 0..{MAX_SHARDS - 1}, got {index!r}")
    _check_request(object_cid, 1)
    keyed = _keyed(object_cid, _eligible(peers, policy, shard_size))
    key = _index_key(object_cid, index)
    return tuple(keyed[j][1] for j in _by_xor([item[0] for item in keyed], key))


def default_k_n(reachable_peers: int) -> tuple[int, int]:
    """A default erasure code ``(k, n)`` for a mesh where ``reachable_peers`` can hold shards.

    ``n = min(reachable_peers, 10)`` spreads an object over every device of a small mesh
    (Tahoe-LAFS's 10 shares caps it) and ``k = ceil(n / 3)`` keeps the storage overhead
    ``n / k`` between 2 and 3, so an object survives the loss of ``n - k`` holders: (1, 2),
    (1, 3), (2, 4), (2, 5), (2, 6), (3, 7), (3, 8), (3, 9), then (4, 10) for any larger mesh.
    One device gets (1, 1): there is nowhere to put redundancy.

    Why: small devices on home power and SD cards fail often and together, so we pay 2-3x in
    space to survive about two thirds of the holders going dark at once. With each holder up
    90% of the time, (1, 3) reads 99.9% of the time and (4, 10) 99.999%, where 2-of-3 (1.5x)
    would manage 97%. Wider than 10 makes every write and proof round touch more devices for
    little gain; with more than 10 peers the rest are spares that repair can move shards to.
    """
    if reachable_peers < 1:
        raise LocalProtocolError("an erasure code needs at least one reachable peer")
    n = min(reachable_peers, MAX_MESH_FOR_DEFAULT)
    k = -(-n // DEFAULT_OVERHEAD)
    return k, n


def _check_request(object_cid: bytes, n: int) -> None:
    if not isinstance(object_cid, bytes) or not object_cid:
        raise LocalProtocolError("object_cid must be non-empty bytes")
    if not is_uint(n, MAX_SHARDS + 1) or n < 1:
        raise LocalProtocolError(f"n must be between 1 and {MAX_SHARDS}, got {n!r}")


def _domain_cap(
    wanted: int, sizes: Mapping[str, int], used: Mapping[str, int], fixed: int | None
) -> int:
    """Shards allowed per domain: ``fixed``, or the smallest limit that places ``wanted``.

    ``sizes`` counts free candidates per domain, ``used`` the shards a domain already holds.
    When even no limit would place ``wanted``, the limit that uses every candidate is returned.
    """
    if fixed is not None:
        return fixed
    if not used and len(sizes) >= wanted:
        return 1  # the common case, decided without scanning every domain

    def placeable(cap: int) -> int:
        return sum(min(size, max(0, cap - used.get(d, 0))) for d, size in sizes.items())

    high = max((size + used.get(d, 0) for d, size in sizes.items()), default=1)
    low = 1
    while low < high:  # smallest cap in [1, high] with placeable(cap) >= wanted
        mid = (low + high) // 2
        if placeable(mid) >= wanted:
            high = mid
        else:
            low = mid + 1
    return low


def _eligible(peers: Iterable[Peer], policy: Policy, shard_size: int) -> list[Peer]:
    if shard_size < 0:
        raise LocalProtocolError("shard_size must not be negative")
    room = max(policy.min_free_bytes, shard_size)
    seen: dict[str, Peer] = {}
    for peer in peers:
        known = seen.setdefault(peer.node_id, peer)
        if known is not peer and known != peer:
            raise LocalProtocolError(f"two different peers share node id {peer.node_id!r}")
    excluded, required, banned = policy.exclude_nodes, policy.require_tags, policy.exclude_tags
    return [
        peer
        for node_id, peer in seen.items()
        if peer.free_bytes >= room
        and node_id not in excluded
        and required <= peer.tags
        and banned.isdisjoint(peer.tags)
    ]


def _hash64(person: bytes, *parts: bytes) -> int:
    h = hashlib.blake2b(digest_size=8, person=person)
    for part in parts:
        h.update(len(part).to_bytes(4, "big"))
        h.update(part)
    return int.from_bytes(h.digest(), "big")


def _index_key(object_cid: bytes, index: int) -> int:
    return _hash64(_PERSON_INDEX, object_cid, index.to_bytes(2, "big"))


def _keyed(object_cid: bytes, peers: Iterable[Peer]) -> list[tuple[int, str, str]]:
    """(hash, node id, domain) of each peer for this object, sorted by hash then node id."""
    base = hashlib.blake2b(digest_size=8, person=_PERSON_PEER)
    base.update(len(object_cid).to_bytes(4, "big"))
    base.update(object_cid)
    copy, from_bytes = base.copy, int.from_bytes
    keyed = []
    for peer in peers:
        h = copy()
        h.update(peer.node_id.encode())
        domain = peer.domain or "\0" + peer.node_id  # same rule as Peer.domain_key
        keyed.append((from_bytes(h.digest(), "big"), peer.node_id, domain))
    keyed.sort(key=itemgetter(0))
    if len({item[0] for item in keyed}) < len(keyed):
        keyed.sort()  # a 64-bit hash collision: order the tied peers by node id, not input order
    return keyed


def _by_xor(values: Sequence[int], key: int) -> Iterator[int]:
    """Indices of the ascending ``values`` in decreasing order of ``value ^ key``.

    Walks the binary trie implicit in the sorted list: at each bit, the half whose bit differs
    from ``key``'s scores higher. Equal values come out in list order.
    """
    stack = [(0, len(values), _BITS - 1)]
    while stack:
        lo, hi, bit = stack.pop()
        while hi - lo > 1 and bit >= 0:
            # values[lo:hi] agree on every bit above `bit`; split where `bit` turns to 1.
            split = bisect_left(values, ((values[lo] >> bit) | 1) << bit, lo, hi)
            zeros, ones = (lo, split), (split, hi)
            first, second = (zeros, ones) if (key >> bit) & 1 else (ones, zeros)
            if first[0] == first[1]:
                lo, hi = second
            else:
                if second[0] < second[1]:
                    stack.append((second[0], second[1], bit - 1))
                lo, hi = first
            bit -= 1
        yield from range(lo, hi)


def _assign(
    object_cid: bytes,
    indices: Iterable[int],
    keyed: list[tuple[int, str, str]],
    sizes: Mapping[str, int],
    used: set[str],
    domain_counts: Mapping[str, int],
    cap: int,
) -> dict[int, str]:
    """Give each of ``indices`` its best free peer, best (score, index) pair first.

    ``keyed`` comes from :func:`_keyed`; ``sizes`` counts its peers per domain.
    """
    used = set(used)
    counts = Counter(domain_counts)
    keys = {i: _index_key(object_cid, i) for i in indices}
    result: dict[int, str] = {}
    while True:
        values = [item[0] for item in keyed]
        streams = {i: _by_xor(values, k) for i, k in keys.items() if i not in result}
        heap: list[tuple[int, int, int]] = []
        for i, stream in streams.items():
            j = next(stream, None)
            if j is not None:
                heap.append((-(values[j] ^ keys[i]), i, j))
        heapq.heapify(heap)
        rebuild = False
        while heap and not rebuild:
            _, i, j = heapq.heappop(heap)
            _, node_id, domain = keyed[j]
            if node_id not in used and counts[domain] < cap:
                result[i] = node_id
                used.add(node_id)
                counts[domain] += 1
                # A large domain that just filled would make every remaining ranking step over
                # its members one by one; drop them and restart the rankings instead.
                rebuild = counts[domain] >= cap and sizes[domain] >= _REBUILD_MIN
                continue
            j = next(streams[i], None)
            if j is not None:
                heapq.heappush(heap, (-(values[j] ^ keys[i]), i, j))
        if not rebuild or len(result) == len(keys):
            return result
        keyed = [item for item in keyed if item[1] not in used and counts[item[2]] < cap]
        sizes = Counter(item[2] for item in keyed)
