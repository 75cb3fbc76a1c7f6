"""The hub service: MQTT messages in, the core's decisions, records out.

:class:`Hub` feeds what agents publish (joins, presence, receipts, proofs, repair reports,
stream reports) through the core's checks (:mod:`lichen.hubwire`) into the database, and runs
the epoch loop: plan and send challenges, judge answers as they arrive (:mod:`lichen.audit`),
close the epoch with rewards (:mod:`lichen.rewards`) in a signed, hash-chained ledger record
(:mod:`lichen.ledger`), then mark lost shards and order repairs (:mod:`lichen.repair`).
Every decision is the core's; this module moves bytes and rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import exc as sa_exc

from edge_agent import fsutil, keys
from edge_agent.logs import NodeLog
from edge_agent.mqtt import Message, MqttClient, settings_for
from edge_agent.tasks import BackgroundTasks
from hub import metrics as hub_metrics
from hub.broker import EmbeddedBroker
from hub.config import HubConfig
from hub.db import UNAVAILABLE, Database, default_url
from hub.db_base import MAX_PAGE
from hub.db_records import Device, ObjectRecord, ParkedReceipt, PlacementRecord
from hub.db_schema import PlacementState
from lichen import (
    audit,
    cid,
    hubmessages,
    hubwire,
    ledger,
    proofs,
    repair,
    rewards,
    streamreport,
)
from lichen.errors import (
    BadMac,
    BadSignature,
    ConfigError,
    LichenError,
    LocalProtocolError,
    MalformedMessage,
    ProofRejected,
    Refused,
    RemoteProtocolError,
)
from lichen.identity import Identity, PublicIdentity, format_node_id, parse_node_id
from lichen.manifest import (
    Manifest,
    check_receipt_matches,
    open_manifest,
    parse_receipt_unverified,
)

if TYPE_CHECKING:
    from hub.api import HttpServer

log = logging.getLogger("lichen.hub")

HUB_KEY_FILE = "hub.key"
TOKEN_FILE = "join.token"
RUNTIME_FILE = "hub.run"  # "<http port> <mqtt url>\n": how local commands find a running hub
_KEY_MAGIC = b"lichen-hub-key/1\n"
REPAIR_DEADLINE = 600  # seconds a repairer has before the hub may choose another
# An epoch stays open this long after its challenges' deadline, so an answer that comes in just
# after it is judged (and recorded) as late rather than counted as no answer at all.
LATE_GRACE = 1.0
# Receipts one holder may have waiting for their objects' manifests. Owners upload a manifest
# as soon as its shards are placed, so only an owner offline for long leaves many; past this
# the holder is flooding the hub with receipts for objects nobody recorded.
MAX_PARKED_PER_HOLDER = 4096
MANIFEST_CACHE = 1024  # opened manifests kept; about 15 KiB each at most
# A parked receipt whose manifest has not come in this long never will (its owner gave up
# the upload, or it was made up): dropped, so it stops counting against MAX_PARKED_PER_HOLDER.
PARKED_TTL = 7 * 86400.0
# Challenges handed to the MQTT client at once: far below its queue
# (edge_agent.mqtt.DEFAULT_MAX_QUEUED), past which a publish fails rather than waits.
PUBLISH_WINDOW = 256
# A message that finds the database away is held and handled again, after these seconds
# (doubling from the first to the last), until the database answers: a proof sent during an
# outage is judged when it ends, rather than lost and counted as no answer.
HOLD_RETRY_FIRST = 0.25
HOLD_RETRY_MAX = 4.0


def create_keys(data_dir: Path) -> tuple[Identity, str]:
    """A new hub identity and join token in ``data_dir`` (files of mode 0600)."""
    seed = keys.create_seed(data_dir / HUB_KEY_FILE, _KEY_MAGIC)
    token = hubmessages.new_token(os.urandom(32))
    fsutil.write_secret(data_dir / TOKEN_FILE, token.encode())
    return Identity(seed), token


def load_keys(data_dir: Path) -> tuple[Identity, str]:
    """The hub identity and join token stored in ``data_dir``; :class:`ConfigError` if either
    is missing or damaged, or the key is readable by others (it signs the ledger)."""
    init = f"lichen hub init --data-dir {data_dir}"
    seed = keys.load_seed(data_dir / HUB_KEY_FILE, _KEY_MAGIC, init)
    try:
        token = fsutil.read_bounded(data_dir / TOKEN_FILE, 256).decode().strip()
    except (OSError, MalformedMessage, UnicodeDecodeError) as exc:
        raise ConfigError(f"{data_dir / TOKEN_FILE}: no join token ({exc}); run '{init}'") from None
    return Identity(seed), token


@dataclass(frozen=True)
class _Arrival:
    """When a message reached the hub, and the epoch open then: a message held through a
    database outage is judged as of its arrival, not of the outage's end."""

    at: float
    epoch: _OpenEpoch | None


@dataclass
class _OpenEpoch:
    epoch: int
    started: float
    deadline: float
    challenges: dict[str, proofs.Challenge]
    placements: dict[str, list[audit.Placement]]
    """What each challenge was planned from: its answer is judged against these roots."""


class Hub:
    """One running hub."""

    def __init__(self, data_dir: Path, config: HubConfig, identity: Identity, token: str) -> None:
        self.data_dir = data_dir
        self.config = config
        self.identity = identity
        self.token = token
        self.metrics = hub_metrics.HubMetrics()
        self.db: Database | None = None
        self.mqtt: MqttClient | None = None
        self.broker: EmbeddedBroker | None = None
        self.broker_url = config.mqtt.broker_url
        self.http_port = 0
        self._open: _OpenEpoch | None = None
        self._http: HttpServer | None = None
        self.epochs_run = asyncio.Event()
        self.log = NodeLog(log, identity.node_id)
        self._tasks = BackgroundTasks(self.log, "hub")
        self._manifests: dict[str, Manifest] = {}

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self, *, epoch_loop: bool = True) -> None:
        """Open the database, the broker link and the HTTP API; start the epoch loop.

        With ``epoch_loop=False`` no epoch runs by itself: the caller runs each one with
        :meth:`run_epoch` (tests that step epochs).
        """
        url = self.config.database.url or default_url(self.data_dir)
        self.db = await asyncio.to_thread(Database.open, url)
        await asyncio.to_thread(self.db.upgrade)
        if not self.broker_url:
            self.broker = EmbeddedBroker(
                self.config.mqtt.bind, self.config.mqtt.port, allow_anonymous=True
            )
            await self.broker.start()
            self.broker_url = self.broker.url
        self.mqtt = MqttClient(settings_for(self.broker_url, f"lichen-hub-{self.identity.node_id}"))
        # Routes first: what agents sent while the hub was away (kept by the broker for the
        # hub's persistent session) arrives the moment it connects, and must find a handler.
        for pattern in hubwire.hub_subscriptions():
            await self.mqtt.subscribe(pattern, self._on_message)
        await self.mqtt.connect()
        from hub import api

        self._http = await api.serve(self, self.config.http.bind, self.config.http.port)
        self.http_port = self._http.port
        if epoch_loop:
            self._tasks.spawn(self._epoch_loop())
        await asyncio.to_thread(
            fsutil.atomic_write,
            self.data_dir / RUNTIME_FILE,
            f"{self.http_port} {self.broker_url}\n".encode(),
        )
        self.log.info(
            "hub %s ready: API on http://%s:%d, MQTT %s, database %s",
            self.identity.node_id,
            self.config.http.bind,
            self.http_port,
            self.broker_url,
            self.db.dialect,
        )

    async def stop(self) -> None:
        """Stop the loop and close everything."""
        await self._tasks.cancel_all()
        if self._http is not None:
            await self._http.stop()
        if self.mqtt is not None:
            await self.mqtt.disconnect()
        if self.broker is not None:
            await self.broker.stop()
        if self.db is not None:
            self.db.close()
        with contextlib.suppress(FileNotFoundError):
            (self.data_dir / RUNTIME_FILE).unlink()
        self.log.info("hub stopped")

    # -- messages from agents ------------------------------------------------------------------

    def _known(self, node_id: str) -> hubwire.KnownDevice | None:
        assert self.db is not None
        device = self.db.get_device(node_id)
        if device is None:
            return None
        return hubwire.KnownDevice(PublicIdentity(device.public_key), device.revoked)

    async def _on_message(self, message: Message) -> None:
        arrival = _Arrival(time.time(), self._open)
        delay, held = HOLD_RETRY_FIRST, False
        while True:
            try:
                await self._handle(message, arrival)
            except UNAVAILABLE as exc:
                # Each database call is one transaction, and handling a message twice changes
                # nothing (QoS 1 redelivers too), so the whole message is handled again.
                # Messages behind it wait their turn in the MQTT client and the broker; a
                # stop cuts this short and leaves the message unacknowledged for next time.
                if not held:
                    self.log.warning(
                        "the database is not answering (%s): holding the message on %s "
                        "until it does",
                        type(exc).__name__,
                        message.topic,
                    )
                    held = True
                await asyncio.sleep(delay)
                delay = min(delay * 2, HOLD_RETRY_MAX)
                continue
            if held:
                self.log.info(
                    "the database answers again: handled the message on %s", message.topic
                )
            return

    async def _handle(self, message: Message, arrival: _Arrival) -> None:
        try:
            opened = await asyncio.to_thread(
                hubwire.open_from_agent,
                message.topic,
                message.payload,
                self._known,
                join_token=self.token,
            )
        except (RemoteProtocolError, Refused) as exc:
            self.metrics.refused.labels(type(exc).__name__).inc()
            self.log.warning("refused a message on %s: %s", message.topic, exc)
            # A revoked device, or a wrong token: BadMac is raised only after the join's own
            # signature verified, so only the key's holder can make the hub answer its topic.
            if isinstance(exc, Refused | BadMac) and message.topic.endswith("/join"):
                await self._answer_refused_join(message.topic, str(exc))
            return
        handler = {
            hubwire.Name.JOIN: self._on_join,
            hubwire.Name.STATUS: self._on_status,
            hubwire.Name.RECEIPTS: self._on_receipts,
            hubwire.Name.PROOF: self._on_proof,
            hubwire.Name.REPAIRED: self._on_repaired,
            hubwire.Name.STREAMS: self._on_streams,
        }[opened.name]
        try:
            await handler(opened, arrival)
        except (RemoteProtocolError, Refused, LocalProtocolError) as exc:
            self.metrics.refused.labels(type(exc).__name__).inc()
            self.log.warning("%s from %s not recorded: %s", opened.name, opened.node_id, exc)
        else:
            self.metrics.messages.labels(str(opened.name)).inc()

    async def _publish(self, node_id: str, name: hubwire.Name, payload: bytes) -> None:
        assert self.mqtt is not None
        await self.mqtt.publish(hubwire.topic(node_id, name), payload, qos=1)

    async def _answer_refused_join(self, topic: str, reason: str) -> None:
        with contextlib.suppress(LichenError):
            node_id, _ = hubwire.parse_topic(topic)
            answer = hubmessages.make_joined(
                self.identity,
                parse_node_id(node_id),
                self.token,
                accepted=False,
                reason=reason[:200],
                now=time.time(),
            )
            await self._publish(node_id, hubwire.Name.JOINED, answer)

    async def _on_join(self, opened: hubwire.FromAgent, arrival: _Arrival) -> None:
        assert self.db is not None and isinstance(opened.message, hubmessages.Join)
        now = arrival.at
        join = opened.message
        new = await asyncio.to_thread(
            self.db.enroll_device, opened.node_id, join.public_key, join.name, join.capacity, now
        )
        if new:
            self.log.info("device %s (%s) enrolled", opened.node_id, join.name)
        answer = hubmessages.make_joined(
            self.identity, opened.sender.kid, self.token, accepted=True, now=now
        )
        await self._publish(opened.node_id, hubwire.Name.JOINED, answer)

    async def _on_status(self, opened: hubwire.FromAgent, arrival: _Arrival) -> None:
        assert self.db is not None and isinstance(opened.message, hubmessages.Status)
        now = arrival.at
        status = opened.message
        address = f"{status.host}:{status.port}" if status.online and status.host else None
        await asyncio.to_thread(
            self.db.update_presence,
            opened.node_id,
            online=status.online,
            now=now,
            capacity_bytes=status.capacity if status.online else None,
            used_bytes=status.used if status.online else None,
            address=address,
        )
        if not status.online:
            self.log.info("device %s went offline", opened.node_id)

    async def _on_streams(self, opened: hubwire.FromAgent, arrival: _Arrival) -> None:
        # open_from_agent has checked the signer is the enrolled, unrevoked device of the topic.
        assert self.db is not None and isinstance(opened.message, streamreport.StreamReport)
        now = arrival.at
        report = opened.message
        offered = sum(len(f.latest) for f in report.streams)
        stored = await asyncio.to_thread(self.db.record_stream_report, opened.node_id, report, now)
        self.metrics.readings.inc(stored)
        self.log.debug(
            "streams from %s: %d streams, %d of %d readings stored",
            opened.node_id,
            len(report.streams),
            stored,
            offered,
        )

    async def _on_receipts(self, opened: hubwire.FromAgent, arrival: _Arrival) -> None:
        assert self.db is not None and isinstance(opened.message, hubmessages.ReceiptBatch)
        now = arrival.at
        batch = opened.message
        await asyncio.to_thread(self._record_receipts, batch, now)

    def _record_receipts(self, batch: hubmessages.ReceiptBatch, now: float) -> None:
        # Each manifest and receipt stands alone: a bad one (or one parked by another holder)
        # is refused and counted without costing the others their placement.
        for upload in batch.manifests:
            self._refusing(upload.manifest.cid_text, self._record_upload, upload, now)
        for item in batch.receipts:
            self._refusing(cid.to_text(item.receipt.object_cid), self._place, item, now)

    def _refusing(
        self, what: str, record: Callable[[Any, float], None], item: Any, now: float
    ) -> None:
        try:
            record(item, now)
        except (RemoteProtocolError, Refused, LocalProtocolError) as exc:
            self.metrics.refused.labels(type(exc).__name__).inc()
            self.log.warning("receipts: %s not recorded: %s", what, exc)

    def _record_upload(self, upload: hubmessages.ManifestUpload, now: float) -> None:
        assert self.db is not None
        headers = dict(enumerate(upload.headers))
        text = upload.manifest.cid_text
        if self.db.record_object(
            ObjectRecord.from_manifest(upload.manifest, upload.signed), now, headers
        ):
            # The batch opened it already; the first one recorded is the one kept.
            self._remember(text, upload.manifest)
        for parked in self.db.take_parked(text):
            self._refusing(parked.cid, self._place_parked, parked.receipt, now)

    def _place_parked(self, signed: bytes, now: float) -> None:
        # Its signature was checked when its batch came in; it has waited in the database.
        self._place(hubmessages.SignedReceipt(signed, parse_receipt_unverified(signed)), now)

    def _place(self, item: hubmessages.SignedReceipt, now: float) -> None:
        """Record a placement from a verified receipt, or park it until its manifest comes."""
        assert self.db is not None
        db = self.db
        receipt, signed = item.receipt, item.signed
        manifest = self._manifest(cid.to_text(receipt.object_cid))
        if manifest is None:
            holder = format_node_id(receipt.holder)
            if db.parked_count(holder) >= MAX_PARKED_PER_HOLDER:
                raise Refused(
                    f"{holder} has {MAX_PARKED_PER_HOLDER} receipts waiting for manifests"
                )
            db.park_receipt(
                ParkedReceipt(
                    cid.to_text(receipt.object_cid),
                    receipt.index,
                    holder,
                    signed,
                    now,
                )
            )
            return
        check_receipt_matches(receipt, manifest)
        db.add_placement(PlacementRecord.from_receipt(receipt, signed), now)

    def _manifest(self, cid_text: str) -> Manifest | None:
        """The recorded manifest of an object, opened once and then kept (manifests never
        change: the first one recorded wins), so a batch of receipts costs no signature checks."""
        assert self.db is not None
        found = self._manifests.get(cid_text)
        if found is None:
            signed = self.db.manifest(cid_text)
            if signed is None:
                return None
            found = open_manifest(signed)
            self._remember(cid_text, found)
        return found

    def _remember(self, cid_text: str, manifest: Manifest) -> None:
        if len(self._manifests) >= MANIFEST_CACHE:
            self._manifests.pop(next(iter(self._manifests)))
        self._manifests[cid_text] = manifest

    async def _on_proof(self, opened: hubwire.FromAgent, arrival: _Arrival) -> None:
        assert self.db is not None and isinstance(opened.message, hubmessages.ProofMessage)
        current, received = arrival.epoch, arrival.at
        node = opened.node_id
        answer = opened.message
        if current is None or node not in current.challenges:
            raise ProofRejected(f"an answer to epoch {answer.epoch}, but no challenge is open")
        challenge = current.challenges[node]
        # Only an answer echoing this epoch's fresh nonce can be the device's answer to it:
        # anyone on the broker can replay an old one, which must not use up the device's turn.
        if (answer.epoch, answer.nonce) != (challenge.epoch, challenge.nonce):
            raise ProofRejected(
                f"an answer to epoch {answer.epoch}, not to the open challenge of epoch "
                f"{challenge.epoch}: a replay or a late answer"
            )
        verdict = await asyncio.to_thread(
            audit.judge_answer,
            challenge,
            (answer.signed, received),
            opened.sender,
            current.placements[node],
        )
        if verdict.forged:
            # Not the device's answer, whoever sent it: it must not use up the device's turn.
            raise BadSignature(f"an answer to epoch {current.epoch} not signed by {node}")
        if verdict.rejected:
            recorded = await asyncio.to_thread(
                self.db.record_rejected, current.epoch, node, received, verdict.rejected[:500]
            )
        else:
            recorded = await asyncio.to_thread(
                self.db.record_answer, current.epoch, node, verdict, received
            )
        if not recorded:
            # Answered already, or the epoch was closed while this answer waited for the
            # database (counted as no answer then, like every answer the hub never got).
            raise ProofRejected(f"an answer to epoch {current.epoch}, not pending any more")
        if verdict.rejected:
            self.metrics.proofs.labels("rejected").inc()
            self.log.warning(
                "answer of %s to epoch %d rejected: %s", node, current.epoch, verdict.rejected
            )
            return
        self.metrics.proofs.labels("passed").inc(verdict.passed)
        self.metrics.proofs.labels("failed").inc(verdict.failed)
        if verdict.failed:
            self.log.warning(
                "device %s failed %d of %d proofs in epoch %d",
                node,
                verdict.failed,
                len(verdict.judged),
                current.epoch,
            )

    async def _on_repaired(self, opened: hubwire.FromAgent, arrival: _Arrival) -> None:
        assert self.db is not None and isinstance(opened.message, hubmessages.Repaired)
        now = arrival.at
        report = opened.message
        repair_row = await asyncio.to_thread(self.db.get_repair, report.repair_id)
        if repair_row is None or repair_row.repairer != opened.node_id:
            raise MalformedMessage(f"a report on repair {report.repair_id}, not ordered from it")
        ok = not report.failed
        finished = await asyncio.to_thread(
            self.db.finish_repair, report.repair_id, now, ok=ok, detail=report.detail[:500]
        )
        if not finished:
            # A redelivery (QoS 1), or a report after the repair was settled: nothing changes.
            self.log.debug("repair %d already settled: report ignored", report.repair_id)
            return
        self.metrics.repairs.labels("done" if ok else "failed").inc()
        self.log.info(
            "repair %d of %s %s: placed %s",
            report.repair_id,
            cid.to_text(report.object_cid),
            "done" if ok else "failed",
            [i for i, _ in report.placed],
        )

    # -- epochs --------------------------------------------------------------------------------

    async def _epoch_loop(self) -> None:
        length = self.config.epochs.length
        while True:
            started = time.time()
            try:
                await self.run_epoch()
            except sa_exc.SQLAlchemyError as exc:
                # The database is away: try again at the next epoch rather than end the loop,
                # and with it every later epoch. The unfinished epoch is closed then.
                self._open = None
                problem = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
                self.log.warning("epoch not finished: the database did not answer: %s", problem)
            else:
                self.epochs_run.set()
            await asyncio.sleep(max(0.0, started + length - time.time()))

    async def run_epoch(self) -> int:
        """One whole epoch: challenge, wait for answers, close with rewards, plan repairs."""
        assert self.db is not None
        db = self.db
        cfg = self.config.epochs
        started = time.time()
        newest = await asyncio.to_thread(db.current_epoch)  # open or closed
        if newest is not None and newest.closed_at is None:
            # An epoch the hub could not finish (it was stopped, or its database went away)
            # is closed now, so the ledger has no gap: answers that never reached the hub
            # count as missing, as they would have at its deadline.
            await asyncio.to_thread(self._close_epoch, newest.epoch, newest.started)
            self.log.warning("epoch %d closed late: the hub was interrupted", newest.epoch)
        number = newest.epoch + 1 if newest is not None else 1
        # Challenges carry whole seconds: round up, and record the deadline the devices got.
        deadline = math.ceil(started + cfg.answer_within)
        challenges, placements = await asyncio.to_thread(self._plan, number, deadline)
        sent = await asyncio.to_thread(self._sign_all, challenges)
        await asyncio.to_thread(db.open_epoch, number, started, deadline, sent)
        self._open = _OpenEpoch(number, started, deadline, challenges, placements)
        # All at once (within a window), so the last device gets as long to answer as the first.
        window = asyncio.Semaphore(PUBLISH_WINDOW)

        async def send(node: str, signed: bytes) -> None:
            async with window:
                await self._publish(node, hubwire.Name.CHALLENGE, signed)

        await asyncio.gather(*(send(node, signed) for node, signed in sent))
        await asyncio.sleep(max(0.0, deadline + LATE_GRACE - time.time()))
        self._open = None
        await asyncio.to_thread(self._close_epoch, number, started)
        await self._repairs()
        return number

    def _plan(
        self, epoch: int, deadline: int
    ) -> tuple[dict[str, proofs.Challenge], dict[str, list[audit.Placement]]]:
        """The epoch's challenges, and the placements each was planned from."""
        assert self.db is not None
        held = self.db.live_placements_by_holder()
        placements: dict[str, list[audit.Placement]] = {}
        for device in self._all_devices():
            if device.revoked or device.standing.state is rewards.State.EVICTED:
                continue
            if device.node_id in held:
                placements[device.node_id] = [
                    audit.Placement(
                        cid.from_text(p.cid), p.shard_index, p.root, p.block_size, p.piece_size
                    )
                    for p in held[device.node_id]
                ]
        cfg = self.config.epochs
        target = audit.AuditTarget(cfg.loss_fraction, cfg.detect_probability, cfg.blocks_per_shard)
        nonces = {node: os.urandom(proofs.NONCE_SIZE) for node in placements}
        return audit.plan(epoch, placements, nonces, deadline, target), placements

    def _sign_all(self, challenges: dict[str, proofs.Challenge]) -> list[tuple[str, bytes]]:
        return [(node, audit.sign_challenge(c, self.identity)) for node, c in challenges.items()]

    def _all_devices(self) -> list[Device]:
        assert self.db is not None
        found: list[Device] = []
        while True:
            page = self.db.list_devices(limit=MAX_PAGE, offset=len(found))
            found.extend(page.items)
            if len(found) >= page.total or not page.items:
                return found

    def _close_epoch(self, epoch: int, started: float) -> None:
        assert self.db is not None
        db = self.db
        missed = db.expire_challenges(epoch, absent_at=time.time())
        dropped = db.drop_parked(time.time() - PARKED_TTL)
        if dropped:
            self.log.info("dropped %d receipts whose manifests never came", dropped)
        result = rewards.epoch_rewards(
            epoch,
            max(1, int(self.config.epochs.length)),
            rewards.RewardPolicy(**asdict(self.config.rewards)),
            db.proof_inputs(epoch),
            db.standings(),
        )
        previous = db.last_closed_epoch()
        head = None
        if previous is not None and previous.record_hash is not None:
            head = ledger.ChainHead(previous.epoch, previous.started, previous.record_hash)
        closed = time.time()
        record = ledger.make_record(self.identity, head, result, started, closed)
        db.close_epoch(
            epoch,
            closed,
            record,
            ledger.record_hash(record),
            head.digest if head is not None else ledger.ZERO_HASH,
            result.devices,
        )
        self.metrics.epochs.inc()
        self.metrics.rewards_paid.inc(result.total_reward)
        self.log.info(
            "epoch %d closed: %d devices, %d paid, %d in penalties, %d missed",
            epoch,
            len(result.devices),
            result.total_reward,
            result.total_penalty,
            len(missed),
        )

    async def _repairs(self) -> None:
        assert self.db is not None
        orders = await asyncio.to_thread(self._plan_repairs, time.time())
        for repairer, payload in orders:
            await self._publish(repairer, hubwire.Name.REPAIR, payload)

    def _plan_repairs(self, now: float) -> list[tuple[str, bytes]]:
        assert self.db is not None
        db = self.db
        cfg = self.config.repair
        known = self._all_devices()
        devices = {
            d.node_id: repair.DeviceView(
                d.node_id,
                d.online,
                d.last_seen or 0.0,
                d.absent_since,
                d.standing.state,
                d.revoked,
                max(0, d.capacity_bytes - d.used_bytes),
            )
            for d in known
        }
        addresses = {d.node_id: d.address for d in known}
        at_risk = {o.cid: o for o in db.objects_at_risk(cfg.margin)}
        # The objects of holders the planner may count as lost (gone too long, or no longer
        # trusted with data) are looked at too, however healthy they still seem.
        gone = sorted(n for n, d in devices.items() if repair.gone(d, now, cfg.after) is not None)
        for holder in gone:
            for p in db.device_placements(holder):
                obj = db.get_object(p.cid)
                if obj is not None:
                    at_risk.setdefault(obj.cid, obj)
        views = []
        for obj in at_risk.values():
            held = tuple(
                repair.HeldShard(p.shard_index, p.holder, repair.ShardState(p.state.value))
                for p in db.object_placements(obj.cid)
                if p.state is not PlacementState.REMOVED
            )
            views.append(
                repair.ObjectView(cid.from_text(obj.cid), obj.k, obj.n, obj.piece_size, held)
            )
        in_progress = [cid.from_text(r.cid) for r in db.repairs_in_progress()]
        plan = repair.plan_repairs(
            now, devices, views, repair.RepairSettings(cfg.after, cfg.margin), in_progress
        )
        for lost in plan.lost:
            db.set_placement_state(
                cid.to_text(lost.object_cid), lost.index, lost.holder, PlacementState.LOST, now
            )
        out = []
        for order in plan.repairs:
            built = self._repair_order(order, addresses, now)
            if built is not None:
                out.append(built)
        for item in plan.unrecoverable:
            self.log.error("object %s cannot be rebuilt: %s", cid.to_text(item.object_cid), item)
        return out

    @staticmethod
    def _endpoint(node_id: str, address: str | None) -> hubmessages.Endpoint | None:
        if not address:
            return None
        host, _, port = address.rpartition(":")
        return hubmessages.Endpoint(parse_node_id(node_id), host, int(port))

    def _repair_order(
        self, order: repair.RepairOrder, addresses: dict[str, str | None], now: float
    ) -> tuple[str, bytes] | None:
        assert self.db is not None
        db = self.db
        text = cid.to_text(order.object_cid)
        manifest = db.manifest(text)
        headers = db.shard_headers(text, list(order.targets))
        sources = [
            hubmessages.RepairSource(index, endpoint)
            for index, holder in sorted(order.sources.items())
            if (endpoint := self._endpoint(holder, addresses.get(holder))) is not None
        ]
        targets = [
            hubmessages.RepairTarget(index, headers[index], endpoint)
            for index, holder in sorted(order.targets.items())
            if index in headers
            and (endpoint := self._endpoint(holder, addresses.get(holder))) is not None
        ]
        if manifest is None or len(sources) < order.k or not targets:
            self.log.warning("repair of %s cannot be ordered yet (missing data)", text)
            return None
        repair_id = db.create_repair(
            text,
            sorted(order.missing),
            order.repairer,
            [(t.index, order.targets[t.index]) for t in targets],
            now,
        )
        message = hubmessages.RepairOrder(
            repair_id=repair_id,
            repairer=parse_node_id(order.repairer),
            signed_manifest=manifest,
            targets=tuple(targets),
            sources=tuple(sources),
            issued=int(now),
            deadline=int(now) + REPAIR_DEADLINE,
        )
        self.metrics.repairs.labels("ordered").inc()
        self.log.info(
            "repair %d: %s rebuilds shards %s of %s",
            repair_id,
            order.repairer,
            sorted(order.targets),
            text,
        )
        return order.repairer, message.sign(self.identity)
