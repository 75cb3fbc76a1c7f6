"""Agent-to-agent and client-to-agent messages, each a versioned CBOR map (see :mod:`wire`).

Signed objects (shard headers, manifests, receipts, segments, proofs) have codecs of their
own; these are the envelopes that carry them between agents, and the few plain requests and
answers around them::

    shard-transfer = {          ; PUT /shards (request), GET /shards/<cid>/<i> (response)
      0 => 1, 1 => 9,           ; envelope: v, kind SHARD
      2 => bstr,                ; the owner-signed shard header (COSE_Sign1)
      3 => bstr,                ; the shard body
    }

    hello-request = {           ; POST /hello: "prove you hold the key you advertise"
      0 => 1, 1 => 10,          ; envelope: v, kind HELLO_REQUEST
      2 => bstr,                ; nonce, 16 to 64 bytes, fresh per request
      3 => bstr .size 20,       ; the asker's node id, which the answer must name
    }

    peer-list = {               ; GET /peers: the peers an agent has verified
      0 => 1, 1 => 11,          ; envelope: v, kind PEERS
      2 => [* peer],            ; at most MAX_PEERS
    }
    peer = [
      bstr .size 32,            ; Ed25519 public key (the node id derives from it)
      tstr,                     ; host: an IP address
      uint,                     ; CoAP port (UDP and TCP)
      tstr,                     ; failure domain, "" for its own
      [* tstr],                 ; tags
      uint,                     ; free bytes offered
    ]

    agent-status = {            ; GET /status
      0 => 1, 1 => 12,          ; envelope: v, kind STATUS
      2 => bstr .size 32,       ; the agent's public key
      3 => uint,                ; capacity, bytes
      4 => uint,                ; used, bytes
      5 => uint,                ; shards held
      6 => uint,                ; verified peers
      7 => tstr,                ; software version
      8 => tstr,                ; failure domain, "" for its own
      9 => [* tstr],            ; tags
    }

    stream-index = {            ; GET /streams/<name>: one page of a stream's chain
      0 => 1, 1 => 13,          ; envelope: v, kind STREAM_INDEX
      2 => tstr,                ; stream name
      3 => uint,                ; sequence number of the first record in this page
      4 => bstr .size 32,       ; link the first record must carry (genesis at 0)
      5 => [* bstr],            ; signed segment records (COSE_Sign1), at most MAX_INDEX_PAGE
      6 => bool,                ; more records follow this page
      7 => bstr,                ; readings acknowledged but not yet sealed (SenML+CBOR pack)
      8 => bstr .size 32,       ; the writer's public key (the agent that owns the stream)
    }
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from functools import partial

from lichen import cbor, wire
from lichen.errors import LocalProtocolError, MalformedMessage
from lichen.fieldcheck import local_check, remote_build
from lichen.identity import NODE_ID_SIZE, NONCE_MAX, NONCE_MIN, PUBLIC_KEY_SIZE, PublicIdentity

MAX_INDEX_PAGE = 256  # segment records per page; about 60 KiB
MAX_PENDING_PACK = 1024 * 1024  # readings not yet sealed: bounded by the segment size
MAX_PEERS = 1024  # one agent's view of a LAN mesh; discovery bounds its table the same way
MAX_TAGS = 16
MAX_TAG = 32
MAX_DOMAIN = 64
SMALL_LIMITS = cbor.Limits(max_size=4096, max_depth=4, max_items=64)
PEERS_LIMITS = cbor.Limits(
    max_size=MAX_PEERS * 512, max_depth=5, max_items=16 + MAX_PEERS * (8 + MAX_TAGS)
)


def transfer_limits(max_body: int) -> cbor.Limits:
    """Bounds for a shard transfer whose body may be up to ``max_body`` bytes."""
    return cbor.Limits(max_size=max_body + 2048, max_depth=4, max_items=16)


@dataclass(frozen=True)
class ShardTransfer:
    """A shard on the wire: the owner-signed header and the body (checked by the receiver)."""

    signed_header: bytes
    body: bytes

    def encode(self) -> bytes:
        """The transfer as CBOR (kind SHARD)."""
        return wire.encode(wire.Kind.SHARD, {2: self.signed_header, 3: self.body})

    @classmethod
    def decode(cls, data: bytes, max_body: int) -> ShardTransfer:
        """Parse a transfer whose body is at most ``max_body`` bytes; MalformedMessage."""
        fields = wire.decode(data, wire.Kind.SHARD, transfer_limits(max_body))
        transfer = cls(fields.bstr(2, max_size=2048), fields.bstr(3, max_size=max_body))
        fields.finish()
        return transfer


@dataclass(frozen=True)
class HelloRequest:
    """A request that a peer prove its key by signing ``nonce`` for ``asker``."""

    nonce: bytes
    asker: bytes

    def __post_init__(self) -> None:
        if not NONCE_MIN <= len(self.nonce) <= NONCE_MAX or len(self.asker) != NODE_ID_SIZE:
            raise LocalProtocolError("hello request: bad nonce or node id size")

    def encode(self) -> bytes:
        """The request as CBOR (kind HELLO_REQUEST)."""
        return wire.encode(wire.Kind.HELLO_REQUEST, {2: self.nonce, 3: self.asker})

    @classmethod
    def decode(cls, data: bytes) -> HelloRequest:
        """Parse an untrusted hello request; MalformedMessage."""
        fields = wire.decode(data, wire.Kind.HELLO_REQUEST, SMALL_LIMITS)
        nonce = fields.bstr(2, max_size=NONCE_MAX)
        asker = fields.bstr(3, size=NODE_ID_SIZE)
        fields.finish()
        if len(nonce) < NONCE_MIN:
            raise MalformedMessage(f"hello request: nonce shorter than {NONCE_MIN} bytes")
        return cls(nonce, asker)


@dataclass(frozen=True)
class PeerInfo:
    """A verified peer as one agent sees it."""

    public_key: bytes
    host: str
    port: int
    domain: str = ""
    tags: tuple[str, ...] = ()
    free_bytes: int = 0

    def __post_init__(self) -> None:
        local_check(lambda: _check_peer(self))

    @property
    def node_id(self) -> str:
        """The peer's node id, derived from its key."""
        return PublicIdentity(self.public_key).node_id

    def to_list(self) -> list[object]:
        """The peer as a CBOR array."""
        return [
            self.public_key,
            self.host,
            self.port,
            self.domain,
            list(self.tags),
            self.free_bytes,
        ]


def _check_peer(p: PeerInfo) -> None:
    if len(p.public_key) != PUBLIC_KEY_SIZE:
        raise MalformedMessage("peer: public key is 32 bytes")
    try:
        ipaddress.ip_address(p.host)
    except ValueError:
        raise MalformedMessage(f"peer: host {p.host[:64]!r} is not an IP address") from None
    if not 0 < p.port < 65536:
        raise MalformedMessage(f"peer: port {p.port} out of range")
    if len(p.domain) > MAX_DOMAIN or len(p.tags) > MAX_TAGS:
        raise MalformedMessage("peer: domain or tags too long")
    if any(not isinstance(t, str) or not 0 < len(t) <= MAX_TAG for t in p.tags):
        raise MalformedMessage("peer: tags are 1 to 32 characters")
    if p.free_bytes < 0:
        raise MalformedMessage("peer: free bytes is negative")


def encode_peers(peers: list[PeerInfo]) -> bytes:
    """A peer list as CBOR (kind PEERS)."""
    if len(peers) > MAX_PEERS:
        raise LocalProtocolError(f"at most {MAX_PEERS} peers in a list")
    return wire.encode(wire.Kind.PEERS, {2: [p.to_list() for p in peers]})


def decode_peers(data: bytes) -> list[PeerInfo]:
    """Parse an untrusted peer list; MalformedMessage."""
    fields = wire.decode(data, wire.Kind.PEERS, PEERS_LIMITS)
    raw = fields.array(2, max_len=MAX_PEERS)
    fields.finish()
    peers = []
    for entry in raw:
        if not isinstance(entry, list) or len(entry) != 6:
            raise MalformedMessage("peer list: each peer is an array of 6")
        key, host, port, domain, tags, free = entry
        if not (
            isinstance(key, bytes)
            and isinstance(host, str)
            and isinstance(port, int)
            and isinstance(domain, str)
            and isinstance(tags, list)
            and isinstance(free, int)
        ):
            raise MalformedMessage("peer list: a field has the wrong type")
        peers.append(remote_build(partial(PeerInfo, key, host, port, domain, tuple(tags), free)))
    return peers


@dataclass(frozen=True)
class AgentStatus:
    """What an agent says about itself."""

    public_key: bytes
    capacity: int
    used: int
    shards: int
    peers: int
    version: str
    domain: str = ""
    tags: tuple[str, ...] = ()

    @property
    def free_bytes(self) -> int:
        """Bytes still offered."""
        return max(0, self.capacity - self.used)

    def encode(self) -> bytes:
        """The status as CBOR (kind STATUS)."""
        return wire.encode(
            wire.Kind.STATUS,
            {
                2: self.public_key,
                3: self.capacity,
                4: self.used,
                5: self.shards,
                6: self.peers,
                7: self.version,
                8: self.domain,
                9: list(self.tags),
            },
        )

    @classmethod
    def decode(cls, data: bytes) -> AgentStatus:
        """Parse an untrusted status; MalformedMessage."""
        fields = wire.decode(data, wire.Kind.STATUS, SMALL_LIMITS)
        tags = fields.array(9, max_len=MAX_TAGS)
        if not all(isinstance(t, str) and 0 < len(t) <= MAX_TAG for t in tags):
            raise MalformedMessage("status: tags are 1 to 32 characters")
        status = cls(
            fields.bstr(2, size=PUBLIC_KEY_SIZE),
            fields.uint(3),
            fields.uint(4),
            fields.uint(5),
            fields.uint(6),
            fields.tstr(7, max_size=64),
            fields.tstr(8, max_size=MAX_DOMAIN),
            tuple(tags),
        )
        fields.finish()
        return status


@dataclass(frozen=True)
class StreamIndexPage:
    """A page of a stream's chain of segment records, plus the readings not yet sealed."""

    stream: str
    first_seq: int
    prev: bytes
    records: tuple[bytes, ...]
    more: bool
    pending: bytes
    writer: bytes

    def encode(self) -> bytes:
        """The page as CBOR (kind STREAM_INDEX)."""
        if len(self.records) > MAX_INDEX_PAGE:
            raise LocalProtocolError(f"at most {MAX_INDEX_PAGE} records in a page")
        return wire.encode(
            wire.Kind.STREAM_INDEX,
            {
                2: self.stream,
                3: self.first_seq,
                4: self.prev,
                5: list(self.records),
                6: self.more,
                7: self.pending,
                8: self.writer,
            },
        )

    @classmethod
    def decode(cls, data: bytes) -> StreamIndexPage:
        """Parse an untrusted page; MalformedMessage."""
        limits = cbor.Limits(
            max_size=MAX_INDEX_PAGE * 1024 + MAX_PENDING_PACK + 1024,
            max_depth=4,
            max_items=MAX_INDEX_PAGE + 32,
        )
        fields = wire.decode(data, wire.Kind.STREAM_INDEX, limits)
        records = fields.array(5, max_len=MAX_INDEX_PAGE)
        if not all(isinstance(r, bytes) and len(r) <= 1024 for r in records):
            raise MalformedMessage("stream index: records are byte strings of at most 1 KiB")
        more = fields.optional(6)
        if not isinstance(more, bool):
            raise MalformedMessage("stream index: 'more' must be true or false")
        page = cls(
            fields.tstr(2, max_size=64),
            fields.uint(3),
            fields.bstr(4, size=32),
            tuple(records),
            more,
            fields.bstr(7, max_size=MAX_PENDING_PACK),
            fields.bstr(8, size=PUBLIC_KEY_SIZE),
        )
        fields.finish()
        return page
