"""Requests to agents over CoAP: the client half of :mod:`edge_agent.coap_server`.

Small requests go over UDP, shards over TCP (``coap+tcp``, RFC 8323), because aiocoap moves
about 1 MB/s blockwise over UDP and about 100 MB/s over TCP on the same machine. Every answer
is parsed with the core's bounded codecs and every signed answer is checked against the key
the peer proved; a peer that answers wrongly raises a :class:`RemoteProtocolError`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass

import aiocoap
from aiocoap import Code, Message

from edge_agent.coap_server import CT_CBOR, CT_COSE_SIGN1
from edge_agent.outbox import encode_owned
from lichen import cid, identity, manifest, messages
from lichen.errors import DataUnavailable, LichenError, MalformedMessage
from lichen.identity import Identity, PublicIdentity

CONTROL_TIMEOUT = 10.0  # seconds for a small request, retransmissions included
TRANSFER_TIMEOUT = 300.0  # seconds for one shard; a 64 MiB shard at 1 MB/s still fits


class PeerUnreachable(DataUnavailable):
    """A peer did not answer in time, or refused the connection."""


@dataclass
class RequestFailed(LichenError):
    """A peer answered with an error code."""

    code: str
    diagnostic: str

    def __str__(self) -> str:
        return f"{self.code}: {self.diagnostic}" if self.diagnostic else self.code


def _authority(host: str, port: int) -> str:
    address = ipaddress.ip_address(host)
    return f"[{host}]:{port}" if address.version == 6 else f"{host}:{port}"


class AgentClient:
    """CoAP requests from this process to agents; one per process, closed with :meth:`close`."""

    def __init__(self, context: aiocoap.Context, me: Identity | None = None) -> None:
        self._context = context
        self._me = me

    @classmethod
    async def create(cls, me: Identity | None = None) -> AgentClient:
        """A client with its own aiocoap context (UDP and TCP)."""
        context = await aiocoap.Context.create_client_context(transports=["udp6", "tcpclient"])
        return cls(context, me)

    async def close(self) -> None:
        """Close every connection."""
        await self._context.shutdown()

    async def _ask(self, message: Message, timeout: float) -> Message:
        response = await self._ask_maybe(message, timeout, allow_not_found=False)
        if response is None:  # only with allow_not_found
            raise RequestFailed("4.04 Not Found", "")
        return response

    async def _ask_maybe(
        self, message: Message, timeout: float, *, allow_not_found: bool = True
    ) -> Message | None:
        """The successful answer to ``message``; None for 4.04 when ``allow_not_found``."""
        try:
            response = await asyncio.wait_for(
                self._context.request(message).response, timeout=timeout
            )
        except TimeoutError:
            raise PeerUnreachable(
                f"no answer from {message.unresolved_remote} in {timeout:.0f} s"
            ) from None
        except aiocoap.error.NetworkError as exc:
            raise PeerUnreachable(f"cannot reach {message.unresolved_remote}: {exc}") from None
        except aiocoap.error.Error as exc:
            raise PeerUnreachable(f"request to {message.unresolved_remote} failed: {exc}") from None
        if response.code == Code.NOT_FOUND and allow_not_found:
            return None
        if not response.code.is_successful():
            text = response.payload.decode("utf-8", "replace")[:300]
            raise RequestFailed(str(response.code), text)
        return response

    async def hello(
        self, host: str, port: int, expected_node_id: str | None = None
    ) -> PublicIdentity:
        """Make the agent at host:port prove its key; with ``expected_node_id``, that key."""
        if self._me is None:
            raise MalformedMessage("a hello needs our own identity as the audience")
        nonce = os.urandom(32)
        request = messages.HelloRequest(nonce, self._me.kid)
        response = await self._ask(
            Message(
                code=Code.POST,
                uri=f"coap://{_authority(host, port)}/hello",
                payload=request.encode(),
                content_format=CT_CBOR,
            ),
            CONTROL_TIMEOUT,
        )
        return identity.verify_hello(
            response.payload, nonce=nonce, audience=self._me.kid, expected_node_id=expected_node_id
        )

    async def put_shard(
        self, peer: messages.PeerInfo, transfer: messages.ShardTransfer
    ) -> tuple[manifest.Receipt, bytes]:
        """Offer a shard to ``peer``; return its receipt (checked against the peer's key)
        and the signed bytes of it."""
        response = await self._ask(
            Message(
                code=Code.PUT,
                uri=f"coap+tcp://{_authority(peer.host, peer.port)}/shards",
                payload=transfer.encode(),
                content_format=CT_CBOR,
            ),
            TRANSFER_TIMEOUT,
        )
        receipt = manifest.open_receipt(response.payload, PublicIdentity(peer.public_key))
        return receipt, response.payload

    async def get_shard(
        self, peer: messages.PeerInfo, object_cid: bytes, index: int, max_body: int
    ) -> messages.ShardTransfer | None:
        """Fetch shard ``index`` of an object from ``peer``; None if it does not hold it."""
        response = await self._ask_maybe(
            Message(
                code=Code.GET,
                uri=f"coap+tcp://{_authority(peer.host, peer.port)}/shards/"
                f"{cid.to_text(object_cid)}/{index}",
            ),
            TRANSFER_TIMEOUT,
        )
        if response is None:
            return None
        return messages.ShardTransfer.decode(response.payload, max_body)

    async def put_manifest(self, host: str, port: int, signed: bytes) -> None:
        """Store a signed manifest on the agent at host:port."""
        await self._ask(
            Message(
                code=Code.PUT,
                uri=f"coap+tcp://{_authority(host, port)}/manifests",
                payload=signed,
                content_format=CT_COSE_SIGN1,
            ),
            CONTROL_TIMEOUT,
        )

    async def put_owned_headers(
        self, host: str, port: int, signed_manifest: bytes, headers: Sequence[bytes]
    ) -> None:
        """Leave a manifest we own with its n signed shard headers at our agent, for the hub."""
        object_cid = manifest.open_manifest(signed_manifest).object_cid
        await self._ask(
            Message(
                code=Code.PUT,
                uri=f"coap+tcp://{_authority(host, port)}/manifests/"
                f"{cid.to_text(object_cid)}/headers",
                payload=encode_owned(signed_manifest, headers),
                content_format=CT_CBOR,
            ),
            CONTROL_TIMEOUT,
        )

    async def get_manifest(
        self, host: str, port: int, object_cid: bytes
    ) -> manifest.Manifest | None:
        """The manifest of ``object_cid`` held by the agent at host:port, checked; or None."""
        response = await self._ask_maybe(
            Message(
                code=Code.GET,
                uri=f"coap+tcp://{_authority(host, port)}/manifests/{cid.to_text(object_cid)}",
            ),
            CONTROL_TIMEOUT,
        )
        if response is None:
            return None
        found = manifest.open_manifest(response.payload)
        if found.object_cid != object_cid:
            raise MalformedMessage("asked for one manifest, got another")
        return found

    async def get_peers(self, host: str, port: int) -> list[messages.PeerInfo]:
        """The peers the agent at host:port has verified."""
        response = await self._ask(
            Message(code=Code.GET, uri=f"coap://{_authority(host, port)}/peers"), CONTROL_TIMEOUT
        )
        return messages.decode_peers(response.payload)

    async def get_status(self, host: str, port: int) -> messages.AgentStatus:
        """What the agent at host:port says about itself."""
        response = await self._ask(
            Message(code=Code.GET, uri=f"coap://{_authority(host, port)}/status"), CONTROL_TIMEOUT
        )
        return messages.AgentStatus.decode(response.payload)

    async def get_stream_page(
        self, host: str, port: int, name: str, *, start: int = 0, since: float | None = None
    ) -> messages.StreamIndexPage:
        """One page of stream ``name``'s chain from the agent at host:port."""
        query = f"start={start}" + (f"&since={since!r}" if since is not None else "")
        response = await self._ask(
            Message(
                code=Code.GET,
                uri=f"coap+tcp://{_authority(host, port)}/streams/{name}?{query}",
            ),
            CONTROL_TIMEOUT,
        )
        return messages.StreamIndexPage.decode(response.payload)
