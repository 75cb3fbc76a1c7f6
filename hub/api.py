"""The hub's HTTP face: the dashboard, a JSON API over its records, ``/metrics``, ``/healthz``.

Starlette routes, served in-process by uvicorn. Every handler reads through
:class:`hub.db.Database` in a worker thread and turns the records (frozen dataclasses) into
JSON: bytes as hex, enums as their values. Lists are paged with ``?limit=&offset=``. Every
figure the dashboard (:mod:`hub.dashboard`) shows is here too. When the database does not
answer, the API says so with 503 instead of failing with 500.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import exc as sa_exc
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from hub import dashboard
from hub.db import Database
from hub.db_views import DeviceFilter, DeviceRow
from lichen import ledger
from lichen.errors import LichenError

if TYPE_CHECKING:
    from hub.service import Hub


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
    """``?limit=&offset=`` as numbers; the database checks their range (hub.db_base.check_page)."""
    query = request.query_params
    try:
        return int(query.get("limit", "100")), int(query.get("offset", "0"))
    except ValueError:
        raise ValueError("limit and offset are whole numbers") from None


def _device_row(row: DeviceRow) -> dict[str, Any]:
    """A device-list row as JSON: the device's own fields, then its figures."""
    figures = {f.name: getattr(row, f.name) for f in dataclasses.fields(row) if f.name != "device"}
    return {**to_json(row.device), **to_json(figures)}


def _unavailable(exc: sa_exc.SQLAlchemyError) -> JSONResponse:
    # The kind of failure only: the driver's message names the database's host and port.
    problem = type(exc).__name__
    return JSONResponse({"error": f"the database is not answering: {problem}"}, status_code=503)


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
            except sa_exc.SQLAlchemyError as exc:
                return _unavailable(exc)
            if found is None:
                return JSONResponse({"error": "not found"}, status_code=404)
            return JSONResponse(to_json(found))

        return endpoint

    def paged(list_fn: Callable[[Database], Callable[..., Any]]) -> Handler:
        return json_route(lambda r: list_fn(db())(*_page_args(r)))

    async def healthz(request: Request) -> Response:
        database_ok = await asyncio.to_thread(db().ping)
        broker_ok = hub.mqtt is not None and hub.mqtt.connected
        try:
            current = await asyncio.to_thread(db().current_epoch) if database_ok else None
        except sa_exc.SQLAlchemyError:
            database_ok, current = False, None
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
        # Every record, every request: an operator asking wants the answer of now, not the
        # dashboard's cached one (hub.dashboard.Pages.chain).
        records = (entry.record for entry in db().ledger())
        try:
            summary = ledger.verify_ledger(records, hub.identity.public)
        except ledger.LedgerError as exc:
            return {"verified": False, "error": str(exc), "first_bad_epoch": exc.epoch}
        return {"verified": True, "records": summary.records, "summary": to_json(summary)}

    def epoch_detail(request: Request) -> dict[str, Any] | None:
        number = request.path_params["epoch"]
        epoch = db().get_epoch(number)
        if epoch is None:
            return None
        return {"epoch": epoch, "rewards": db().epoch_rewards(number)}

    def overview(request: Request) -> dict[str, Any]:
        found = to_json(db().overview())
        found["readings_per_minute"] = db().readings_per_minute(time.time())
        return dict(found)

    def device_list(request: Request) -> dict[str, Any]:
        limit, offset = _page_args(request)
        which = DeviceFilter(request.query_params.get("show", DeviceFilter.ALL.value))
        page = db().device_rows(limit, offset, which)
        return {**to_json(page), "items": [_device_row(row) for row in page.items]}

    def epoch_figures(request: Request) -> list[Any]:
        last = int(request.query_params.get("last", str(dashboard.CHART_EPOCHS)))
        return [{**to_json(f), "pass_rate": f.pass_rate} for f in db().epoch_figures(last)]

    def stream(request: Request) -> dict[str, Any] | None:
        node_id, name = request.path_params["node_id"], request.path_params["name"]
        found = db().get_stream(node_id, name)
        if found is None:
            return None
        return {"stream": found, "readings": db().stream_readings(node_id, name)}

    routes: list[BaseRoute] = [
        Route("/healthz", healthz),
        Route("/metrics", metrics),
        Route("/api/overview", json_route(overview)),
        Route("/api/devices", json_route(device_list)),
        Route(
            "/api/devices/{node_id}",
            json_route(lambda r: db().device_detail(r.path_params["node_id"])),
        ),
        Route("/api/objects", paged(lambda d: d.list_objects)),
        Route("/api/objects/{cid}", json_route(lambda r: db().get_object(r.path_params["cid"]))),
        Route("/api/epochs", paged(lambda d: d.list_epochs)),
        Route("/api/epochs/figures", json_route(epoch_figures)),
        Route("/api/epochs/{epoch:int}", json_route(epoch_detail)),
        Route("/api/warnings", paged(lambda d: d.warnings)),
        Route("/api/repairs", paged(lambda d: d.list_repairs)),
        Route("/api/health", json_route(lambda r: db().data_health())),
        Route("/api/ledger/verify", json_route(verify)),
        Route("/api/streams", paged(lambda d: d.list_streams)),
        Route("/api/streams/{node_id}/{name}", json_route(stream)),
        *dashboard.routes(hub),
    ]
    return Starlette(routes=routes)


HTTP_STOP_TIMEOUT = 5
"""Seconds a stopping hub gives open HTTP requests to finish."""


@dataclass
class HttpServer:
    """The running HTTP server: its port, and how to stop it."""

    server: uvicorn.Server
    task: asyncio.Task[None]
    port: int

    async def stop(self) -> None:
        """Stop accepting, let open requests finish (bounded), and wait until it has ended."""
        self.server.should_exit = True
        await self.task


async def serve(hub: Hub, bind: str, port: int) -> HttpServer:
    """Serve the dashboard and API on ``bind``:``port`` (0: any free port)."""
    config = uvicorn.Config(
        build_app(hub),
        host=bind,
        port=port,
        log_level="warning",
        lifespan="off",
        timeout_graceful_shutdown=HTTP_STOP_TIMEOUT,
    )
    server = uvicorn.Server(config)
    task = asyncio.get_running_loop().create_task(server.serve())
    # uvicorn has no event for "listening": its flag is polled until it is set.
    while not server.started:
        if task.done():
            task.result()  # raises why it could not start (a busy port, say)
            raise OSError(f"HTTP server on {bind}:{port} stopped at once")
        await asyncio.sleep(0.01)
    sockets = [s for server_ in server.servers for s in server_.sockets]
    return HttpServer(server, task, int(sockets[0].getsockname()[1]))
