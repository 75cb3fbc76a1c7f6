"""The hub <-> agent control plane on MQTT: topics, and opening what arrives on them.

Topics are ``lichen/v1/<node-id>/<name>``; every payload is a COSE_Sign1 by its sender (the
formats are in :mod:`lichen.hubmessages`). A topic authorises nothing, keys do: an agent ->
hub message must be signed by the enrolled, unrevoked key of the node its topic names
(:func:`open_from_agent`), a hub -> agent message by the hub key the agent pinned when it
joined, and it names its addressee inside the signed payload so it cannot be replayed to
another agent (:func:`open_from_hub`). Every payload is bounded by its topic's
:data:`MAX_SIZE` before anything is parsed.

==========  ==========  ==================================================================
name        direction   payload: a COSE_Sign1 by the sender around
==========  ==========  ==================================================================
join        agent->hub  ``join`` (kind JOIN), self-signed: its key is what is enrolled
joined      hub->agent  ``joined`` (kind JOINED), QoS 1
status      agent->hub  ``presence`` (kind PRESENCE), retained; the last will is its offline
                        form, signed at connect time
receipts    agent->hub  ``receipt-batch`` (kind RECEIPT_BATCH), QoS 1
challenge   hub->agent  the CHALLENGE as :mod:`lichen.audit` signs it, carried as is, QoS 1
proof       agent->hub  the PROOF exactly as :func:`lichen.proofs.answer` signs it, QoS 1
repair      hub->agent  ``repair-order`` (kind REPAIR_ORDER), QoS 1
repaired    agent->hub  ``repaired`` (kind REPAIRED), QoS 1
streams     agent->hub  ``stream-report`` (kind STREAM_REPORT), QoS 1: stream counts, and
                        reading values only where the agent's operator shares them
==========  ==========  ==================================================================
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from lichen import audit, cbor, cose, proofs
from lichen.errors import (
    BadSignature,
    LocalProtocolError,
    MalformedMessage,
    NotAuthorised,
)
from lichen.hubmessages import (
    MAX_RECEIPTS_SIZE,
    MAX_REPAIR_SIZE,
    MAX_REPAIRED_SIZE,
    SMALL_SIZE,
    ChallengeMessage,
    Join,
    Joined,
    ProofMessage,
    ReceiptBatch,
    Repaired,
    RepairOrder,
    Status,
)
from lichen.identity import PublicIdentity, parse_node_id
from lichen.manifest import Manifest
from lichen.streamreport import MAX_STREAMS_SIZE, StreamReport

TOPIC_PREFIX = "lichen/v1"
# "lichen/v1/" + a 32-character node id + "/" + the longest name: nothing valid is longer.
MAX_TOPIC_LENGTH = 64
# The challenge as lichen.audit signs it: one bound, so a challenge one accepts the other does too.
MAX_CHALLENGE_SIZE = audit.SIGNED_CHALLENGE_LIMITS.max_size
# COSE_Sign1 around an opaque payload bstr: tag, array, headers, kid, payload, signature.
_OUTER_DEPTH = 4
_OUTER_ITEMS = 16


class Name(StrEnum):
    """The last level of a control-plane topic."""

    JOIN = "join"
    JOINED = "joined"
    STATUS = "status"
    RECEIPTS = "receipts"
    CHALLENGE = "challenge"
    PROOF = "proof"
    REPAIR = "repair"
    REPAIRED = "repaired"
    STREAMS = "streams"


FROM_AGENT = frozenset(
    {Name.JOIN, Name.STATUS, Name.RECEIPTS, Name.PROOF, Name.REPAIRED, Name.STREAMS}
)
FROM_HUB = frozenset({Name.JOINED, Name.CHALLENGE, Name.REPAIR})
MAX_SIZE: dict[Name, int] = {
    Name.JOIN: SMALL_SIZE,
    Name.JOINED: SMALL_SIZE,
    Name.STATUS: SMALL_SIZE,
    Name.RECEIPTS: MAX_RECEIPTS_SIZE,
    Name.CHALLENGE: MAX_CHALLENGE_SIZE,
    Name.PROOF: proofs.MAX_PROOF_SIZE,
    Name.REPAIR: MAX_REPAIR_SIZE,
    Name.REPAIRED: MAX_REPAIRED_SIZE,
    Name.STREAMS: MAX_STREAMS_SIZE,
}
"""Largest payload accepted on each topic, checked before any parsing."""


@dataclass(frozen=True)
class CheckedRepair:
    """A repair order for this agent, with the manifest :meth:`RepairOrder.check` opened from
    it (each target's header already checked against that manifest)."""

    order: RepairOrder
    manifest: Manifest


AgentMessage = Join | Status | ReceiptBatch | ProofMessage | Repaired | StreamReport
HubMessage = Joined | ChallengeMessage | CheckedRepair


# --- topics -------------------------------------------------------------------------------


def topic(node_id: str, name: Name | str) -> str:
    """The topic ``lichen/v1/<node_id>/<name>``; :class:`LocalProtocolError` if either is bad."""
    try:
        parse_node_id(node_id)
        checked = Name(name)
    except (MalformedMessage, ValueError) as exc:
        raise LocalProtocolError(f"no control-plane topic for {node_id!r}, {name!r}") from exc
    return f"{TOPIC_PREFIX}/{node_id}/{checked.value}"


def parse_topic(text: str) -> tuple[str, Name]:
    """Split a control-plane topic into (node id, name); :class:`MalformedMessage` otherwise."""
    if not isinstance(text, str) or len(text) > MAX_TOPIC_LENGTH:
        raise MalformedMessage("not a control-plane topic: wrong type or too long")
    parts = text.split("/")
    if len(parts) != 4 or f"{parts[0]}/{parts[1]}" != TOPIC_PREFIX:
        raise MalformedMessage(f"not a control-plane topic: {text!r}")
    parse_node_id(parts[2])
    try:
        name = Name(parts[3])
    except ValueError:
        raise MalformedMessage(f"unknown control-plane topic name {parts[3]!r}") from None
    return parts[2], name


def hub_subscriptions() -> tuple[str, ...]:
    """The topic filters the hub subscribes to: every agent's agent -> hub topics."""
    return tuple(f"{TOPIC_PREFIX}/+/{name.value}" for name in sorted(FROM_AGENT))


def agent_subscriptions(node_id: str) -> tuple[str, ...]:
    """The topic filters one agent subscribes to: its own hub -> agent topics."""
    return tuple(topic(node_id, name) for name in sorted(FROM_HUB))


# --- opening ------------------------------------------------------------------------------


@dataclass(frozen=True)
class KnownDevice:
    """What the hub knows of a node id: its enrolled key and whether it was revoked."""

    public: PublicIdentity
    revoked: bool = False


DeviceLookup = Callable[[str], KnownDevice | None]
"""Text node id -> the enrolled device, or None when the hub does not know it."""


@dataclass(frozen=True)
class FromAgent:
    """An agent -> hub message and who sent it: verified, but for a proof, whose signature
    is left to its judge (:func:`lichen.audit.judge_answer`)."""

    sender: PublicIdentity
    name: Name
    message: AgentMessage

    @property
    def node_id(self) -> str:
        """The sender's node id (also the topic's)."""
        return self.sender.node_id


def _bounded(topic_name: Name, payload: bytes) -> None:
    if not isinstance(payload, bytes | bytearray):
        raise LocalProtocolError("a payload is bytes")
    limit = MAX_SIZE[topic_name]
    if len(payload) > limit:
        raise MalformedMessage(f"{topic_name} payload of {len(payload)} bytes exceeds {limit}")


def _outer(payload: bytes, topic_name: Name) -> cose.CoseMessage:
    limits = cbor.Limits(
        max_size=MAX_SIZE[topic_name], max_depth=_OUTER_DEPTH, max_items=_OUTER_ITEMS
    )
    message = cose.parse(bytes(payload), limits)
    if message.tag != cose.TAG_SIGN1:
        raise MalformedMessage(f"{topic_name}: expected a COSE_Sign1")
    return message


def open_from_agent(
    topic_text: str,
    payload: bytes,
    devices: DeviceLookup,
    *,
    join_token: str | None = None,
) -> FromAgent:
    """Parse and verify a message an agent published on ``topic_text``.

    The signer must be the node the topic names: its enrolled, unrevoked key from
    ``devices``, or for a join the key the join carries, with a MAC under ``join_token``.
    Raises :class:`MalformedMessage` (bad topic, oversize, malformed), :class:`BadSignature`
    (wrong signer for the topic, bad signature), :class:`NotAuthorised` (unknown or revoked
    key), :class:`BadMac` (a join with the wrong token), :class:`IntegrityError` (headers that
    disagree with their manifest), :class:`UnsupportedVersion`. A proof is only read: it must
    carry the topic's kid and name it as the holder; its signature is checked when judged.
    """
    node_id, name = parse_topic(topic_text)
    if name not in FROM_AGENT:
        raise MalformedMessage(f"{name} is a hub -> agent topic")
    _bounded(name, payload)
    message = _outer(payload, name)
    if message.kid != parse_node_id(node_id):
        raise BadSignature(
            f"{name} on {node_id}'s topic is signed by {message.kid.hex()}, not by {node_id}"
        )
    known = devices(node_id)
    if known is not None and known.revoked:
        raise NotAuthorised(f"{name} from revoked device {node_id}")
    if name is Name.JOIN:
        if join_token is None:
            raise LocalProtocolError("open_from_agent() needs the join token to open a join")
        join = Join.from_payload(message.payload)
        sender = PublicIdentity(join.public_key)
        if sender.kid != message.kid or (known is not None and known.public != sender):
            raise BadSignature(f"join on {node_id}'s topic carries another node's key")
        message.verify_signature(sender)
        join.check_token(join_token)
        return FromAgent(sender, name, join)
    if known is None:
        raise NotAuthorised(f"{name} from unknown device {node_id}")
    if known.public.node_id != node_id:
        raise LocalProtocolError(f"the device lookup returned another key for {node_id}")
    if name is Name.PROOF:
        # Judging the answer (lichen.audit.judge_answer) checks its signature: checking it
        # here too would cost a second pass over up to 64 MiB.
        epoch, nonce, holder = proofs.read_echo(message.payload)
        if holder != message.kid:
            raise BadSignature("proof names another holder than its signer")
        return FromAgent(known.public, name, ProofMessage(epoch, nonce, bytes(payload)))
    body = message.verify_signature(known.public)
    return FromAgent(known.public, name, _read_agent_message(name, body, known.public))


def _read_agent_message(name: Name, payload: bytes, sender: PublicIdentity) -> AgentMessage:
    if name is Name.STATUS:
        return Status.from_payload(payload)
    if name is Name.RECEIPTS:
        return ReceiptBatch.open(payload, sender)
    if name is Name.REPAIRED:
        return Repaired.from_payload(payload)
    return StreamReport.from_payload(payload)


def open_from_hub(
    topic_text: str,
    payload: bytes,
    *,
    me: str,
    hub: PublicIdentity | None,
    join_token: str | None = None,
) -> HubMessage:
    """Parse and verify a message the hub published for agent ``me`` on ``topic_text``.

    ``hub`` is the hub key pinned at enrollment. Before that (None) only a ``joined`` is
    accepted, signed by the key it carries and MACed under ``join_token``, which is then
    the key to pin. A repair order's manifest and headers are checked too, and the opened
    manifest is returned with it (:class:`CheckedRepair`). Raises
    :class:`MalformedMessage`, :class:`BadSignature`, :class:`BadMac`, :class:`NotAuthorised`
    (nothing pinned and no token), :class:`IntegrityError`, :class:`UnsupportedVersion`.
    """
    node_id, name = parse_topic(topic_text)
    if name not in FROM_HUB:
        raise MalformedMessage(f"{name} is an agent -> hub topic")
    if node_id != me:
        raise MalformedMessage(f"{name} on {node_id}'s topic is not for {me}")
    _bounded(name, payload)
    message = _outer(payload, name)
    if name is Name.JOINED:
        joined = Joined.from_payload(message.payload)
        signer = joined.hub
        if hub is not None and signer != hub:
            raise BadSignature("joined is signed by another hub than the one pinned")
        if hub is None and join_token is None:
            raise NotAuthorised("no hub key pinned and no join token to check one")
        message.verify_signature(signer)
        if joined.node != parse_node_id(me):
            raise BadSignature("joined answers another node's join")
        if join_token is not None:
            joined.check_token(join_token)
        return joined
    if hub is None:
        raise NotAuthorised(f"{name} before this agent has joined a hub")
    if message.kid != hub.kid:
        raise BadSignature(f"{name} is signed by {message.kid.hex()}, not by the pinned hub")
    body = message.verify_signature(hub)
    if name is Name.CHALLENGE:
        return ChallengeMessage(bytes(payload))
    order = RepairOrder.from_payload(body)
    if order.repairer != parse_node_id(me):
        raise BadSignature("repair order addressed to another node")
    return CheckedRepair(order, order.check())
