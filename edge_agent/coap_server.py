"""The agent's CoAP resources: bytes in from aiocoap become core calls, core answers go out.

One server context listens on the configured port over UDP (RFC 7252: sensors and small
control messages) and TCP (RFC 8323 ``coap+tcp``: bulk shard transfer). Every request body is
bounded before it is assembled or parsed (4.13 beyond the limit); every error a peer causes
becomes a 4.xx answer with a diagnostic payload, a log line naming the peer, and a counter.
Nothing a peer sends escapes as an exception.

Resources (``rt`` values are listed in ``/.well-known/core``)::

    POST /hello                  lichen.hello     prove our key: sign the asker's nonce
    PUT  /shards                 lichen.shards    store a shard, answer a signed receipt
    GET  /shards/<cid>/<index>   lichen.shards    fetch a shard (header and body)
    PUT  /manifests              lichen.manifest  store an owner-signed manifest
    GET  /manifests/<cid>        lichen.manifest  fetch a manifest
    PUT  /manifests/<cid>/headers lichen.manifest store a manifest this agent owns with its n
                                                  owner-signed shard headers, for the hub
    GET  /peers                  lichen.peers     the peers we verified
    GET  /status                 lichen.status    capacity, use and counts
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import aiocoap
import aiocoap.resource as resource
from aiocoap import Code, Message
from aiocoap.interfaces import Pipe
from aiocoap.util.asyncio.recvmsg import RecvmsgSelectorDatagramTransport
from aiocoap.util.linkformat import Link, LinkFormat

from edge_agent.metrics import AgentMetrics
from edge_agent.outbox import MAX_OWNED_SIZE, decode_owned
from edge_agent.peers import PeerTable
from edge_agent.store import ShardStore
from lichen import __version__, cid, holder, identity, manifest, messages
from lichen.errors import (
    BadMac,
    BadSignature,
    LichenError,
    LocalProtocolError,
    MalformedMessage,
    NotAuthorised,
    Refused,
    StoreFull,
)

log = logging.getLogger("lichen.agent.coap")

CT_CBOR = 60  # application/cbor, RFC 7049 section 7.3
CT_COSE_SIGN1 = 18  # application/cose; cose-type="cose-sign1", RFC 9052 section 11.2
MAX_CONTROL_BODY = 4096  # hello, manifests and every other small request
MAX_MANIFEST_BODY = 32 * 1024  # a 256-shard manifest is about 14 KiB
MAX_UDP_DATAGRAM = 65535  # the largest UDP payload: a datagram is read whole or not at all


@dataclass
class Services:
    """What the resources need from the agent; built once by the agent."""

    identity: identity.Identity
    store: ShardStore
    peers: PeerTable
    metrics: AgentMetrics
    max_body: int
    now: Callable[[], float]
    domain: str = ""
    tags: tuple[str, ...] = ()
    on_receipt: Callable[[], None] | None = None
    """Called in the event loop after a shard was stored and its receipt kept."""
    keep_owned: Callable[[bytes, Sequence[bytes], manifest.Manifest], None] | None = None
    """Keeps an owned manifest with its checked signed headers and the manifest opened, for
    the hub (blocking; in a thread)."""


def _code_for(exc: LichenError) -> Code:
    if isinstance(exc, UnsupportedFormat):
        return Code.UNSUPPORTED_CONTENT_FORMAT
    if isinstance(exc, BadSignature | BadMac):
        return Code.UNAUTHORIZED
    if isinstance(exc, NotAuthorised):
        return Code.UNAUTHORIZED
    if isinstance(exc, StoreFull):
        return Code.SERVICE_UNAVAILABLE
    if isinstance(exc, Refused):
        return Code.FORBIDDEN
    return Code.BAD_REQUEST


def diagnostic(code: Code, text: str) -> Message:
    """An error answer with a diagnostic payload (RFC 7252 section 5.5.2)."""
    return Message(code=code, payload=text.encode("utf-8", "replace")[:1024])


class LichenResource(resource.Resource):
    """Base of every agent resource: bounds the body, maps errors to 4.xx, counts."""

    rt = ""
    name = ""
    max_body = MAX_CONTROL_BODY

    def __init__(self, services: Services) -> None:
        super().__init__()
        self.services = services

    def get_link_description(self) -> dict[str, str]:
        """The ``rt`` attribute shown in ``/.well-known/core``."""
        return {"rt": self.rt}

    def body_limit(self) -> int:
        """Largest body this resource accepts."""
        return self.max_body

    async def render_to_pipe(self, pipe: Pipe) -> None:
        request = pipe.request
        limit = self.body_limit()
        block1 = request.opt.block1
        received = (block1.start if block1 is not None else 0) + len(request.payload)
        announced = request.opt.size1 or 0
        if received > limit or announced > limit:
            response = diagnostic(
                Code.REQUEST_ENTITY_TOO_LARGE, f"body over the limit of {limit} bytes"
            )
            response.opt.size1 = limit  # RFC 7959 section 2.9.3: tell the client the limit
            self._count(request, response.code, "TooLarge")
            pipe.add_response(response, is_last=True)
            return
        await super().render_to_pipe(pipe)

    async def render(self, request: Message) -> Message:
        try:
            response = await super().render(request)
        except LichenError as exc:
            if isinstance(exc, LocalProtocolError):
                log.exception("%s: internal error answering %s", self._me, request.remote)
                response = diagnostic(Code.INTERNAL_SERVER_ERROR, "internal error")
                self._count(request, response.code, type(exc).__name__)
                return response
            response = diagnostic(_code_for(exc), str(exc))
            log.warning(
                "%s: refused %s %s from %s: %s",
                self._me,
                request.code,
                self.name,
                request.remote.hostinfo,
                exc,
            )
            self._count(request, response.code, type(exc).__name__)
            return response
        self._count(request, response.code, None)
        return response

    @property
    def _me(self) -> str:
        return self.services.identity.node_id[:8]

    def _count(self, request: Message, code: Code, reason: str | None) -> None:
        self.services.metrics.requests.labels(self.name, str(code)).inc()
        if reason is not None:
            self.services.metrics.rejected.labels(reason).inc()

    @staticmethod
    def require_format(request: Message, *formats: int) -> None:
        """Refuse bodies of another content format (4.15 via UnsupportedFormat)."""
        fmt = request.opt.content_format
        if fmt is not None and int(fmt) not in formats:
            raise UnsupportedFormat(f"content format {int(fmt)} not accepted here")


class UnsupportedFormat(MalformedMessage):
    """A body in a content format the resource does not take."""


class PathResource(LichenResource, resource.PathCapable):
    """A resource that also answers for the paths below it (``/shards/<cid>/<i>``)."""

    def get_resources_as_linkheader(self) -> LinkFormat:
        return LinkFormat([Link("", rt=self.rt)])

    async def needs_blockwise_assembly(self, request: Message) -> bool:
        return True


class HelloResource(LichenResource):
    """POST /hello: sign the asker's nonce to prove this agent's key."""

    rt = "lichen.hello"
    name = "hello"

    async def render_post(self, request: Message) -> Message:
        self.require_format(request, CT_CBOR)
        asked = messages.HelloRequest.decode(request.payload)
        proof = identity.make_hello(self.services.identity, asked.nonce, asked.asker)
        return Message(code=Code.CONTENT, payload=proof, content_format=CT_CBOR)


class ShardUploadResource(LichenResource):
    """PUT /shards: store a shard, answer a signed receipt."""

    rt = "lichen.shards"
    name = "shards"

    def body_limit(self) -> int:
        return self.services.max_body + MAX_CONTROL_BODY

    async def render_put(self, request: Message) -> Message:
        self.require_format(request, CT_CBOR)
        offer = messages.ShardTransfer.decode(request.payload, self.services.max_body)
        receipt = await asyncio.to_thread(self._accept, offer)
        if self.services.on_receipt is not None:
            self.services.on_receipt()
        return Message(code=Code.CREATED, payload=receipt, content_format=CT_COSE_SIGN1)

    def _accept(self, offer: messages.ShardTransfer) -> bytes:
        s = self.services
        decision = holder.accept_shard(
            offer,
            holder=s.identity,
            now=int(s.now()),
            free_bytes=s.store.free_bytes(),
            held_root=s.store.held_root,
        )
        header = decision.shard.header
        if decision.new:
            s.store.put_shard(decision)
            log.info(
                "%s: stored shard %d of %s (%d bytes)",
                self._me,
                header.index,
                cid.to_text(header.object_cid),
                header.piece_size,
            )
        # Kept for the hub (edge_agent.outbox); after the shard, so a crash between the two
        # leaves a held shard without a receipt, which the outbox signs afresh.
        s.store.put_receipt(
            decision.signed_receipt, header.object_cid, header.index, s.identity.kid
        )
        return decision.signed_receipt


class ShardResource(PathResource):
    """GET /shards/<cid>/<index>: a shard's signed header and body."""

    rt = "lichen.shards"
    name = "shards"

    async def render_get(self, request: Message) -> Message:
        object_cid, index = _shard_address(request.opt.uri_path)
        found = await asyncio.to_thread(self.services.store.get_shard, object_cid, index)
        if found is None:
            return diagnostic(Code.NOT_FOUND, "shard not held here")
        transfer = messages.ShardTransfer(*found)
        return Message(code=Code.CONTENT, payload=transfer.encode(), content_format=CT_CBOR)


def _shard_address(path: tuple[str, ...]) -> tuple[bytes, int]:
    if len(path) != 2 or not path[1].isdigit() or len(path[1]) > 3:
        raise MalformedMessage("GET /shards/<cid>/<index>")
    return cid.from_text(path[0]), int(path[1])


class ManifestUploadResource(LichenResource):
    """PUT /manifests: store an owner-signed manifest."""

    rt = "lichen.manifest"
    name = "manifests"
    max_body = MAX_MANIFEST_BODY

    async def render_put(self, request: Message) -> Message:
        self.require_format(request, CT_COSE_SIGN1, CT_CBOR)
        opened = manifest.open_manifest(request.payload)
        if opened.expiry < self.services.now():
            raise Refused("manifest has expired")
        await asyncio.to_thread(self.services.store.put_manifest, request.payload)
        return Message(code=Code.CREATED)


class ManifestResource(PathResource):
    """GET /manifests/<cid>: an owner-signed manifest. PUT /manifests/<cid>/headers: a
    manifest this agent owns with its n owner-signed shard headers, CBOR ``[manifest,
    [headers]]``, kept for the hub (which needs them to order repairs)."""

    rt = "lichen.manifest"
    name = "manifests"
    max_body = MAX_OWNED_SIZE

    async def render_put(self, request: Message) -> Message:
        path = request.opt.uri_path
        if len(path) != 2 or path[1] != "headers":
            raise MalformedMessage("PUT /manifests/<cid>/headers")
        self.require_format(request, CT_CBOR)
        object_cid = cid.from_text(path[0])
        s = self.services
        if s.keep_owned is None:
            raise Refused("this agent does not keep headers")
        # Only the owner can sign a manifest this agent's key owns: no other check is needed.
        upload = await asyncio.to_thread(decode_owned, request.payload, s.identity.public)
        if upload.manifest.object_cid != object_cid:
            raise MalformedMessage("the manifest is not the one the path names")
        if upload.manifest.expiry < s.now():
            raise Refused("manifest has expired")
        await asyncio.to_thread(s.store.put_manifest, upload.signed)
        await asyncio.to_thread(s.keep_owned, upload.signed, upload.headers, upload.manifest)
        return Message(code=Code.CREATED)

    async def render_get(self, request: Message) -> Message:
        if len(request.opt.uri_path) != 1:
            raise MalformedMessage("GET /manifests/<cid>")
        object_cid = cid.from_text(request.opt.uri_path[0])
        found = await asyncio.to_thread(self.services.store.get_manifest, object_cid)
        if found is None:
            return diagnostic(Code.NOT_FOUND, "manifest not held here")
        return Message(code=Code.CONTENT, payload=found, content_format=CT_COSE_SIGN1)


class PeersResource(LichenResource):
    """GET /peers: the peers whose keys this agent has verified."""

    rt = "lichen.peers"
    name = "peers"

    async def render_get(self, request: Message) -> Message:
        payload = messages.encode_peers(self.services.peers.infos())
        return Message(code=Code.CONTENT, payload=payload, content_format=CT_CBOR)


class StatusResource(LichenResource):
    """GET /status: who this agent is and how full it is."""

    rt = "lichen.status"
    name = "status"

    async def render_get(self, request: Message) -> Message:
        s = self.services
        status = messages.AgentStatus(
            public_key=s.identity.public.public_key,
            capacity=s.store.capacity_bytes,
            used=s.store.used_bytes(),
            shards=s.store.shard_count(),
            peers=len(s.peers),
            version=__version__,
            domain=s.domain,
            tags=s.tags,
        )
        return Message(code=Code.CONTENT, payload=status.encode(), content_format=CT_CBOR)


def build_site(
    services: Services, extra: dict[tuple[str, ...], LichenResource] | None = None
) -> resource.Site:
    """The agent's resource tree, with ``/.well-known/core``."""
    site = resource.Site()
    site.add_resource(
        [".well-known", "core"], resource.WKCResource(site.get_resources_as_linkheader)
    )
    site.add_resource(["hello"], HelloResource(services))
    # aiocoap's Site sends /shards itself to a plain resource and /shards/... to a
    # path-capable one, so uploads and fetches are two resources at one path.
    site.add_resource(["shards"], ShardUploadResource(services))
    site.add_resource(["shards"], ShardResource(services))
    site.add_resource(["manifests"], ManifestUploadResource(services))
    site.add_resource(["manifests"], ManifestResource(services))
    site.add_resource(["peers"], PeersResource(services))
    site.add_resource(["status"], StatusResource(services))
    for path, res in (extra or {}).items():
        site.add_resource(list(path), res)
    return site


async def start(site: resource.Site, bind: str, port: int) -> aiocoap.Context:
    """Listen on ``bind``:``port`` over UDP and TCP (the same port number for both)."""
    # aiocoap reads at most 4096 bytes of a UDP datagram and handles a longer one cut short,
    # as if it were whole: a 12 KiB sensor pack in one datagram then reads as malformed.
    # Reading whole datagrams lets each resource's own body limit (4.13) decide.
    RecvmsgSelectorDatagramTransport.max_size = MAX_UDP_DATAGRAM
    return await aiocoap.Context.create_server_context(
        site, bind=(bind, port), transports=["udp6", "tcpserver", "tcpclient"]
    )
