"""Messages that reach the hub while its database is away are held, not lost.

A hub in the test process on PostgreSQL, a Mosquitto on loopback, and fake agents
(:mod:`tests.fakehub`) that send exactly the message the test means, when it means to. The
database goes away by refusing connections and ending every session (``ALLOW_CONNECTIONS
false``). An answer to a challenge sent then is judged when the database is back, as of when it
arrived: the device is paid, not counted absent. A hub stopped while it holds a message leaves
it unacknowledged, and the broker hands it to the next hub, which records it.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import exc as sa_exc

from hub.db import Database
from hub.db_schema import ChallengeOutcome
from hub.service import Hub
from lichen.hubmessages import Status, make_receipts
from lichen.hubwire import Name, topic
from tests.fakehub import (
    POOL,
    FakeAgent,
    agents,
    db_of,
    get_json,
    make_object,
    running_hub,
    upload,
    within,
)
from tests.mosquitto import Mosquitto, require_mosquitto
from tests.pg import Cluster, pg_cluster, pg_database, pg_url  # noqa: F401


class HubLog(logging.Handler):
    """The hub's log messages as they are written, to wait for one."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(logging.INFO)
        self.loop = loop
        self.lines: list[str] = []
        self.changed = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        line = record.getMessage()  # also from worker threads: hand it to the loop
        self.loop.call_soon_threadsafe(self._add, line)

    def _add(self, line: str) -> None:
        self.lines.append(line)
        self.changed.set()

    def mark(self) -> int:
        return len(self.lines)

    async def wait_for(self, pattern: str, since: int) -> str:
        """The first message from ``since`` on matching ``pattern``."""

        async def seek() -> str:
            at = since
            while True:
                for line in self.lines[at:]:
                    if re.search(pattern, line):
                        return line
                at = len(self.lines)
                self.changed.clear()
                await self.changed.wait()

        return await within(seek())


@contextmanager
def hub_log(loop: asyncio.AbstractEventLoop) -> Iterator[HubLog]:
    logger = logging.getLogger("lichen.hub")
    handler, level = HubLog(loop), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def test_messages_sent_while_the_database_is_away_are_held_not_lost(
    tmp_path: Path,
    pg_cluster: Cluster,  # noqa: F811
    pg_url: str,  # noqa: F811
) -> None:
    require_mosquitto()
    holders = ("early", "held", "silent")

    async def scenario(broker: Mosquitto) -> None:
        with hub_log(asyncio.get_running_loop()) as log:
            async with agents(broker.url, *holders) as a:
                held = a["held"]
                try:
                    async with running_hub(tmp_path, broker.url, pg_url) as hub:
                        await answers_during_an_outage(hub, a, log, pg_cluster, pg_url)
                        # The hub stops while it holds a status: it stays with the broker.
                        pg_cluster.allow_connections(pg_url, False)
                        since = log.mark()
                        report = Status(True, int(time.time()), b"session!", 1 << 20, 4242, 1)
                        await held.publish(Name.STATUS, report.sign(held.identity))
                        await log.wait_for(
                            f"holding the message on {topic(held.node_id, Name.STATUS)}", since
                        )
                        stopping = time.monotonic()
                    # Cut short, not waited for: the database is still away.
                    assert time.monotonic() - stopping < 5.0
                finally:
                    pg_cluster.allow_connections(pg_url, True)

            async with (
                agents(broker.url, "held") as again,
                running_hub(tmp_path, broker.url, pg_url) as hub,
            ):
                since = log.mark()
                # The broker delivers the held status to the new hub before the join (one
                # client's messages keep their order), so after the answer to the join the
                # status has been recorded.
                await again["held"].sync()
                device = db_of(hub).get_device(again["held"].node_id)
                assert device is not None and device.used_bytes == 4242, device
                assert not [line for line in log.lines[since:] if "holding" in line]

    with Mosquitto(tmp_path / "mosquitto") as broker:
        asyncio.run(scenario(broker))


async def answers_during_an_outage(
    hub: Hub, a: dict[str, FakeAgent], log: HubLog, cluster: Cluster, url: str
) -> None:
    """One object, one shard on each of three holders. In the first epoch ``early`` answers
    while the database is up, ``held`` while it is away, ``silent`` never."""
    assert hub.db is not None
    db: Database = hub.db
    holders = list(a)
    encoded = make_object(a["early"].identity, len(holders), seed=11)
    kids = [a[name].identity.kid for name in holders]
    for index, name in enumerate(holders):
        agent = a[name]
        agent.holder.add_shard(encoded.shards[index])
        assert (await agent.join()).accepted
        await agent.status()
        manifests = [upload(agent.identity, encoded, kids)] if name == "early" else []
        receipts = [agent.receipt(encoded.shards[index])]
        batch = make_receipts(agent.identity, receipts, manifests, now=time.time())
        await agent.publish(Name.RECEIPTS, batch)
        await agent.sync()
    assert len(db.object_placements(encoded.cid_text)) == len(holders)

    epoch = asyncio.create_task(hub.run_epoch())
    challenge = {name: await a[name].challenge() for name in holders}
    number = challenge["early"].epoch
    early, held = a["early"], a["held"]
    await early.publish(Name.PROOF, early.answer(challenge["early"]))
    await early.sync()

    outage = log.mark()
    cluster.allow_connections(url, False)
    try:
        sent = time.time()
        await held.publish(Name.PROOF, held.answer(challenge["held"]))
        await log.wait_for(f"holding the message on {topic(held.node_id, Name.PROOF)}", outage)
        # The deadline passes while the answer is held, and the epoch cannot be closed.
        with pytest.raises(sa_exc.OperationalError):
            await within(epoch)
    finally:
        cluster.allow_connections(url, True)
    await log.wait_for("the database answers again", outage)
    await held.sync()  # answered after the held proof was handled

    # The next epoch first closes the interrupted one, late; nobody answers it.
    since = log.mark()
    following = asyncio.create_task(hub.run_epoch())
    for name in holders:
        await a[name].challenge()
    assert await within(following) == number + 1
    await log.wait_for(rf"epoch {number} closed late", since)

    rounds = {c.device: c for c in db.epoch_challenges(number)}
    assert rounds[early.node_id].outcome is ChallengeOutcome.PASSED
    assert rounds[held.node_id].outcome is ChallengeOutcome.PASSED
    assert rounds[a["silent"].node_id].outcome is ChallengeOutcome.NO_ANSWER
    # Judged as of its arrival (before the deadline), not of the end of the outage.
    answered = rounds[held.node_id].answered_at
    assert answered is not None and sent - 1 <= answered <= rounds[held.node_id].deadline
    paid = {r.device: r.reward for r in db.epoch_rewards(number)}
    assert paid[early.node_id] == paid[held.node_id] == POOL // 2
    assert paid[a["silent"].node_id] == 0
    verified = await get_json(hub, "/api/ledger/verify")
    assert verified["verified"] is True and verified["records"] == 2, verified
