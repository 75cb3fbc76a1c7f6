"""The hub <-> agent control-plane messages: their CBOR maps, checks and enrollment MACs.

Each message is a versioned CBOR map (:mod:`lichen.wire`) that its sender signs as a
COSE_Sign1; :mod:`lichen.hubwire` names the topics and opens what arrives on them (checking the
signer first, then calling the ``from_payload`` decoders here). The join token never crosses
the wire: a join carries HMAC-SHA256(token, "lichen-join" || agent public key) and the answer
HMAC-SHA256(token, "lichen-joined" || hub public key || agent node id), so each side learns the
other knows the token and the agent pins only a hub that does. The token's UTF-8 bytes are the
HMAC key. Formats (CDDL)::

    join = {
      0 => 1, 1 => 15,             ; envelope: v, kind JOIN
      2 => bstr .size 32,          ; the agent's Ed25519 public key (the signer)
      3 => tstr,                   ; a name for people, at most 64 characters
      4 => uint,                   ; capacity offered, bytes
      5 => bstr .size 32,          ; HMAC-SHA256(token, "lichen-join" || public key)
      6 => uint,                   ; time, unix seconds
    }

    joined = {
      0 => 1, 1 => 16,             ; envelope: v, kind JOINED
      2 => bstr .size 20,          ; the agent's node id (the addressee)
      3 => bool,                   ; accepted
      4 => bstr .size 32,          ; the hub's Ed25519 public key (the signer)
      5 => tstr,                   ; why not, "" when accepted; at most 256 characters
      6 => uint,                   ; time, unix seconds
      7 => bstr .size 32,          ; HMAC-SHA256(token, "lichen-joined" || hub key || node id)
    }

    presence = {                   ; on the status topic, retained
      0 => 1, 1 => 17,             ; envelope: v, kind PRESENCE
      2 => bool,                   ; online; false in the last will, which has no 5..10
      3 => uint,                   ; time signed, unix seconds (the will: at connect)
      4 => bstr .size 8,           ; session: random per MQTT connection, shared by its will
      ? 5 => uint,                 ; capacity offered, bytes
      ? 6 => uint,                 ; bytes used
      ? 7 => uint,                 ; shards held
      ? 8 => tstr,                 ; CoAP host (an IP address), "" when not known
      ? 9 => uint,                 ; CoAP port (UDP and TCP), 0 when not known
      ? 10 => tstr,                ; software version, at most 64 characters
    }

    receipt-batch = {
      0 => 1, 1 => 18,             ; envelope: v, kind RECEIPT_BATCH
      2 => uint,                   ; time, unix seconds
      3 => [* bstr],               ; signed receipts (COSE_Sign1) whose holder is the sender
      4 => [* manifest-upload],    ; manifests whose owner is the sender
    }
    manifest-upload = [
      bstr,                        ; the owner-signed manifest (COSE_Sign1)
      [+ bstr],                    ; its n owner-signed shard headers, by index
    ]

    repair-order = {
      0 => 1, 1 => 19,             ; envelope: v, kind REPAIR_ORDER
      2 => uint,                   ; repair id, chosen by the hub
      3 => bstr .size 20,          ; the repairer's node id (the addressee)
      4 => bstr,                   ; the owner-signed manifest (COSE_Sign1)
      5 => [+ repair-target],      ; one per lost shard, distinct indices
      6 => [* repair-source],      ; live holders to fetch shards from
      7 => uint,                   ; issued, unix seconds
      8 => uint,                   ; deadline, unix seconds
    }
    repair-target = [uint, bstr, endpoint]  ; index, its owner-signed header, new holder
    repair-source = [uint, endpoint]        ; index, a live holder of it
    endpoint = [bstr .size 20, tstr, uint]  ; node id, host (an IP address), CoAP port

    repaired = {
      0 => 1, 1 => 20,             ; envelope: v, kind REPAIRED
      2 => uint,                   ; repair id (echoed)
      3 => bstr .size 36,          ; object CID
      4 => [* [uint, bstr .size 20]],  ; shards placed: index, new holder node id
      5 => [* uint],               ; indices that could not be placed
      6 => tstr,                   ; detail for the operator, at most 256 characters
      7 => uint,                   ; time, unix seconds
    }

The proof and the challenge have no map here: the proof is :func:`lichen.proofs.answer`'s
COSE_Sign1 as is (it already names holder, epoch and nonce), the challenge is what
:mod:`lichen.audit` signs; :class:`ProofMessage` and :class:`ChallengeMessage` carry them.
"""

from __future__ import annotations

import base64
import hmac
import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from lichen import cid, cose, shard, wire
from lichen.errors import BadMac, BadSignature, IntegrityError, LocalProtocolError, MalformedMessage
from lichen.fieldcheck import (
    is_bytes,
    is_text,
    is_uint,
    local_check,
    no_tag_limits,
    remote_build,
    require,
)
from lichen.identity import (
    NODE_ID_SIZE,
    PUBLIC_KEY_SIZE,
    Identity,
    PublicIdentity,
    format_node_id,
    node_id_bytes,
)
from lichen.manifest import Manifest, Receipt, check_header, open_manifest, open_receipt

R = TypeVar("R")
U = TypeVar("U")

JOIN_LABEL = b"lichen-join"
JOINED_LABEL = b"lichen-joined"
MAC_SIZE = 32  # HMAC-SHA256
MIN_TOKEN_LENGTH = 16  # characters: fewer could be found by trying
MAX_TOKEN_LENGTH = 256
SESSION_SIZE = 8  # random per connection: tells one connection's will from the next one's
MAX_NAME = 64
MAX_VERSION = 64
MAX_REASON = 256
# A batch is what an agent accepted since its last one: 512 signed receipts are about 100 KiB.
# Manifests come with all n headers (up to 256 of about 300 bytes), so four per batch.
MAX_BATCH_RECEIPTS = 512
MAX_BATCH_MANIFESTS = 4
MAX_SOURCES = shard.MAX_SHARDS  # a repair needs one live holder per index at most

SMALL_SIZE = 1024  # join, joined, presence: a few fixed fields and one signature
MAX_RECEIPTS_SIZE = 2 * 1024 * 1024  # 512 receipts and 4 uploads of 32 KiB + 256 headers
# A manifest (32 KiB) and 256 headers of at most 1 KiB each, the endpoints and the COSE wrapper.
MAX_REPAIR_SIZE = 512 * 1024
MAX_REPAIRED_SIZE = 16 * 1024


SMALL_LIMITS = no_tag_limits(SMALL_SIZE, 2, 32)
RECEIPTS_LIMITS = no_tag_limits(
    MAX_RECEIPTS_SIZE, 4, 16 + MAX_BATCH_RECEIPTS + MAX_BATCH_MANIFESTS * (3 + shard.MAX_SHARDS)
)
REPAIR_LIMITS = no_tag_limits(MAX_REPAIR_SIZE, 4, 32 + shard.MAX_SHARDS * 7 + MAX_SOURCES * 6)
REPAIRED_LIMITS = no_tag_limits(MAX_REPAIRED_SIZE, 3, 32 + shard.MAX_SHARDS * 5)


def _token_key(token: str) -> bytes:
    if not isinstance(token, str) or not MIN_TOKEN_LENGTH <= len(token) <= MAX_TOKEN_LENGTH:
        raise LocalProtocolError(
            f"a join token is {MIN_TOKEN_LENGTH} to {MAX_TOKEN_LENGTH} characters"
        )
    return token.encode("utf-8")


def new_token(entropy: bytes) -> str:
    """A join token from at least 16 random bytes the caller drew: lowercase base32."""
    if len(entropy) < 16:
        raise LocalProtocolError("a join token needs at least 16 random bytes")
    return base64.b32encode(entropy).decode("ascii").rstrip("=").lower()


def join_mac(token: str, public_key: bytes) -> bytes:
    """HMAC-SHA256(token, "lichen-join" || public key): the agent knows the token."""
    return hmac.digest(_token_key(token), JOIN_LABEL + public_key, "sha256")


def joined_mac(token: str, hub_key: bytes, node: bytes) -> bytes:
    """HMAC-SHA256(token, "lichen-joined" || hub key || node id): the hub knows it too."""
    return hmac.digest(_token_key(token), JOINED_LABEL + hub_key + node, "sha256")


def _check_host(host: object, *, allow_empty: bool) -> None:
    if not isinstance(host, str):
        raise MalformedMessage("a host is text")
    if host == "" and allow_empty:
        return
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise MalformedMessage(f"host {host[:64]!r} is not an IP address") from None


@dataclass(frozen=True)
class Join:
    """An agent's enrollment request (agent -> hub), signed by the key it enrolls."""

    public_key: bytes
    name: str
    capacity: int
    mac: bytes
    """HMAC-SHA256(token, "lichen-join" || public key), see :func:`join_mac`."""
    time: int

    def __post_init__(self) -> None:
        local_check(self._check)

    def _check(self) -> None:
        require(is_bytes(self.public_key, PUBLIC_KEY_SIZE), "join: the public key is 32 bytes")
        require(is_text(self.name, MAX_NAME), f"join: a name is at most {MAX_NAME} characters")
        require(is_uint(self.capacity) and is_uint(self.time), "join: bad capacity or time")
        require(is_bytes(self.mac, MAC_SIZE), "join: the MAC is 32 bytes")

    @property
    def node_id(self) -> str:
        """The joining node's id, derived from its key."""
        return format_node_id(node_id_bytes(self.public_key))

    def check_token(self, token: str) -> None:
        """Raise :class:`BadMac` unless the join was made with ``token``."""
        if not hmac.compare_digest(join_mac(token, self.public_key), self.mac):
            raise BadMac(f"join from {self.node_id}: the token MAC does not verify")

    def to_payload(self) -> bytes:
        """The CBOR map the agent signs (kind JOIN)."""
        fields = {2: self.public_key, 3: self.name, 4: self.capacity, 5: self.mac}
        return wire.encode(wire.Kind.JOIN, {**fields, 6: self.time})

    @classmethod
    def from_payload(cls, payload: bytes) -> Join:
        """Decode an untrusted JOIN map; :class:`MalformedMessage`."""
        f = wire.decode(payload, wire.Kind.JOIN, SMALL_LIMITS)
        join = remote_build(
            lambda: cls(
                f.bstr(2, size=PUBLIC_KEY_SIZE),
                f.tstr(3, max_size=MAX_NAME),
                f.uint(4),
                f.bstr(5, size=MAC_SIZE),
                f.uint(6),
            )
        )
        f.finish()
        return join


def make_join(identity: Identity, token: str, *, name: str, capacity: int, now: float) -> bytes:
    """The signed join that ``identity`` publishes on its ``join`` topic."""
    key = identity.public.public_key
    join = Join(key, name, capacity, join_mac(token, key), int(now))
    return cose.sign1(join.to_payload(), identity)


@dataclass(frozen=True)
class Joined:
    """The hub's answer to a join (hub -> agent)."""

    node: bytes
    """The agent's 20-byte node id."""
    accepted: bool
    hub_key: bytes
    reason: str
    time: int
    mac: bytes
    """HMAC-SHA256(token, "lichen-joined" || hub key || node id), see :func:`joined_mac`."""

    def __post_init__(self) -> None:
        local_check(self._check)

    def _check(self) -> None:
        require(is_bytes(self.node, NODE_ID_SIZE), "joined: the node id is 20 bytes")
        require(isinstance(self.accepted, bool), "joined: accepted is a boolean")
        require(is_bytes(self.hub_key, PUBLIC_KEY_SIZE), "joined: the hub key is 32 bytes")
        require(is_text(self.reason, MAX_REASON), "joined: the reason is too long")
        require(is_uint(self.time), "joined: bad time")
        require(is_bytes(self.mac, MAC_SIZE), "joined: the MAC is 32 bytes")

    @property
    def hub(self) -> PublicIdentity:
        """The hub's identity, for the agent to pin."""
        return PublicIdentity(self.hub_key)

    def check_token(self, token: str) -> None:
        """Raise :class:`BadMac` unless the answer was made by a hub holding ``token``."""
        if not hmac.compare_digest(joined_mac(token, self.hub_key, self.node), self.mac):
            raise BadMac("joined: the token MAC does not verify: not our hub")

    def to_payload(self) -> bytes:
        """The CBOR map the hub signs (kind JOINED)."""
        fields = {2: self.node, 3: self.accepted, 4: self.hub_key, 5: self.reason, 6: self.time}
        return wire.encode(wire.Kind.JOINED, {**fields, 7: self.mac})

    @classmethod
    def from_payload(cls, payload: bytes) -> Joined:
        """Decode an untrusted JOINED map; :class:`MalformedMessage`."""
        f = wire.decode(payload, wire.Kind.JOINED, SMALL_LIMITS)
        accepted = f.optional(3)
        require(isinstance(accepted, bool), "joined: accepted is a boolean")
        joined = remote_build(
            lambda: cls(
                f.bstr(2, size=NODE_ID_SIZE),
                bool(accepted),
                f.bstr(4, size=PUBLIC_KEY_SIZE),
                f.tstr(5, max_size=MAX_REASON),
                f.uint(6),
                f.bstr(7, size=MAC_SIZE),
            )
        )
        f.finish()
        return joined


def make_joined(
    hub: Identity, node: bytes, token: str, *, accepted: bool, reason: str = "", now: float
) -> bytes:
    """The hub's signed answer to the join of ``node`` (a 20-byte node id)."""
    key = hub.public.public_key
    joined = Joined(node, accepted, key, reason, int(now), joined_mac(token, key, node))
    return cose.sign1(joined.to_payload(), hub)


@dataclass(frozen=True)
class Status:
    """An agent's presence (agent -> hub, retained). An offline status carries no figures."""

    online: bool
    time: int
    session: bytes
    capacity: int = 0
    used: int = 0
    shards: int = 0
    host: str = ""
    port: int = 0
    version: str = ""

    def __post_init__(self) -> None:
        local_check(self._check)

    def _check(self) -> None:
        require(isinstance(self.online, bool), "status: online is a boolean")
        require(is_uint(self.time), "status: bad time")
        require(
            is_bytes(self.session, SESSION_SIZE), f"status: the session is {SESSION_SIZE} bytes"
        )
        require(
            is_uint(self.capacity) and is_uint(self.used) and is_uint(self.shards),
            "status: bad capacity, used or shards",
        )
        _check_host(self.host, allow_empty=True)
        require(is_uint(self.port, 65536), "status: bad port")
        require(is_text(self.version, MAX_VERSION), "status: the version is too long")
        if not self.online:
            figures = (self.capacity, self.used, self.shards, self.host, self.port, self.version)
            require(figures == (0, 0, 0, "", 0, ""), "status: an offline status has no figures")

    @classmethod
    def offline(cls, time: int, session: bytes) -> Status:
        """The last-will form: offline, for the connection ``session`` made at ``time``."""
        return cls(False, time, session)

    def to_payload(self) -> bytes:
        """The CBOR map the agent signs (kind PRESENCE)."""
        fields: dict[int, Any] = {2: self.online, 3: self.time, 4: self.session}
        if self.online:
            fields |= {5: self.capacity, 6: self.used, 7: self.shards, 8: self.host}
            fields |= {9: self.port, 10: self.version}
        return wire.encode(wire.Kind.PRESENCE, fields)

    def sign(self, identity: Identity) -> bytes:
        """The status as ``identity`` publishes it."""
        return cose.sign1(self.to_payload(), identity)

    @classmethod
    def from_payload(cls, payload: bytes) -> Status:
        """Decode an untrusted PRESENCE map; :class:`MalformedMessage`."""
        f = wire.decode(payload, wire.Kind.PRESENCE, SMALL_LIMITS)
        online = f.optional(2)
        require(isinstance(online, bool), "status: online is a boolean")
        time, session = f.uint(3), f.bstr(4, size=SESSION_SIZE)
        if not online:
            f.finish()
            return remote_build(lambda: cls.offline(time, session))
        status = remote_build(
            lambda: cls(
                True,
                time,
                session,
                f.uint(5),
                f.uint(6),
                f.uint(7),
                f.tstr(8, max_size=64),
                f.uint(9, max_value=65535),
                f.tstr(10, max_size=MAX_VERSION),
            )
        )
        f.finish()
        return status


@dataclass(frozen=True)
class SignedReceipt:
    """A holder-signed receipt and what it says."""

    signed: bytes
    receipt: Receipt


@dataclass(frozen=True)
class ManifestUpload:
    """An owner-signed manifest with all n owner-signed shard headers, by index."""

    signed: bytes
    manifest: Manifest
    headers: tuple[bytes, ...]


@dataclass(frozen=True)
class ReceiptBatch:
    """Receipts the sender signed as holder and manifests it signed as owner (agent -> hub)."""

    time: int
    receipts: tuple[SignedReceipt, ...]
    manifests: tuple[ManifestUpload, ...]

    @classmethod
    def open(cls, payload: bytes, sender: PublicIdentity) -> ReceiptBatch:
        """Decode a RECEIPT_BATCH map and check every signature in it is ``sender``'s.

        Raises :class:`MalformedMessage`, :class:`BadSignature` (a receipt or manifest that is
        not the sender's) or :class:`IntegrityError` (a header that disagrees with its manifest).
        """
        f = wire.decode(payload, wire.Kind.RECEIPT_BATCH, RECEIPTS_LIMITS)
        time = f.uint(2)
        receipts = f.array(3, max_len=MAX_BATCH_RECEIPTS)
        uploads = f.array(4, max_len=MAX_BATCH_MANIFESTS)
        f.finish()
        opened, manifests = _open_batch(receipts, uploads, sender)
        return cls(time, opened, manifests)


def _open_batch(
    receipts: Iterable[object], uploads: Iterable[object], sender: PublicIdentity
) -> tuple[tuple[SignedReceipt, ...], tuple[ManifestUpload, ...]]:
    opened = []
    for signed in receipts:
        require(isinstance(signed, bytes), "receipt batch: a receipt is a byte string")
        assert isinstance(signed, bytes)
        opened.append(SignedReceipt(signed, open_receipt(signed, sender)))
    manifests = []
    for upload in uploads:
        require(
            isinstance(upload, list | tuple)
            and len(upload) == 2
            and isinstance(upload[0], bytes)
            and isinstance(upload[1], list | tuple),
            "receipt batch: an upload is [manifest, [headers]]",
        )
        assert isinstance(upload, list | tuple)
        signed, headers = upload
        require(len(headers) <= shard.MAX_SHARDS, "receipt batch: more than 256 headers")
        manifest = open_manifest(signed)
        if manifest.owner != sender.public_key:
            raise BadSignature(f"receipt batch: a manifest owned by another node than {sender}")
        require(len(headers) == manifest.n, f"upload: {len(headers)} headers for {manifest.n}")
        for index, header in enumerate(headers):
            check_header(manifest, index, header)
        manifests.append(ManifestUpload(signed, manifest, tuple(headers)))
    return tuple(opened), tuple(manifests)


def make_receipts(
    identity: Identity,
    receipts: Sequence[bytes],
    manifests: Sequence[tuple[bytes, Sequence[bytes]]],
    *,
    now: float,
) -> bytes:
    """A signed batch of ``identity``'s receipts and (manifest, headers) uploads.

    The items are not checked again: the agent's outbox hands over only what it checked.
    :class:`LocalProtocolError` when the batch exceeds a bound (:func:`receipt_batches` splits).
    """
    if len(receipts) > MAX_BATCH_RECEIPTS or len(manifests) > MAX_BATCH_MANIFESTS:
        raise LocalProtocolError(
            f"a batch holds {MAX_BATCH_RECEIPTS} receipts and {MAX_BATCH_MANIFESTS} manifests"
        )
    fields = {2: int(now), 3: list(receipts), 4: [[m, list(h)] for m, h in manifests]}
    signed = cose.sign1(wire.encode(wire.Kind.RECEIPT_BATCH, fields), identity)
    if len(signed) > MAX_RECEIPTS_SIZE:
        raise LocalProtocolError(f"the batch exceeds {MAX_RECEIPTS_SIZE} bytes: send fewer")
    return signed


def receipt_batches(
    receipts: Sequence[R], manifests: Sequence[U]
) -> list[tuple[Sequence[R], Sequence[U]]]:
    """``receipts`` and ``manifests`` cut into rounds that each fit one batch (at least one)."""
    rounds = max(
        -(-len(receipts) // MAX_BATCH_RECEIPTS), -(-len(manifests) // MAX_BATCH_MANIFESTS), 1
    )
    r, m = MAX_BATCH_RECEIPTS, MAX_BATCH_MANIFESTS
    return [(receipts[i * r : (i + 1) * r], manifests[i * m : (i + 1) * m]) for i in range(rounds)]


@dataclass(frozen=True)
class ProofMessage:
    """A holder's signed answer to a challenge, exactly as :func:`lichen.proofs.answer` made it.

    Opening checks that the COSE kid names the topic's holder and reads the echoed epoch and
    nonce (:func:`lichen.proofs.read_echo`), so the hub can find the challenge;
    :func:`lichen.audit.judge_answer` then checks the signature, once, and judges ``signed``.
    """

    epoch: int
    nonce: bytes
    signed: bytes


@dataclass(frozen=True)
class ChallengeMessage:
    """A hub-signed challenge, carried as is: :mod:`lichen.audit` opens ``signed``."""

    signed: bytes


@dataclass(frozen=True)
class Endpoint:
    """Where an agent serves shards: its node id, IP address and CoAP port (UDP and TCP)."""

    node: bytes
    host: str
    port: int

    def __post_init__(self) -> None:
        local_check(self._check)

    def _check(self) -> None:
        require(is_bytes(self.node, NODE_ID_SIZE), "endpoint: the node id is 20 bytes")
        _check_host(self.host, allow_empty=False)
        require(is_uint(self.port, 65536) and self.port > 0, "endpoint: bad port")

    def to_list(self) -> list[Any]:
        """The endpoint as a CBOR array."""
        return [self.node, self.host, self.port]

    @classmethod
    def from_list(cls, raw: object) -> Endpoint:
        """An endpoint from an untrusted CBOR array; :class:`MalformedMessage`."""
        if not (isinstance(raw, list) and len(raw) == 3):
            raise MalformedMessage("endpoint: [node, host, port]")
        return remote_build(lambda: cls(raw[0], raw[1], raw[2]))


@dataclass(frozen=True)
class RepairTarget:
    """A lost shard and the new holder to place its rebuilt piece on."""

    index: int
    signed_header: bytes
    """The owner-signed header of that index: the rebuilt piece goes out under it."""
    holder: Endpoint


@dataclass(frozen=True)
class RepairSource:
    """A live holder of one shard of the object."""

    index: int
    holder: Endpoint


@dataclass(frozen=True)
class RepairOrder:
    """The hub's order to rebuild lost shards of one object (hub -> agent)."""

    repair_id: int
    repairer: bytes
    """The 20-byte node id of the agent ordered to repair."""
    signed_manifest: bytes
    targets: tuple[RepairTarget, ...]
    sources: tuple[RepairSource, ...]
    issued: int
    deadline: int

    def __post_init__(self) -> None:
        local_check(self._check_shape)

    def _check_shape(self) -> None:
        require(is_uint(self.repair_id), "repair: bad repair id")
        require(is_bytes(self.repairer, NODE_ID_SIZE), "repair: the repairer is a 20-byte id")
        require(isinstance(self.signed_manifest, bytes), "repair: the manifest is bytes")
        require(1 <= len(self.targets) <= shard.MAX_SHARDS, "repair: 1 to 256 targets")
        require(len(self.sources) <= MAX_SOURCES, f"repair: at most {MAX_SOURCES} sources")
        require(is_uint(self.issued) and is_uint(self.deadline), "repair: bad times")
        for t in self.targets:
            require(
                isinstance(t, RepairTarget) and is_uint(t.index, shard.MAX_SHARDS),
                "repair: a target is a RepairTarget with an index below 256",
            )
        indices = [t.index for t in self.targets]
        require(len(set(indices)) == len(indices), "repair: target indices repeat")
        for s in self.sources:
            require(
                isinstance(s, RepairSource) and is_uint(s.index, shard.MAX_SHARDS),
                "repair: a source is a RepairSource with an index below 256",
            )

    def check(self) -> Manifest:
        """Check the manifest, and each header and index against it; return the manifest.

        Raises :class:`MalformedMessage`, :class:`BadSignature` or :class:`IntegrityError`.
        """
        manifest = open_manifest(self.signed_manifest)
        for t in self.targets:
            require(t.index < manifest.n, f"repair: target index {t.index} >= n")
            check_header(manifest, t.index, t.signed_header)
        for s in self.sources:
            require(s.index < manifest.n, f"repair: source index {s.index} >= n")
        return manifest

    def to_payload(self) -> bytes:
        """The CBOR map the hub signs (kind REPAIR_ORDER)."""
        fields = {
            2: self.repair_id,
            3: self.repairer,
            4: self.signed_manifest,
            5: [[t.index, t.signed_header, t.holder.to_list()] for t in self.targets],
            6: [[s.index, s.holder.to_list()] for s in self.sources],
        }
        return wire.encode(wire.Kind.REPAIR_ORDER, {**fields, 7: self.issued, 8: self.deadline})

    def sign(self, hub: Identity) -> bytes:
        """The order as the hub publishes it; :class:`LocalProtocolError` if it is unsound."""
        try:
            self.check()
        except (MalformedMessage, BadSignature, IntegrityError) as exc:
            raise LocalProtocolError(f"unsound repair order: {exc}") from exc
        signed = cose.sign1(self.to_payload(), hub)
        if len(signed) > MAX_REPAIR_SIZE:
            raise LocalProtocolError(f"repair order exceeds {MAX_REPAIR_SIZE} bytes")
        return signed

    @classmethod
    def from_payload(cls, payload: bytes) -> RepairOrder:
        """Decode an untrusted REPAIR_ORDER map (its shape only; :meth:`check` the rest)."""
        f = wire.decode(payload, wire.Kind.REPAIR_ORDER, REPAIR_LIMITS)
        targets = []
        for raw in f.array(5, max_len=shard.MAX_SHARDS):
            require(
                isinstance(raw, list) and len(raw) == 3 and isinstance(raw[1], bytes),
                "repair: a target is [index, header, endpoint]",
            )
            targets.append(RepairTarget(raw[0], raw[1], Endpoint.from_list(raw[2])))
        sources = []
        for raw in f.array(6, max_len=MAX_SOURCES):
            require(isinstance(raw, list) and len(raw) == 2, "repair: a source is [index, ep]")
            sources.append(RepairSource(raw[0], Endpoint.from_list(raw[1])))
        order = remote_build(
            lambda: cls(
                f.uint(2),
                f.bstr(3, size=NODE_ID_SIZE),
                f.bstr(4, max_size=MAX_REPAIR_SIZE),
                tuple(targets),
                tuple(sources),
                f.uint(7),
                f.uint(8),
            )
        )
        f.finish()
        return order


@dataclass(frozen=True)
class Repaired:
    """A repairer's report on one repair order (agent -> hub)."""

    repair_id: int
    object_cid: bytes
    placed: tuple[tuple[int, bytes], ...]
    """(shard index, new holder's node id) for each piece placed."""
    failed: tuple[int, ...]
    detail: str
    time: int

    def __post_init__(self) -> None:
        local_check(self._check)

    def _check(self) -> None:
        require(is_uint(self.repair_id) and is_uint(self.time), "repaired: bad id or time")
        cid.check(self.object_cid)
        require(len(self.placed) + len(self.failed) <= shard.MAX_SHARDS, "repaired: too many")
        for entry in self.placed:
            require(
                isinstance(entry, tuple)
                and len(entry) == 2
                and is_uint(entry[0], shard.MAX_SHARDS)
                and is_bytes(entry[1], NODE_ID_SIZE),
                "repaired: a placement is (index, 20-byte node id)",
            )
        require(all(is_uint(i, shard.MAX_SHARDS) for i in self.failed), "repaired: bad index")
        require(is_text(self.detail, MAX_REASON), "repaired: the detail is too long")

    def to_payload(self) -> bytes:
        """The CBOR map the repairer signs (kind REPAIRED)."""
        fields = {
            2: self.repair_id,
            3: self.object_cid,
            4: [[i, h] for i, h in self.placed],
            5: list(self.failed),
        }
        return wire.encode(wire.Kind.REPAIRED, {**fields, 6: self.detail, 7: self.time})

    def sign(self, identity: Identity) -> bytes:
        """The report as ``identity`` publishes it."""
        return cose.sign1(self.to_payload(), identity)

    @classmethod
    def from_payload(cls, payload: bytes) -> Repaired:
        """Decode an untrusted REPAIRED map; :class:`MalformedMessage`."""
        f = wire.decode(payload, wire.Kind.REPAIRED, REPAIRED_LIMITS)
        placed = f.array(4, max_len=shard.MAX_SHARDS)
        failed = f.array(5, max_len=shard.MAX_SHARDS)
        require(
            all(isinstance(p, list) and len(p) == 2 for p in placed),
            "repaired: a placement is [index, node id]",
        )
        report = remote_build(
            lambda: cls(
                f.uint(2),
                f.bstr(3, size=cid.BINARY_SIZE),
                tuple((p[0], p[1]) for p in placed),
                tuple(failed),
                f.tstr(6, max_size=MAX_REASON),
                f.uint(7),
            )
        )
        f.finish()
        return report
