"""Sensor readings survive ``kill -9`` of the agent: every acknowledged reading is read back,
exactly once, in the order it was acknowledged.

Two agents on loopback (each the other's static peer) seal segments of 40 readings or one
second, so segments are sealed, placed on both agents and trimmed from the write-ahead log the
whole time readings arrive. Writers in the test post one SenML+JSON reading per confirmable
CoAP POST, each with its own value and time, and count a reading as acknowledged only when its
2.04 comes back. While they write, the writing agent is killed with SIGKILL at several kinds of
moment (while a segment is being placed on the peer, just after one was sealed, at an arbitrary
ack) and restarted; then ``lichen stream read`` must return every acknowledged reading.

What else may be read back: a reading whose POST reached the agent but whose 2.04 was lost
because the agent died in between. The agent may have made it durable before dying, so it may
be there (once, in its place) or not; the writer records such readings as "unanswered" and the
check allows them and nothing else. A writer gives each POST less time than CoAP's first
retransmission (ACK_TIMEOUT, 2 s, RFC 7252 section 4.8) and then closes its client context,
because aiocoap keeps retransmitting a request whose answer nobody awaits any more: into the
restarted agent, that would store the reading a second time, out of order.
"""

from __future__ import annotations

import asyncio
import csv
import datetime
import io
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiocoap
import pytest
from aiocoap import Code, Message

from tests.agents import WAIT, AgentProc, mesh

pytestmark = pytest.mark.slow

STREAM = "kitchen.temp"
SEGMENT_READINGS = 40
ACKS_PER_ROUND = 300  # acknowledged readings between kills: several segments sealed each time
ACKS_AFTER_LAST = 100
ANSWER_TIMEOUT = 1.5  # seconds: below CoAP's first retransmission (2 to 3 s)
CT_SENML_JSON = 110
START = int(time.time()) - 7200  # reading v is timed START + v: two hours ago and after

Moment = Callable[[], Awaitable[None]]


async def _client() -> aiocoap.Context:
    return await aiocoap.Context.create_client_context(transports=["udp6"])


@dataclass
class Writer:
    """Posts readings first, first + step, ... one at a time; records what was acknowledged."""

    uri: str
    first: int = 0
    step: int = 1
    acked: list[int] = field(default_factory=list)
    unanswered: list[int] = field(default_factory=list)
    refused: list[tuple[int, str]] = field(default_factory=list)
    up: asyncio.Event = field(default_factory=asyncio.Event)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    _progress: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        context = await _client()
        try:
            value = self.first
            while not self.stop.is_set():
                await self.up.wait()
                reading = [{"n": STREAM, "v": value, "t": START + value}]
                message = Message(
                    code=Code.POST, uri=self.uri, payload=json.dumps(reading).encode()
                )
                message.opt.content_format = CT_SENML_JSON
                try:
                    answer = await asyncio.wait_for(
                        context.request(message).response, ANSWER_TIMEOUT
                    )
                except (TimeoutError, aiocoap.error.Error):
                    self.unanswered.append(value)  # lost at a kill: perhaps stored, never acked
                    await context.shutdown()  # ends aiocoap's retransmissions of it
                    context = await _client()
                else:
                    if answer.code == Code.CHANGED:
                        self.acked.append(value)
                        self._progress.set()
                    else:
                        self.refused.append((value, f"{answer.code}: {answer.payload!r}"))
                value += self.step
        finally:
            await context.shutdown()

    async def acks(self, count: int) -> None:
        """Wait until this writer has had ``count`` readings acknowledged in all."""
        async with asyncio.timeout(WAIT * 4):
            while len(self.acked) < count:
                self._progress.clear()
                await self._progress.wait()


def new_log_line(agent: AgentProc, pattern: str) -> Moment:
    """A moment: the agent logs a line matching ``pattern`` after the moment is awaited."""

    async def moment() -> None:
        since = agent.mark()  # only lines after now count; wait_for wakes on each new line
        await asyncio.to_thread(agent.wait_for, pattern, WAIT, since=since)

    return moment


async def at_once() -> None:
    """A moment: now (whatever the agent is doing)."""


def write_and_kill(
    writing: AgentProc, writers: list[Writer], kills: list[Moment], logs: Path
) -> None:
    """Run the writers; after each round of acks, kill ``writing`` at the next moment and
    restart it; finish with a round of acks and a sealed segment."""

    async def run() -> None:
        tasks = [asyncio.create_task(w.run()) for w in writers]
        for w in writers:
            w.up.set()
        try:
            for round_, moment in enumerate(kills):
                for w in writers:
                    # 7 more each round, so the kills fall at different points of a segment.
                    await w.acks(len(w.acked) + ACKS_PER_ROUND // len(writers) + 7 * round_)
                await moment()
                await asyncio.to_thread(writing.kill)
                (logs / f"writing-agent-run{round_}.log").write_text("\n".join(writing.lines))
                for w in writers:
                    w.up.clear()
                await asyncio.to_thread(writing.start)
                for w in writers:
                    w.up.set()
            for w in writers:
                await w.acks(len(w.acked) + ACKS_AFTER_LAST)
            await asyncio.to_thread(writing.wait_for, r"sealed segment")
        finally:
            for w in writers:
                w.stop.set()
                w.up.set()
            await asyncio.gather(*tasks)

    asyncio.run(run())
    for w in writers:
        assert not w.refused, w.refused
    assert writing.running


def read_values(agent: AgentProc, *options: str) -> list[int]:
    """The values ``lichen stream read --format json`` prints, checking names and times."""
    out = agent.cli("stream", "read", STREAM, "--format", "json", *options).stdout
    rows = json.loads(out)
    values = [int(row["value"]) for row in rows]
    for row, value in zip(rows, values, strict=True):
        assert row["value"] == value and row["name"] == STREAM and row["time"] == START + value
    return values


def check_read_back(values: list[int], writer: Writer) -> None:
    """Every reading ``writer`` had acknowledged is in ``values`` once, in order; anything
    else of its readings is one whose answer was lost at a kill."""
    mine = [v for v in values if v % writer.step == writer.first]
    unanswered = set(writer.unanswered)
    twice = sorted({v for v in mine if mine.count(v) > 1})
    assert not twice, f"stored twice: {twice} (unanswered: {sorted(unanswered)})"
    assert mine == sorted(mine), "readings came back out of the order they were sent in"
    acked = set(writer.acked)
    missing = sorted(acked - set(mine))
    assert not missing, f"acknowledged readings lost: {missing}"
    extra = sorted(set(mine) - acked)
    assert set(extra) <= unanswered, f"readings read back that were refused or never sent: {extra}"
    assert [v for v in mine if v in acked] == writer.acked


def _segments(agent: AgentProc) -> None:
    agent.configure("streams", "segment_readings", str(SEGMENT_READINGS))
    agent.configure("streams", "segment_seconds", "1.0")


def test_acknowledged_readings_survive_kill_9_while_segments_are_sealed(tmp_path: Path) -> None:
    with mesh(tmp_path, 2) as (writing, peer):
        # The peer first: the writing agent then verifies it at once, not at a later retry.
        for agent in (peer, writing):
            _segments(agent)
            agent.start()
        writing.wait_for(rf"peer {peer.node_id} verified")
        writer = Writer(f"coap://127.0.0.1:{writing.port}/s/{STREAM}")
        write_and_kill(
            writing,
            [writer],
            [
                new_log_line(peer, r"stored shard"),  # the peer stores a shard of a segment
                new_log_line(writing, r"sealed segment"),  # the log is being trimmed
                at_once,
            ],
            tmp_path,
        )

        values = read_values(writing)
        check_read_back(values, writer)
        assert writing.count(r"sealed segment") >= 1

        # --since: a unix time keeps exactly the readings at or after it; a relative one
        # counts back from now (every reading is between two hours and 1.5 hours old).
        middle = writer.acked[len(writer.acked) // 2]
        assert read_values(writing, "--since", str(START + middle)) == [
            v for v in values if v >= middle
        ]
        assert read_values(writing, "--since", "1h") == []
        assert read_values(writing, "--since", "3h") == values

        # CSV: a header, then the same readings in the same order, with ISO 8601 UTC times.
        out = writing.cli("stream", "read", STREAM, "--format", "csv").stdout.decode()
        table = list(csv.reader(io.StringIO(out)))
        assert table[0] == ["time", "iso_time", "name", "value", "unit"]
        assert [float(row[3]) for row in table[1:]] == [float(v) for v in values]
        for row, value in zip(table[1:], values, strict=True):
            assert float(row[0]) == START + value
            iso = datetime.datetime.fromisoformat(row[1])
            assert iso.utcoffset() == datetime.timedelta(0) and iso.timestamp() == START + value
            assert row[2] == STREAM and row[4] == ""


def test_two_sensors_writing_one_new_stream_at_once_lose_nothing(tmp_path: Path) -> None:
    """Two sensors post to the same stream concurrently, starting with its very first
    reading, so appends overlap each other, the stream's creation and every trim."""
    with mesh(tmp_path, 2) as (writing, peer):
        for agent in (peer, writing):
            _segments(agent)
            agent.start()
        writing.wait_for(rf"peer {peer.node_id} verified")
        uri = f"coap://127.0.0.1:{writing.port}/s/{STREAM}"
        writers = [Writer(uri, first=0, step=2), Writer(uri, first=1, step=2)]
        write_and_kill(
            writing,
            writers,
            [new_log_line(writing, r"sealed segment"), new_log_line(peer, r"stored shard")],
            tmp_path,
        )
        values = read_values(writing)
        assert len(values) == len(set(values)), "a reading was stored twice"
        for writer in writers:
            check_read_back(values, writer)
