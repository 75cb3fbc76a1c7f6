"""The hub's HTTP face: a JSON API over its records, ``/metrics`` and ``/healthz``.

Starlette routes, served in-process by uvicorn. Every handler reads through
:class:`hub.db.Database` in a worker thread and turns the records (frozen dataclasses) into
JSON: bytes as hex, enums as their values. Lists are paged with ``?limit=&offset=``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from hub.db import Database
from lichen import ledger
from lichen.errors import IntegrityError, LichenError

if TYPE_CHECKING:
    from hub.service import Hub

MAX_LIMIT = 1000


def to_json(value: Any) -> Any:
    """A JSON-ready copy of a record: dataclasses as objects, bytes as hex, enums as values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    return value


def _page_args(request: Request) -> tuple[int, int]:
    try:
        limit = int(request.query_params.get("limit", "100"))
        offset = int(request.query_params.get("offset", "0"))
    except ValueError:
        raise ValueError("limit and offset are whole numbers") from None
    if not 1 <= limit <= MAX_LIMIT or offset < 0:
        raise ValueError(f"limit is 1 to {MAX_LIMIT}, offset at least 0")
    return limit, offset


Handler = Callable[[Request], Awaitable[Response]]


def build_app(hub: Hub) -> Starlette:
    """The Starlette application for ``hub``."""

    def db() -> Database:
        assert hub.db is not None
        return hub.db

    def json_route(read: Callable[[Request], Any]) -> Handler:
        async def endpoint(request: Request) -> Response:
            try:
                found = await asyncio.to_thread(read, request)
            except ValueError as exc:
                return JSONResponse({"error": str(exc)}, status_code=400)
            except LichenError as exc:
                return JSONResponse({"error": str(exc)}, status_code=400)
            if found is None:
                return JSONResponse({"error": "not found"}, status_code=404)
            return JSONResponse(to_json(found))

        return endpoint

    def paged(list_fn: Callable[[Database], Callable[..., Any]]) -> Handler:
        return json_route(lambda r: list_fn(db())(*_page_args(r)))

    async def healthz(request: Request) -> Response:
        database_ok = await asyncio.to_thread(db().ping)
        broker_ok = hub.mqtt is not None and hub.mqtt.connected
        current = await asyncio.to_thread(db().current_epoch)
        body = {
            "database": database_ok,
            "broker": broker_ok,
            "epoch": current.epoch if current else None,
            "hub": hub.identity.node_id,
        }
        return JSONResponse(body, status_code=200 if database_ok and broker_ok else 503)

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(hub.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    def verify(request: Request) -> dict[str, Any]:
        records = [entry.record for entry in db().ledger()]
        try:
            summary = ledger.verify_ledger(records, hub.identity.public)
        except IntegrityError as exc:
            return {"verified": False, "error": str(exc), "records": len(records)}
        return {"verified": True, "records": len(records), "summary": to_json(summary)}

    def epoch_detail(request: Request) -> dict[str, Any] | None:
        number = request.path_params["epoch"]
        epoch = db().get_epoch(number)
        if epoch is None:
            return None
        return {"epoch": epoch, "rewards": db().epoch_rewards(number)}

    routes = [
        Route("/healthz", healthz),
        Route("/metrics", metrics),
        Route("/api/overview", json_route(lambda r: db().overview())),
        Route("/api/devices", paged(lambda d: d.list_devices)),
        Route(
            "/api/devices/{node_id}",
            json_route(lambda r: db().device_detail(r.path_params["node_id"])),
        ),
        Route("/api/objects", paged(lambda d: d.list_objects)),
        Route("/api/objects/{cid}", json_route(lambda r: db().get_object(r.path_params["cid"]))),
        Route("/api/epochs", paged(lambda d: d.list_epochs)),
        Route("/api/epochs/{epoch:int}", json_route(epoch_detail)),
        Route("/api/warnings", paged(lambda d: d.warnings)),
        Route("/api/repairs", paged(lambda d: d.list_repairs)),
        Route("/api/health", json_route(lambda r: db().data_health())),
        Route("/api/ledger/verify", json_route(verify)),
    ]
    return Starlette(routes=routes)


async def serve(hub: Hub, bind: str, port: int) -> tuple[uvicorn.Server, int]:
    """Serve the API on ``bind``:``port`` (0: any free port); return the server and its port."""
    config = uvicorn.Config(
        build_app(hub), host=bind, port=port, log_level="warning", lifespan="off"
    )
    server = uvicorn.Server(config)
    task = asyncio.get_running_loop().create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()  # raises why it could not start (a busy port, say)
            raise OSError(f"HTTP server on {bind}:{port} stopped at once")
        await asyncio.sleep(0.01)
    sockets = [s for server_ in server.servers for s in server_.sockets]
    return server, int(sockets[0].getsockname()[1])
