"""The agent's Prometheus metrics, in a registry of its own (so tests can run several agents).

Exposed over HTTP at ``/metrics`` by :func:`serve`, on the address the config names
(loopback by default).
"""

from __future__ import annotations

import threading
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server


class AgentMetrics:
    """Every figure the agent exports."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "lichen_requests",
            "CoAP requests answered, by resource and response code",
            ["resource", "code"],
            registry=r,
        )
        self.rejected = Counter(
            "lichen_rejected",
            "Requests refused, by reason (the error class)",
            ["reason"],
            registry=r,
        )
        self.stored_bytes = Gauge("lichen_stored_bytes", "Bytes of shards held", registry=r)
        self.capacity_bytes = Gauge(
            "lichen_capacity_bytes", "Bytes this agent offers for shards", registry=r
        )
        self.shards = Gauge("lichen_shards", "Shards held", registry=r)
        self.peers = Gauge("lichen_peers", "Peers whose keys are verified", registry=r)
        self.readings = Counter(
            "lichen_readings", "Sensor readings accepted (acknowledged)", ["stream"], registry=r
        )
        self.segments = Counter(
            "lichen_segments", "Stream segments sealed and stored", ["stream"], registry=r
        )
        self.corrupt_shards = Counter(
            "lichen_corrupt_shards", "Stored shards found corrupt by the scrubber", registry=r
        )
        self.adverts_dropped = Counter(
            "lichen_adverts_dropped",
            "mDNS adverts or handshakes that failed, by reason",
            ["reason"],
            registry=r,
        )


class MetricsServer:
    """A running ``/metrics`` HTTP server."""

    def __init__(self, server: WSGIServer, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread

    @property
    def port(self) -> int:
        """The TCP port it listens on."""
        return int(self._server.server_port)

    def close(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def serve(metrics: AgentMetrics, bind: str, port: int) -> MetricsServer:
    """Serve ``metrics`` at ``http://bind:port/metrics`` (port 0: any free port)."""
    server, thread = start_http_server(port, addr=bind, registry=metrics.registry)
    return MetricsServer(server, thread)
