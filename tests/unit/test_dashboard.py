"""The dashboard (hub.dashboard and hub/templates): formatting, paging, pages rendered over a real
SQLite database by calling the Starlette app through ASGI directly (no httpx, no sockets)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import shutil
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast
from urllib.parse import quote, unquote

import pytest
from sqlalchemy import exc as sa_exc
from sqlalchemy import insert, select, update
from starlette.applications import Starlette
from starlette.requests import Request

from hub import api, dashboard
from hub.config import HubConfig
from hub.dashboard import (
    BadRequest,
    Pager,
    format_ago,
    format_bytes,
    format_number,
    format_percent,
    format_time,
    make_pager,
    page_number,
    short_id,
)
from hub.db import DB_FILE, Database, default_url
from hub.db_reports import Overview
from hub.db_schema import epochs, readings, streams
from lichen import ledger
from lichen.identity import Identity
from lichen.proofs import Reason
from lichen.rewards import DeviceReward, Outcome, RewardPolicy, Standing, State, epoch_rewards
from lichen.streamreport import ReportedReading, StreamFigures, StreamReport
from tests.hubdb import bulk_mesh, enroll, make_object, place, result

HUB = Identity(bytes(range(32)))
T0 = 1_700_000_000.0
SCRIPT = "<script>alert(1)</script>"
PAGES = ("/", "/devices", "/health", "/ledger", "/streams")
FILTERS = ("all", "online", "offline", "warned", "revoked")
VENDOR = dashboard.STATIC / "vendor"
UNAVAILABLE = "The database is not answering"


# -- formatting ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (None, "–"),
        (0, "0 B"),
        (1, "1 B"),
        (1023, "1023 B"),
        (1024, "1.0 KiB"),
        (1536, "1.5 KiB"),
        (5 * 1024**2, "5.0 MiB"),
        (3 * 1024**3 // 2, "1.5 GiB"),
        (1024**4, "1.0 TiB"),
        (1024**5, "1024.0 TiB"),  # nothing above TiB
        (-1536, "-1.5 KiB"),
        (0.4, "0 B"),
    ],
)
def test_format_bytes(value: float | None, shown: str) -> None:
    assert format_bytes(value) == shown


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (0, "just now"),
        (9.9, "just now"),
        (10, "10 s ago"),
        (59.9, "59 s ago"),
        (60, "1 min ago"),
        (3599, "59 min ago"),
        (3600, "1 h ago"),
        (86399, "23 h ago"),
        (2 * 86400 + 5, "2 days ago"),
        (T0, "19675 days ago"),
        (-0.001, "in the future"),
        (-86400, "in the future"),
    ],
)
def test_format_ago(seconds: float, shown: str) -> None:
    assert format_ago(T0 - seconds, T0) == shown


def test_format_ago_of_never() -> None:
    assert format_ago(None, T0) == "never"
    assert format_ago(0.0, 0.0) == "just now"


@pytest.mark.parametrize(
    ("when", "shown"),
    [
        (None, "–"),
        (0, "1970-01-01 00:00:00 UTC"),
        (0.0, "1970-01-01 00:00:00 UTC"),
        (T0, "2023-11-14 22:13:20 UTC"),
        (T0 + 0.999, "2023-11-14 22:13:20 UTC"),  # to the second, not rounded up
        (-1, "1969-12-31 23:59:59 UTC"),
    ],
)
def test_format_time(when: float | None, shown: str) -> None:
    assert format_time(when) == shown


@pytest.mark.parametrize(
    ("value", "digits", "shown"),
    [
        (None, 0, "–"),
        (None, 2, "–"),
        (0, 0, "0%"),
        (0.0, 1, "0.0%"),
        (1, 0, "100%"),
        (0.873, 0, "87%"),
        (0.5, 1, "50.0%"),
        (0.125, 2, "12.50%"),
        (-0.25, 0, "-25%"),
    ],
)
def test_format_percent(value: float | None, digits: int, shown: str) -> None:
    assert format_percent(value, digits) == shown


@pytest.mark.parametrize(
    ("value", "digits", "shown"),
    [
        (None, 0, "–"),
        (float("nan"), 0, "–"),
        (float("nan"), 2, "–"),
        (float("inf"), 0, "–"),
        (float("-inf"), 1, "–"),
        (0, 0, "0"),
        (0.0, 1, "0.0"),
        (999, 0, "999"),
        (1234567, 0, "1,234,567"),
        (-1234, 0, "-1,234"),
        (1234.5678, 2, "1,234.57"),
        (10**15, 0, "1,000,000,000,000,000"),
    ],
)
def test_format_number(value: float | None, digits: int, shown: str) -> None:
    assert format_number(value, digits) == shown


def test_short_id() -> None:
    node = HUB.node_id
    assert len(node) > 12
    assert short_id(node) == node[:10] + "…"
    assert short_id("") == ""
    assert short_id("x" * 12) == "x" * 12
    assert short_id("x" * 13) == "x" * 10 + "…"


# -- paging ----------------------------------------------------------------------------------


def make_request(target: str) -> Request:
    path, _, query = target.partition("?")
    return Request(
        {
            "type": "http",
            "method": "GET",
            "scheme": "http",
            "server": ("testserver", 80),
            "root_path": "",
            "path": path,
            "raw_path": path.encode(),
            "query_string": query.encode(),
            "headers": [(b"host", b"testserver")],
        }
    )


@pytest.mark.parametrize(
    ("query", "number"),
    [("", 1), ("page=1", 1), ("page=7", 7), ("page=0007", 7), ("page=1000000", 10**6)],
)
def test_page_number(query: str, number: int) -> None:
    assert page_number(make_request(f"/devices?{query}")) == number


@pytest.mark.parametrize(
    "raw",
    [
        "abc",
        "0",
        "-1",
        "",
        "1.5",
        "+1",
        " 1",
        "1e3",
        "1000001",
        "9" * 30,
        "9" * 5000,  # more digits than int() converts (sys.get_int_max_str_digits)
        "²",  # str.isdigit() says yes, int() says no
        "٣",  # an Arabic-Indic digit: not a page number in a URL
    ],
)
def test_page_number_refuses(raw: str) -> None:
    with pytest.raises(BadRequest, match="page must be a whole number"):
        page_number(make_request(f"/devices?page={quote(raw)}"))


def test_pager_links_keep_the_other_parameters() -> None:
    request = make_request("/devices?show=warned&page=3&x=a%26b%20c")
    pager = make_pager(request, 3, 50, 260)
    assert (pager.page, pager.pages, pager.total, pager.first, pager.last) == (3, 6, 260, 101, 150)
    assert (pager.base, dict(pager.query)) == ("/devices", {"show": "warned", "x": "a&b c"})
    assert pager.link(4) == "/devices?show=warned&x=a%26b+c&page=4"
    assert pager.link(1) == "/devices?show=warned&x=a%26b+c&page=1"
    bare = make_pager(make_request("/ledger"), 1, 50, 50)
    assert bare.link(2) == "/ledger?page=2"


@pytest.mark.parametrize(
    ("page", "total", "expected"),
    [
        (1, 0, (1, 0, 0)),  # an empty list is one page with nothing on it
        (1, 1, (1, 1, 1)),
        (1, 50, (1, 1, 50)),
        (2, 51, (2, 51, 51)),
        (6, 260, (6, 251, 260)),
    ],
)
def test_pager_counts(page: int, total: int, expected: tuple[int, int, int]) -> None:
    pager = make_pager(make_request("/devices"), page, 50, total)
    assert isinstance(pager, Pager)
    assert (pager.pages, pager.first, pager.last) == expected


# -- the vendored files: pinned, and nothing from a CDN --------------------------------------


def vendored() -> dict[str, str]:
    """File name -> sha256, from the table in hub/static/vendor/README.md."""
    table = (VENDOR / "README.md").read_text()
    rows = re.findall(r"^\| `([^`]+)` \|.*\| `([0-9a-f]{64})` \|$", table, re.MULTILINE)
    return dict(rows)


def test_vendored_files_match_their_digests() -> None:
    pinned = vendored()
    assert set(pinned) == {
        "htmx-2.0.11.min.js",
        "uPlot-1.6.32.iife.min.js",
        "uPlot-1.6.32.min.css",
    }
    for name, digest in pinned.items():
        assert hashlib.sha256((VENDOR / name).read_bytes()).hexdigest() == digest, name
    on_disk = {p.name for p in VENDOR.iterdir() if p.name != "README.md"}
    assert on_disk - set(pinned) == {"LICENSE.htmx", "LICENSE.uPlot"}


def test_base_html_loads_exactly_the_vendored_files() -> None:
    base = (dashboard.TEMPLATES / "base.html").read_text()
    loaded = set(re.findall(r'(?:src|href)="/static/vendor/([^"]+)"', base))
    assert loaded == set(vendored())
    local = set(re.findall(r'(?:src|href)="(/static/[^"]+)"', base))
    for address in local:
        assert (dashboard.STATIC / address.removeprefix("/static/")).is_file(), address


def test_nothing_is_fetched_from_another_site() -> None:
    files = [*dashboard.TEMPLATES.glob("*.html"), *dashboard.STATIC.glob("dashboard.*")]
    assert len(files) >= 15
    for path in files:
        text = path.read_text()
        assert not re.search(r"https?://", text), path.name
        assert not re.search(r"""(?:src|href)=["']//""", text), path.name  # scheme-relative


# -- calling the app -------------------------------------------------------------------------


@dataclass
class StubHub:
    """What dashboard.routes and api.build_app read of a Hub."""

    db: Database | None
    identity: Identity = HUB
    config: HubConfig = field(default_factory=HubConfig)


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode()


async def _call(app: Starlette, target: str, headers: dict[str, str]) -> Answer:
    raw_path, _, query = target.partition("?")
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "server": ("testserver", 80),
        "client": ("127.0.0.1", 50000),
        "root_path": "",
        "path": unquote(raw_path),
        "raw_path": raw_path.encode(),
        "query_string": query.encode(),
        "headers": [(b"host", b"testserver")]
        + [(k.lower().encode(), v.encode()) for k, v in headers.items()],
    }
    started: dict[str, Any] = {}
    body: list[bytes] = []
    finished = asyncio.Event()
    asked = False

    async def receive() -> dict[str, Any]:
        nonlocal asked
        if not asked:
            asked = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await finished.wait()
        return {"type": "http.disconnect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            started.update(message)
        elif message["type"] == "http.response.body":
            body.append(message.get("body", b""))
            if not message.get("more_body", False):
                finished.set()

    await asyncio.wait_for(app(scope, receive, send), timeout=10)
    assert finished.is_set()
    found = {k.decode().lower(): v.decode() for k, v in started["headers"]}
    return Answer(started["status"], found, b"".join(body))


def get(app: Starlette, target: str, *, live: bool = False) -> Answer:
    return asyncio.run(_call(app, target, {"HX-Request": "true"} if live else {}))


def dashboard_app(db: Database) -> Starlette:
    return Starlette(routes=dashboard.routes(cast(Any, StubHub(db))))


def assert_full_page(answer: Answer, *, live: bool = True) -> None:
    assert answer.headers["content-type"].startswith("text/html")
    assert answer.text.startswith("<!doctype html>") and "<html" in answer.text
    assert answer.text.rstrip().endswith("</html>")
    assert ('<div id="live"' in answer.text) is live  # an error page does not poll
    assert answer.headers["cache-control"] == "no-store"
    assert answer.headers["vary"] == "HX-Request"


def assert_live_part(answer: Answer) -> None:
    assert answer.text.startswith('<div id="live"'), answer.text[:80]
    assert "<html" not in answer.text and "<!doctype" not in answer.text
    assert answer.text.rstrip().endswith("</div>")


# -- databases ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Seeded:
    evil: str
    pi: str
    idle: str
    repair_detail: str = "<b>repair</b> failed"


def seed(db: Database) -> Seeded:
    """Three devices (one named like a script), two epochs closed with real signed records
    (the chain verifies), a third open, a stream with readings, a hostile stream, a repair."""
    evil = enroll(db, 1, name=SCRIPT)
    pi = enroll(db, 2, name="pi")
    idle = enroll(db, 3, name="idle")
    db.update_presence(evil, online=True, now=T0, used_bytes=600, address="10.0.0.2:5683")
    db.update_presence(pi, online=True, now=T0, used_bytes=300)
    obj = make_object(1)
    db.record_object(obj, T0)
    place(db, obj, 0, evil)
    place(db, obj, 1, pi)
    policy = RewardPolicy(pool=1_000_000, penalty_per_missed_answer=7)
    for epoch in (1, 2):
        start = T0 + epoch * 60
        db.open_epoch(epoch, start, start + 30)
        db.record_challenge(epoch, evil, b"c", start, start + 30)
        db.record_challenge(epoch, pi, b"c", start, start + 30)
        db.record_answer(epoch, evil, result(epoch, 1, obj, [Reason.OK]), start + 1)
        db.expire_challenges(epoch)  # pi never answers: warned
        out = epoch_rewards(epoch, 60, policy, db.proof_inputs(epoch), db.standings())
        previous = db.last_closed_epoch()
        head = (
            ledger.ChainHead(previous.epoch, previous.started, previous.record_hash)
            if previous and previous.record_hash
            else None
        )
        record = ledger.make_record(HUB, head, out, start, start + 59)
        db.close_epoch(
            epoch,
            start + 59,
            record,
            ledger.record_hash(record),
            previous.record_hash if previous and previous.record_hash else bytes(32),
            out.devices,
        )
    db.open_epoch(3, T0 + 180, T0 + 210)
    shared = (
        ReportedReading(T0 - 1, "sensor1:temp", 20.5, "Cel"),
        ReportedReading(T0, "sensor1:temp", 21.0, "Cel"),
    )
    report = StreamReport(int(T0), (StreamFigures("kitchen.temp", 2, T0, shared),))
    assert db.record_stream_report(evil, report, T0) == 2
    # An agent cannot report these names (hubmessages refuses them); the page must not trust
    # the database to have checked either.
    with db.engine.begin() as conn:
        conn.execute(
            insert(streams).values(
                device=pi, name="<b>stream</b>", readings_total=1, newest_at=T0, updated_at=T0
            )
        )
        conn.execute(
            insert(readings).values(
                device=pi, stream="<b>stream</b>", at=T0, name="<b>reading</b>", value=1.0, unit=""
            )
        )
    repair = db.create_repair(obj.cid, [2], evil, [(2, pi)], T0)
    db.finish_repair(repair, T0 + 1, ok=False, detail=Seeded.repair_detail)
    return Seeded(evil, pi, idle)


@pytest.fixture(scope="module")
def seeded_template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Seeded]:
    path = tmp_path_factory.mktemp("seeded")
    with Database.open(default_url(path)) as database:
        database.upgrade()
        mesh = seed(database)
    return path / DB_FILE, mesh


@pytest.fixture
def seeded(
    seeded_template: tuple[Path, Seeded], tmp_path: Path
) -> Iterator[tuple[Database, Seeded]]:
    template, mesh = seeded_template
    shutil.copyfile(template, tmp_path / DB_FILE)
    with Database.open(default_url(tmp_path)) as database:
        yield database, mesh


# -- pages ---------------------------------------------------------------------------------


def test_every_page_answers_on_an_empty_database(sqlite_db: Database) -> None:
    app = dashboard_app(sqlite_db)
    targets = [*PAGES, *(f"/devices?show={f}" for f in FILTERS), "/devices?page=1"]
    for target in targets:
        full = get(app, target)
        assert full.status == 200, (target, full.text)
        assert_full_page(full)
        live = get(app, target, live=True)
        assert live.status == 200, target
        assert_live_part(live)
    assert "No devices yet" in get(app, "/").text
    assert "No devices yet" in get(app, "/devices").text
    assert "No device is warned." in get(app, "/devices?show=warned").text
    assert "No records yet" in get(app, "/ledger").text
    assert "No streams yet" in get(app, "/streams").text


def test_every_page_answers_on_seeded_data(seeded: tuple[Database, Seeded]) -> None:
    db, mesh = seeded
    app = dashboard_app(db)
    targets = [
        *PAGES,
        *(f"/devices?show={f}" for f in FILTERS),
        *(f"/devices/{node}" for node in (mesh.evil, mesh.pi, mesh.idle)),
    ]
    for target in targets:
        full = get(app, target)
        assert full.status == 200, (target, full.text)
        assert_full_page(full)
        live = get(app, target, live=True)
        assert live.status == 200, target
        assert_live_part(live)
    overview = get(app, "/").text
    assert 'data-figure="online">2<' in overview and 'data-figure="devices">3<' in overview
    assert "#3" in overview and 'id="pass-chart"' in overview
    ledger_page = get(app, "/ledger").text
    assert "Chain verified" in ledger_page and HUB.public.public_key.hex() in ledger_page
    devices = get(app, "/devices").text
    assert devices.count("<tr data-node=") == 3
    assert get(app, "/devices?show=warned").text.count("<tr data-node=") == 1
    streams_page = get(app, "/streams").text
    assert "kitchen.temp" in streams_page and "sensor1:temp" in streams_page
    assert "21.00 Cel" in streams_page


def test_charts_carry_their_data_as_json(seeded: tuple[Database, Seeded]) -> None:
    db, mesh = seeded
    page = get(dashboard_app(db), f"/devices/{mesh.evil}").text
    (raw,) = re.findall(r'id="proof-chart"[^>]*data-chart="([^"]*)"', page)
    chart = json.loads(raw.replace("&#34;", '"').replace("&#39;", "'").replace("&amp;", "&"))
    assert chart["x"] == [1.0, 2.0] and chart["unit"] == "%"
    assert chart["series"] == [{"label": "pass rate", "values": [100.0, 100.0]}]


def test_hostile_names_are_escaped(seeded: tuple[Database, Seeded]) -> None:
    db, mesh = seeded
    app = dashboard_app(db)
    for target in ("/", "/devices", f"/devices/{mesh.evil}", "/streams", "/health"):
        for live in (False, True):
            page = get(app, target, live=live)
            assert page.status == 200
            assert SCRIPT not in page.text and "<script>alert" not in page.text, target
            assert "<b>" not in page.text, target
    escaped = "&lt;script&gt;alert(1)&lt;/script&gt;"
    assert escaped in get(app, "/devices").text
    assert escaped in get(app, "/").text  # in the capacity table
    assert f"<h1>{escaped}</h1>" in get(app, f"/devices/{mesh.evil}").text
    streams_page = get(app, "/streams").text
    assert "&lt;b&gt;stream&lt;/b&gt;" in streams_page
    assert "&lt;b&gt;reading&lt;/b&gt;" in streams_page
    assert escaped in streams_page  # the device name beside the stream
    assert "&lt;b&gt;repair&lt;/b&gt; failed" in get(app, "/health").text


def test_hostile_reasons_are_escaped(seeded: tuple[Database, Seeded]) -> None:
    db, mesh = seeded
    reason = "<b>late</b> & <img src=x onerror=alert(2)>"
    warned = DeviceReward(
        mesh.pi,
        Standing(State.WARNED, 2),
        Standing(State.WARNED, 3),
        Outcome.NO_ANSWER,
        0,
        0,
        0,
        0,
        0,
        0,
        (reason,),
    )
    db.close_epoch(3, T0 + 239, b"not a signed record", b"h" * 32, b"p" * 32, [warned])
    app = dashboard_app(db)
    shown = "&lt;b&gt;late&lt;/b&gt; &amp; &lt;img src=x onerror=alert(2)&gt;"
    for target in ("/", "/devices", "/devices?show=warned", f"/devices/{mesh.pi}", "/ledger"):
        page = get(app, target)
        assert page.status == 200
        assert "<b>" not in page.text and "<img" not in page.text, target
        if target != "/ledger":
            assert shown in page.text, target
    ledger_page = get(app, "/ledger").text
    assert "Chain broken" in ledger_page  # the forged record does not verify


def test_device_list_pages_keep_the_filter(sqlite_db: Database) -> None:
    bulk_mesh(sqlite_db, 1, 120)  # 60 online: two pages of 50
    app = dashboard_app(sqlite_db)
    first = get(app, "/devices?show=online").text
    assert first.count("<tr data-node=") == 50
    assert 'href="/devices?show=online&amp;page=2" rel="next"' in first
    assert "1–50 of 60 devices" in first
    second = get(app, "/devices?show=online&page=2")
    assert second.status == 200 and second.text.count("<tr data-node=") == 10
    assert 'href="/devices?show=online&amp;page=1" rel="prev"' in second.text
    assert get(app, "/devices?show=online&page=3").status == 404
    assert get(app, "/devices?page=3").status == 200  # 120 devices in all


# -- errors ----------------------------------------------------------------------------------


def test_unknown_device_is_a_404_page(seeded: tuple[Database, Seeded]) -> None:
    app = dashboard_app(seeded[0])
    hostile = "<img src=x onerror=alert(1)>"
    for target in ("/devices/NOSUCHDEVICE", f"/devices/{quote(hostile, safe='')}"):
        page = get(app, target)
        assert page.status == 404
        assert_full_page(page, live=False)
        assert "That did not work" in page.text and "has joined this hub" in page.text
        assert "<img" not in page.text
        live = get(app, target, live=True)
        assert live.status == 404
        assert_live_part(live)
    assert "&lt;img src=x onerror=alert(1)&gt;" in get(app, target).text


@pytest.mark.parametrize(
    "target",
    [
        "/devices?page=abc",
        "/devices?page=0",
        "/devices?page=-1",
        "/devices?page=1000001",
        "/devices?page=" + "9" * 5000,
        "/devices?page=%C2%B2",  # '²'
        "/ledger?page=abc",
        "/streams?page=abc",
        "/devices?show=bogus",
        "/devices?show=ALL",
        "/devices?show=%3Cscript%3E",
    ],
)
def test_bad_parameters_are_a_400_page(sqlite_db: Database, target: str) -> None:
    app = dashboard_app(sqlite_db)
    page = get(app, target)
    assert page.status == 400, page.text[:300]
    assert_full_page(page, live=False)
    assert "That did not work" in page.text
    assert "<script>" not in page.text
    live = get(app, target, live=True)
    assert live.status == 400
    assert_live_part(live)


@pytest.mark.parametrize("target", ["/devices?page=2", "/ledger?page=2", "/streams?page=2"])
def test_a_page_past_the_end_is_a_404(sqlite_db: Database, target: str) -> None:
    assert get(dashboard_app(sqlite_db), target).status == 404


class SilentDatabase(Database):
    """A database whose overview fails the way a lost connection does."""

    def overview(self) -> Overview:
        raise sa_exc.OperationalError("SELECT 1", {}, Exception("server closed the connection"))


def test_a_failing_query_is_a_503_that_keeps_polling(
    sqlite_template: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    shutil.copyfile(sqlite_template, tmp_path / DB_FILE)
    with SilentDatabase.open(default_url(tmp_path)) as db:
        assert isinstance(db, SilentDatabase)
        app = dashboard_app(db)
        page = get(app, "/")
        assert page.status == 503
        assert_full_page(page)
        assert UNAVAILABLE in page.text and "OperationalError" in page.text
        assert 'hx-trigger="every 5.0s"' in page.text  # it keeps asking, so it recovers
        live = get(app, "/", live=True)
        assert live.status == 503
        assert_live_part(live)
        assert UNAVAILABLE in live.text
        assert get(app, "/devices").status == 200  # pages that do not read it still work
        answer = get(api.build_app(cast(Any, StubHub(db))), "/api/overview")
        assert answer.status == 503
        assert answer.headers["content-type"] == "application/json"
        body = json.loads(answer.body)
        assert body["error"].startswith("the database is not answering")
        # The kind of failure only: a driver's message names the database's host and port.
        assert "server closed" not in body["error"] and "server closed" not in page.text
    # Logged once for the outage, not once per page and refresh.
    said = [r.getMessage() for r in caplog.records if r.name == "lichen.hub.dashboard"]
    assert len([m for m in said if "did not answer" in m]) == 1, said


def test_the_end_of_an_outage_is_logged_once(
    sqlite_template: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="lichen.hub.dashboard")
    shutil.copyfile(sqlite_template, tmp_path / DB_FILE)
    with SilentDatabase.open(default_url(tmp_path)) as db:
        app = dashboard_app(db)
        assert get(app, "/").status == 503
        assert get(app, "/devices").status == 200
        assert get(app, "/devices").status == 200
    said = [r.getMessage() for r in caplog.records if r.name == "lichen.hub.dashboard"]
    assert said == [said[0], "dashboard: the database answers again"], said


@pytest.mark.parametrize(
    "query", ["limit=0", "limit=1001", "limit=abc", "offset=-1", "offset=1.5", "limit=1e3"]
)
def test_api_paging_refuses_bad_numbers(sqlite_db: Database, query: str) -> None:
    answer = get(api.build_app(cast(Any, StubHub(sqlite_db))), f"/api/devices?{query}")
    assert answer.status == 400, query
    assert json.loads(answer.body)["error"]


def test_a_tampered_ledger_is_shown_broken(seeded: tuple[Database, Seeded]) -> None:
    db, _ = seeded
    with db.engine.begin() as conn:
        record = conn.execute(select(epochs.c.record).where(epochs.c.epoch == 1)).scalar_one()
        altered = bytes(record[:-1]) + bytes([record[-1] ^ 1])  # one bit of the signature
        conn.execute(update(epochs).where(epochs.c.epoch == 1).values(record=altered))
    page = get(dashboard_app(db), "/ledger")
    assert page.status == 200
    assert "Chain broken" in page.text and "Chain verified" not in page.text
    answer = json.loads(get(api.build_app(cast(Any, StubHub(db))), "/api/ledger/verify").body)
    assert answer["verified"] is False and answer["first_bad_epoch"] == 1


def test_a_lost_database_file_is_a_503_everywhere(seeded: tuple[Database, Seeded]) -> None:
    db, mesh = seeded
    app = dashboard_app(db)
    api_app = api.build_app(cast(Any, StubHub(db)))
    assert get(app, "/").status == 200 and get(api_app, "/api/overview").status == 200
    db.close()
    path = Path(str(db.engine.url.database))
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    path.parent.rmdir()  # SQLite cannot even make a new, empty file there
    for target in (*PAGES, f"/devices/{mesh.evil}"):
        page = get(app, target)
        assert page.status == 503, target
        assert_full_page(page)
        assert UNAVAILABLE in page.text
        live = get(app, target, live=True)
        assert live.status == 503, target
        assert_live_part(live)
        assert UNAVAILABLE in live.text
    answer = get(api_app, "/api/overview")
    assert answer.status == 503 and "not answering" in json.loads(answer.body)["error"]


def test_static_files_are_served(sqlite_db: Database) -> None:
    app = dashboard_app(sqlite_db)
    for name in vendored():
        answer = get(app, f"/static/vendor/{name}")
        assert answer.status == 200
        assert answer.body == (VENDOR / name).read_bytes()
    assert get(app, "/static/dashboard.js").status == 200
    assert get(app, "/static/nothing.js").status == 404
