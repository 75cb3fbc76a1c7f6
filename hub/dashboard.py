"""The dashboard: server-rendered pages over the hub's records, with live figures.

Every page is a Jinja2 template (``hub/templates``) over one snapshot read from
:class:`hub.db.Database` in a worker thread. The figures of a page sit in its live part, which
htmx fetches again every ``http.refresh`` seconds: a request carrying ``HX-Request`` gets the
live part only, so nothing reloads and the figures, the tables and the charts follow the mesh.
Charts are uPlot, drawn by ``static/dashboard.js`` from JSON the live part carries; each has a
table or a text figure beside it for people who do not see it. Every script and style is served
from ``hub/static`` (vendored and pinned, see its README): the dashboard needs no internet.

When the database does not answer, a page (or its live part) says so with status 503 and keeps
polling, so it recovers by itself when the database is back.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from sqlalchemy import exc as sa_exc
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from hub.db import Database
from hub.db_reports import Health
from hub.db_views import RECENT_EPOCHS, DeviceFilter
from lichen import ledger
from lichen.errors import IntegrityError

if TYPE_CHECKING:
    from hub.service import Hub

log = logging.getLogger("lichen.hub.dashboard")

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"
DEVICES_PER_PAGE = 50
EPOCHS_PER_PAGE = 50
STREAMS_PER_PAGE = 12
CHART_EPOCHS = 100
"""Epochs the overview and ledger charts reach back over."""
DEVICE_EPOCHS = 50
"""Epochs of proofs and rewards a device page shows."""
REPAIRS_SHOWN = 20
CAPACITY_SHOWN = 12
"""Devices in the overview's capacity chart: the online ones offering the most."""
STREAM_POINTS = 500
LEDGER_RECHECK = 300.0
"""Seconds after which the dashboard verifies an unchanged ledger again, in case its stored
records were altered in place."""
NAV = (
    ("/", "Overview"),
    ("/devices", "Devices"),
    ("/health", "Data health"),
    ("/ledger", "Ledger"),
    ("/streams", "Streams"),
)


class NotFound(Exception):
    """The page asked for names something the hub does not know."""


class BadRequest(Exception):
    """The page's query parameters are wrong."""


# -- formatting ------------------------------------------------------------------------------


def format_bytes(value: int | float | None) -> str:
    """1536 -> '1.5 KiB'."""
    if value is None or not math.isfinite(value):
        return "–"
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def format_ago(when: float | None, now: float) -> str:
    """A past moment as people say it: 'just now', '5 min ago', '3 h ago', '2 days ago'."""
    if when is None:
        return "never"
    seconds = now - when
    if not math.isfinite(seconds):
        return "–"
    if seconds < 0:
        return "in the future"
    if seconds < 10:
        return "just now"
    if seconds >= 86400:
        days = int(seconds // 86400)
        return f"{days} day{'' if days == 1 else 's'} ago"
    for size, unit in ((3600, "h"), (60, "min")):
        if seconds >= size:
            return f"{int(seconds // size)} {unit} ago"
    return f"{int(seconds)} s ago"


def format_time(when: float | None) -> str:
    """A moment in UTC, to the second."""
    if when is None or not math.isfinite(when):
        return "–"
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(when))


def format_percent(value: float | None, digits: int = 0) -> str:
    """0.873 -> '87%'; None -> '–'."""
    if value is None or not math.isfinite(value):
        return "–"
    return f"{value * 100:.{digits}f}%"


def format_number(value: float | int | None, digits: int = 0) -> str:
    """Thousands separated; None or NaN -> '–'."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, int) and not digits:
        return f"{value:,}"  # not through a float: exact beyond 2**53
    return f"{value:,.{digits}f}"


def short_id(node_id: str) -> str:
    """The start of a node id, enough to tell devices apart on a screen."""
    return node_id if len(node_id) <= 12 else node_id[:10] + "…"


# -- paging ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pager:
    """Where a paged list is, and the links to its neighbours."""

    page: int
    pages: int
    total: int
    first: int
    last: int
    base: str
    query: Mapping[str, str]

    def link(self, page: int) -> str:
        """The address of ``page`` with the same filters."""
        return f"{self.base}?{urlencode({**self.query, 'page': str(page)})}"


def page_number(request: Request) -> int:
    """The ``page`` query parameter, from 1."""
    raw = request.query_params.get("page", "1")
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 7) or not 1 <= int(raw) <= 10**6:
        raise BadRequest(f"page must be a whole number from 1, not {raw[:20]!r}")
    return int(raw)


def make_pager(request: Request, page: int, per_page: int, total: int) -> Pager:
    """The pager of a list of ``total`` items shown ``per_page`` at a time."""
    pages = max(1, -(-total // per_page))
    query = {k: v for k, v in request.query_params.items() if k != "page"}
    first = (page - 1) * per_page + 1 if total else 0
    return Pager(page, pages, total, first, min(total, page * per_page), request.url.path, query)


# -- pages -----------------------------------------------------------------------------------


def _chart(
    x: list[float], series: list[tuple[str, list[float | None]]], *, x_label: str, unit: str = ""
) -> dict[str, Any]:
    """What dashboard.js needs to draw a line chart."""
    return {
        "x": x,
        "x_label": x_label,
        "unit": unit,
        "series": [
            {"label": label, "values": [None if v is None else round(v, 6) for v in values]}
            for label, values in series
        ],
    }


def _pass_rates(figures: list[Any]) -> list[float | None]:
    return [None if f.pass_rate is None else f.pass_rate * 100 for f in figures]


@dataclass(frozen=True)
class ChainCheck:
    """The outcome of verifying the whole ledger, and what it was verified at."""

    head: bytes | None
    summary: ledger.LedgerSummary | None
    """None when the chain is broken."""
    problem: str
    at: float


class Pages:
    """What each page shows, read from the database (run in a worker thread)."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self._chain: ChainCheck | None = None
        self._chain_lock = threading.Lock()

    def chain(self) -> ChainCheck:
        """The whole ledger verified, again only when a record was added or a while passed.

        A ledger page polls every few seconds; verifying thousands of signatures each time
        would cost the hub more than everything else it does.
        """
        with self._chain_lock:
            newest = self.db.last_closed_epoch()
            head = None if newest is None else newest.record_hash
            now = time.time()
            kept = self._chain
            if kept and kept.head == head and now - kept.at < LEDGER_RECHECK:
                return kept
            records = (entry.record for entry in self.db.ledger())
            try:
                summary = ledger.verify_ledger(records, self.hub.identity.public, head=head)
                checked = ChainCheck(head, summary, "", now)
            except IntegrityError as exc:
                checked = ChainCheck(head, None, str(exc), now)
            self._chain = checked
            return checked

    @property
    def db(self) -> Database:
        assert self.hub.db is not None
        return self.hub.db

    def overview(self, request: Request) -> dict[str, Any]:
        now = time.time()
        overview = self.db.overview()
        figures = self.db.epoch_figures(CHART_EPOCHS)
        warnings = self.db.warnings(limit=10)
        top = self.db.device_rows(limit=CAPACITY_SHOWN, which=DeviceFilter.ONLINE, by_capacity=True)
        return {
            "overview": overview,
            "health_order": list(Health),
            "warnings": warnings,
            "capacity_rows": top.items,
            "readings_per_minute": self.db.readings_per_minute(now),
            "streams": self.db.stream_count(),
            "pass_chart": _chart(
                [float(f.epoch) for f in figures],
                [("pass rate", _pass_rates(figures))],
                x_label="epoch",
                unit="%",
            ),
            "latest": figures[-1] if figures else None,
        }

    def devices(self, request: Request) -> dict[str, Any]:
        page = page_number(request)
        raw = request.query_params.get("show", DeviceFilter.ALL.value)
        try:
            which = DeviceFilter(raw)
        except ValueError:
            choices = ", ".join(f.value for f in DeviceFilter)
            raise BadRequest(f"show must be one of {choices}, not {raw[:20]!r}") from None
        rows = self.db.device_rows(DEVICES_PER_PAGE, (page - 1) * DEVICES_PER_PAGE, which)
        pager = make_pager(request, page, DEVICES_PER_PAGE, rows.total)
        if page > pager.pages:
            raise NotFound(f"there is no page {page}: the list has {pager.pages}")
        top_reward = max((r.reward_total for r in rows.items), default=0)
        return {
            "recent_epochs": RECENT_EPOCHS,
            "rows": rows.items,
            "pager": pager,
            "show": which,
            "filters": list(DeviceFilter),
            "top_reward": top_reward,
        }

    def device(self, request: Request) -> dict[str, Any]:
        node_id = request.path_params["node_id"]
        detail = self.db.device_detail(node_id, DEVICE_EPOCHS)
        if detail is None:
            raise NotFound(f"no device {node_id[:80]!r} has joined this hub")
        proofs = list(reversed(detail.proofs))
        rewards = list(reversed(detail.rewards))
        return {
            "detail": detail,
            "proof_chart": _chart(
                [float(p.epoch) for p in proofs],
                [("pass rate", _pass_rates(proofs))],
                x_label="epoch",
                unit="%",
            ),
            "reward_chart": _chart(
                [float(r.epoch) for r in rewards],
                [
                    ("reward", [float(r.reward) for r in rewards]),
                    ("penalty", [float(r.penalty) for r in rewards]),
                ],
                x_label="epoch",
                unit="units",
            ),
        }

    def health(self, request: Request) -> dict[str, Any]:
        return {
            "health": self.db.data_health(REPAIRS_SHOWN),
            "health_order": list(Health),
        }

    def ledger(self, request: Request) -> dict[str, Any]:
        page = page_number(request)
        epochs = self.db.list_epochs(EPOCHS_PER_PAGE, (page - 1) * EPOCHS_PER_PAGE)
        pager = make_pager(request, page, EPOCHS_PER_PAGE, epochs.total)
        if page > pager.pages:
            raise NotFound(f"there is no page {page}: the ledger has {pager.pages}")
        figures = self.db.epoch_figures(CHART_EPOCHS)
        shown = epochs.items
        by_epoch = {
            f.epoch: f for f in (self.db.epoch_figures(len(shown), shown[0].epoch) if shown else [])
        }
        chain = self.chain()
        return {
            "epochs": epochs.items,
            "figures": {e.epoch: by_epoch.get(e.epoch) for e in epochs.items},
            "pager": pager,
            "closed": chain.head is not None,
            "verified": chain.summary is not None,
            "problem": chain.problem,
            "summary": chain.summary,
            "hub_key": self.hub.identity.public.public_key.hex(),
            "paid_chart": _chart(
                [float(f.epoch) for f in figures],
                [
                    ("paid", [float(f.reward) for f in figures]),
                    ("penalties", [float(f.penalty) for f in figures]),
                ],
                x_label="epoch",
                unit="units",
            ),
        }

    def streams(self, request: Request) -> dict[str, Any]:
        page = page_number(request)
        found = self.db.list_streams(STREAMS_PER_PAGE, (page - 1) * STREAMS_PER_PAGE)
        pager = make_pager(request, page, STREAMS_PER_PAGE, found.total)
        if page > pager.pages:
            raise NotFound(f"there is no page {page}: the list has {pager.pages}")
        cards = []
        for summary in found.items:
            readings = self.db.stream_readings(summary.device, summary.name, STREAM_POINTS)
            names = sorted({r.name for r in readings})
            units = {r.name: r.unit for r in readings}
            times = sorted({r.at for r in readings})
            column = {t: i for i, t in enumerate(times)}
            series: list[tuple[str, list[float | None]]] = []
            for name in names:
                values: list[float | None] = [None] * len(times)
                for r in readings:
                    if r.name == name:
                        values[column[r.at]] = r.value
                label = f"{name} ({units[name]})" if units[name] else name
                series.append((label, values))
            latest: dict[str, Any] = {}
            for r in readings:
                latest[r.name] = r
            cards.append(
                {
                    "summary": summary,
                    "latest": [latest[name] for name in names],
                    "chart": _chart(times, series, x_label="time") if readings else None,
                }
            )
        return {
            "cards": cards,
            "pager": pager,
            "readings_per_minute": self.db.readings_per_minute(time.time()),
        }


# -- the web side ----------------------------------------------------------------------------


def make_environment() -> Environment:
    """The Jinja2 environment of the dashboard's templates, HTML-escaping everything."""
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(["html"]),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        bytes=format_bytes,
        time=format_time,
        percent=format_percent,
        number=format_number,
        short=short_id,
    )
    return env


PageReader = Callable[[Request], dict[str, Any]]


def routes(hub: Hub) -> list[BaseRoute]:
    """The dashboard's pages and its static files, for the hub's Starlette app."""
    env = make_environment()
    pages = Pages(hub)
    refresh = hub.config.http.refresh
    outage = threading.Event()

    def render(name: str, status: int, request: Request, context: dict[str, Any]) -> Response:
        now = time.time()
        body = env.get_template(name).render(
            request=request,
            path=request.url.path,
            nav=NAV,
            refresh=refresh,
            now=now,
            ago=lambda when: format_ago(when, now),
            hub_id=hub.identity.node_id,
            **context,
        )
        headers = {"Vary": "HX-Request", "Cache-Control": "no-store"}
        return HTMLResponse(body, status_code=status, headers=headers)

    def page(template: str, read: PageReader, title: str) -> Callable[..., Any]:
        async def endpoint(request: Request) -> Response:
            live_only = request.headers.get("HX-Request") == "true"
            shown = f"{template}_live.html" if live_only else f"{template}.html"
            context: dict[str, Any] = {"title": title, "live_only": live_only}
            try:
                context |= await asyncio.to_thread(read, request)
            except (BadRequest, NotFound) as exc:
                status = 400 if isinstance(exc, BadRequest) else 404
                shown = "error_live.html" if live_only else "error.html"
                return render(shown, status, request, {**context, "problem": str(exc)})
            except sa_exc.SQLAlchemyError as exc:
                # Logged once per outage, not once per open page per refresh. The page names
                # the kind of failure only: its text has the database's address in it.
                if not outage.is_set():
                    outage.set()
                    log.warning("dashboard: the database did not answer: %s", exc)
                shown = "unavailable_live.html" if live_only else "unavailable.html"
                problem = type(exc).__name__
                return render(shown, 503, request, {**context, "problem": problem})
            if outage.is_set():
                outage.clear()
                log.info("dashboard: the database answers again")
            return render(shown, 200, request, context)

        return endpoint

    return [
        Route("/", page("overview", pages.overview, "Overview")),
        Route("/devices", page("devices", pages.devices, "Devices")),
        Route("/devices/{node_id}", page("device", pages.device, "Device")),
        Route("/health", page("health", pages.health, "Data health")),
        Route("/ledger", page("ledger", pages.ledger, "Reward ledger")),
        Route("/streams", page("streams", pages.streams, "Sensors and streams")),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
