"""The agent's table of peers whose keys it has verified with the signed-nonce handshake.

Discovery (mDNS, static peers) only suggests addresses; a peer enters this table once it has
answered a hello with a signature by the key it advertised. The table is bounded: when full,
a new peer replaces the one not heard from for longest, if that one has failed recently.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from lichen.messages import PeerInfo

FORGET_AFTER_FAILURES = 3  # consecutive failed contacts before a peer is dropped


@dataclass(frozen=True)
class PeerRecord:
    """A verified peer and what we know of its health."""

    info: PeerInfo
    last_seen: float
    failures: int = 0


class PeerTable:
    """Verified peers by node id, at most ``max_peers`` of them."""

    def __init__(self, max_peers: int) -> None:
        self.max_peers = max_peers
        self._peers: dict[str, PeerRecord] = {}

    def __len__(self) -> int:
        return len(self._peers)

    def __contains__(self, node_id: object) -> bool:
        return node_id in self._peers

    def add(self, info: PeerInfo, now: float) -> bool:
        """Record a peer that just proved its key; False if the table is full of live peers."""
        node_id = info.node_id
        if node_id not in self._peers and len(self._peers) >= self.max_peers:
            stale = max(self._peers.values(), key=lambda r: (r.failures, -r.last_seen))
            if stale.failures == 0:
                return False
            del self._peers[stale.info.node_id]
        self._peers[node_id] = PeerRecord(info, now)
        return True

    def seen(self, node_id: str, now: float) -> None:
        """A successful exchange with ``node_id``."""
        record = self._peers.get(node_id)
        if record is not None:
            self._peers[node_id] = replace(record, last_seen=now, failures=0)

    def failed(self, node_id: str) -> None:
        """A failed exchange; the peer is forgotten after a few in a row."""
        record = self._peers.get(node_id)
        if record is None:
            return
        if record.failures + 1 >= FORGET_AFTER_FAILURES:
            del self._peers[node_id]
        else:
            self._peers[node_id] = replace(record, failures=record.failures + 1)

    def remove(self, node_id: str) -> None:
        """Forget ``node_id``."""
        self._peers.pop(node_id, None)

    def infos(self) -> list[PeerInfo]:
        """Every verified peer, healthiest first."""
        records = sorted(self._peers.values(), key=lambda r: (r.failures, r.info.node_id))
        return [r.info for r in records]
