"""The latest readings of a stream, readable and observable (RFC 7641) at ``/s/<stream>``.

``GET /s/<stream>`` answers the last pack of readings the agent accepted for the stream, as
SenML+JSON (110, the default) or SenML+CBOR (112, with ``Accept: 112``); with ``Observe: 0``
the client is also sent every later pack, as it is made durable. Readings are the owner's
data, so a reader must be on this host, or hold the token of a sensor enrolled for that
stream (``?t=<token>``): what a stock client that writes a stream may read back. Each
notification is rendered again for each observer, so a token revoked meanwhile ends its
observation with 4.03.

POST on the same path is :class:`edge_agent.streams.SensorResource`'s; this class adds GET.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from aiocoap import Code, Message, interfaces
from aiocoap.interfaces import Pipe
from aiocoap.util.linkformat import Link, LinkFormat

from edge_agent import sensors
from edge_agent.coap_server import Services
from edge_agent.streams import SensorResource, StreamStore, is_loopback
from lichen import senml, stream
from lichen.errors import MalformedMessage, NotAuthorised

MAX_OBSERVERS = 256  # observations one agent keeps open; each costs a little memory


class LatestReadings(SensorResource):
    """POST readings to /s/<stream> (the base class); GET or observe the latest of them."""

    def __init__(
        self,
        services: Services,
        streams: StreamStore,
        accept_local: bool,
        wake: Callable[[], None],
        registry: sensors.SensorRegistry,
    ) -> None:
        super().__init__(
            services, streams, accept_local, wake, registry, on_readings=self._readings_in
        )
        self._latest: dict[str, tuple[senml.Record, ...]] = {}
        self._observers: dict[str, set[Any]] = {}

    def get_resources_as_linkheader(self) -> LinkFormat:
        """``</s>;rt="lichen.sensor";obs`` in ``/.well-known/core`` (RFC 7641 section 6)."""
        return LinkFormat([Link("", rt=self.rt, obs=None)])

    def _readings_in(self, name: str, records: Sequence[senml.Record]) -> None:
        self._latest[name] = tuple(records)
        for observation in list(self._observers.get(name, ())):
            observation.trigger()

    async def render_to_pipe(self, pipe: Pipe) -> None:
        request = pipe.request
        if request.code == Code.GET and request.opt.observe == 0:
            # aiocoap's observation loop: registers, renders now and on every trigger.
            await interfaces.ObservableResource._render_to_pipe(self, pipe)
        else:
            await super().render_to_pipe(pipe)

    async def add_observation(self, request: Message, observation: Any) -> None:
        """Accept an observation of the stream named in the path (RFC 7641 section 4.1)."""
        if len(request.opt.uri_path) != 1:
            return
        name = request.opt.uri_path[0]
        if sum(len(v) for v in self._observers.values()) >= MAX_OBSERVERS:
            return  # answered without Observe: the client may poll instead (section 4.1)
        watchers = self._observers.setdefault(name, set())
        watchers.add(observation)

        def cancel() -> None:
            watchers.discard(observation)
            if not watchers and self._observers.get(name) is watchers:
                del self._observers[name]

        observation.accept(cancel)

    async def render_get(self, request: Message) -> Message:
        if len(request.opt.uri_path) != 1:
            raise MalformedMessage("GET /s/<stream>")
        name = stream.check_stream_name(request.opt.uri_path[0])
        self._check_reader(name, request)
        accept = request.opt.accept
        fmt = senml.CONTENT_FORMAT_JSON if accept is None else int(accept)
        if fmt not in (senml.CONTENT_FORMAT_JSON, senml.CONTENT_FORMAT_CBOR):
            return Message(
                code=Code.NOT_ACCEPTABLE, payload=b"SenML+JSON (110) or SenML+CBOR (112) only"
            )
        records = self._latest.get(name) or self._pending_tail(name)
        if not records:
            return Message(code=Code.NOT_FOUND, payload=b"no reading since the agent started")
        encode = senml.encode_cbor if fmt == senml.CONTENT_FORMAT_CBOR else senml.encode_json
        return Message(code=Code.CONTENT, payload=encode(records), content_format=fmt)

    def _check_reader(self, name: str, request: Message) -> None:
        token = sensors.query_value(request.opt.uri_query, sensors.TOKEN_QUERY)
        if token is not None:
            self.sensors.check_reader(name, token)
        elif not is_loopback(request.remote):
            raise NotAuthorised("reading a stream needs a sensor token or this host")

    def _pending_tail(self, name: str) -> tuple[senml.Record, ...]:
        try:
            page = self.streams.page(name)
        except MalformedMessage:
            return ()
        pending = senml.decode_cbor(page.pending, now=time.time())
        return pending[-1:]
