"""The ledger half of the hub's repository: epochs, challenges, proofs, rewards, repairs, views."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy import (
    Connection,
    bindparam,
    func,
    insert,
    select,
    update,
)

from hub import db_reports, db_views
from hub.db_base import (
    LEDGER_BATCH,
    Store,
    check_count,
    check_node_id,
    check_page,
    check_text,
    device_of,
    epoch_of,
)
from hub.db_records import (
    ChallengeRecord,
    Epoch,
    LedgerEntry,
    Page,
    ProofItemRecord,
    Repair,
    RewardRecord,
)
from hub.db_schema import (
    ChallengeOutcome,
    RepairState,
    challenges,
    devices,
    epochs,
    proof_items,
    repairs,
    rewards,
)
from lichen import cid as cids
from lichen.audit import Verdict
from lichen.errors import LocalProtocolError
from lichen.rewards import DeviceProof, DeviceReward


class LedgerStore(Store):
    """Epochs and everything scored in them (see :class:`hub.db.Database` for the contract)."""

    # -- epochs and the ledger --------------------------------------------------------------

    def open_epoch(
        self,
        epoch: int,
        started: float,
        deadline: float,
        sent: Sequence[tuple[str, bytes]] = (),
    ) -> None:
        """Start epoch number ``epoch``, which must be above every earlier one, with the
        signed challenges ``sent`` (device, challenge) at ``started``, in one transaction."""
        check_count(epoch, "epoch")
        with self._write() as conn:
            newest = conn.execute(select(func.max(epochs.c.epoch))).scalar_one()
            if newest is not None and epoch <= newest:
                raise LocalProtocolError(f"epoch {epoch} is not after epoch {newest}")
            conn.execute(insert(epochs).values(epoch=epoch, started=started, deadline=deadline))
            if sent:
                conn.execute(insert(challenges), _challenge_rows(epoch, sent, started, deadline))

    def close_epoch(
        self,
        epoch: int,
        closed_at: float,
        record: bytes,
        record_hash: bytes,
        prev_hash: bytes,
        device_rewards: Sequence[DeviceReward],
    ) -> None:
        """Close an open epoch: its signed ledger record, every device's reward, new standings.

        All or nothing. :class:`LocalProtocolError` if the epoch is not open or a reward names
        an unknown device.
        """
        with self._write() as conn:
            closed = conn.execute(
                update(epochs)
                .where(epochs.c.epoch == epoch, epochs.c.closed_at.is_(None))
                .values(
                    closed_at=closed_at, record=record, record_hash=record_hash, prev_hash=prev_hash
                )
            )
            if closed.rowcount != 1:
                raise LocalProtocolError(f"epoch {epoch} is not open")
            if not device_rewards:
                return
            conn.execute(insert(rewards), [_reward_row(epoch, r) for r in device_rewards])
            conn.execute(
                update(devices)
                .where(devices.c.node_id == bindparam("b_node"))
                .values(
                    standing_state=bindparam("b_state"),
                    standing_failures=bindparam("b_failures"),
                ),
                [
                    {
                        "b_node": r.node_id,
                        "b_state": r.after.state.value,
                        "b_failures": r.after.failures,
                    }
                    for r in device_rewards
                ],
            )

    def current_epoch(self) -> Epoch | None:
        """The newest epoch, open or closed; None before the first."""
        with self._read() as conn:
            row = conn.execute(select(epochs).order_by(epochs.c.epoch.desc()).limit(1)).first()
            return None if row is None else epoch_of(row)

    def last_closed_epoch(self) -> Epoch | None:
        """The newest closed epoch (whose hash the next record chains to); None if none."""
        with self._read() as conn:
            row = conn.execute(
                select(epochs)
                .where(epochs.c.closed_at.is_not(None))
                .order_by(epochs.c.epoch.desc())
                .limit(1)
            ).first()
            return None if row is None else epoch_of(row)

    def get_epoch(self, epoch: int) -> Epoch | None:
        """Epoch number ``epoch``; None if there is none."""
        with self._read() as conn:
            row = conn.execute(select(epochs).where(epochs.c.epoch == epoch)).first()
            return None if row is None else epoch_of(row)

    def list_epochs(self, limit: int = 100, offset: int = 0) -> Page[Epoch]:
        """Epochs, newest first."""
        check_page(limit, offset)
        with self._read() as conn:
            total = conn.execute(select(func.count()).select_from(epochs)).scalar_one()
            rows = conn.execute(
                select(epochs).order_by(epochs.c.epoch.desc()).limit(limit).offset(offset)
            )
            return Page(tuple(epoch_of(r) for r in rows), total, limit, offset)

    def ledger(self, batch: int = LEDGER_BATCH) -> Iterator[LedgerEntry]:
        """The closed epochs' records in epoch order, read ``batch`` at a time."""
        check_page(batch, 0)
        after = -1
        while True:
            with self._read() as conn:
                rows = conn.execute(
                    select(
                        epochs.c.epoch, epochs.c.record, epochs.c.record_hash, epochs.c.prev_hash
                    )
                    .where(epochs.c.closed_at.is_not(None), epochs.c.epoch > after)
                    .order_by(epochs.c.epoch)
                    .limit(batch)
                ).all()
            for r in rows:
                yield LedgerEntry(
                    r.epoch, bytes(r.record), bytes(r.record_hash), bytes(r.prev_hash)
                )
            if len(rows) < batch:
                return
            after = rows[-1].epoch

    # -- challenges and proofs ---------------------------------------------------------------

    def record_challenge(
        self, epoch: int, device: str, challenge: bytes, sent_at: float, deadline: float
    ) -> None:
        """Record the signed challenge sent to ``device`` in ``epoch`` (one per epoch)."""
        with self._write() as conn:
            conn.execute(
                insert(challenges), _challenge_rows(epoch, [(device, challenge)], sent_at, deadline)
            )

    def record_answer(self, epoch: int, device: str, verdict: Verdict, answered_at: float) -> bool:
        """Record the core's verdict on a pending challenge's answer, with its judged items;
        False if it was not pending. A rejected answer goes to :meth:`record_rejected`."""
        if verdict.epoch != epoch or verdict.node_id != device:
            raise LocalProtocolError("the verdict is for another epoch or device")
        if not verdict.answered or verdict.rejected:
            raise LocalProtocolError("record_answer() takes the verdict on a usable answer")
        outcome = ChallengeOutcome.FAILED if verdict.failed else ChallengeOutcome.PASSED
        judged = verdict.judged
        with self._write() as conn:
            settled = self._settle(
                conn, epoch, device, answered_at, outcome, verdict.passed, verdict.failed, ""
            )
            if not settled:
                return False
            if judged:
                conn.execute(
                    insert(proof_items),
                    [
                        {
                            "epoch": epoch,
                            "device": device,
                            "cid": cids.to_text(i.object_cid),
                            "shard_index": i.shard_index,
                            "passed": i.passed,
                            "reason": i.reason,
                        }
                        for i in judged
                    ],
                )
            return True

    def record_rejected(self, epoch: int, device: str, answered_at: float, detail: str) -> bool:
        """Record that a pending challenge's answer was unusable as a whole (and why)."""
        check_text(detail, "detail")
        with self._write() as conn:
            return self._settle(
                conn, epoch, device, answered_at, ChallengeOutcome.REJECTED, 0, 0, detail
            )

    @staticmethod
    def _settle(
        conn: Connection,
        epoch: int,
        device: str,
        answered_at: float | None,
        outcome: ChallengeOutcome,
        passed: int,
        failed: int,
        detail: str,
    ) -> bool:
        result = conn.execute(
            update(challenges)
            .where(
                challenges.c.epoch == epoch,
                challenges.c.device == device,
                challenges.c.outcome == ChallengeOutcome.PENDING.value,
            )
            .values(
                answered_at=answered_at,
                outcome=outcome.value,
                items_passed=passed,
                items_failed=failed,
                detail=detail,
            )
        )
        return result.rowcount == 1

    def expire_challenges(self, epoch: int, *, absent_at: float | None = None) -> list[str]:
        """Mark the epoch's still-pending challenges unanswered; the devices concerned.

        With ``absent_at``, those devices are absent from then on (an earlier absence is
        kept), in the same transaction: a crash cannot keep the one without the other.
        """
        where = (
            challenges.c.epoch == epoch,
            challenges.c.outcome == ChallengeOutcome.PENDING.value,
        )
        with self._write() as conn:
            late = list(
                conn.execute(
                    select(challenges.c.device).where(*where).order_by(challenges.c.device)
                ).scalars()
            )
            if late and absent_at is not None:
                conn.execute(
                    update(devices)
                    .where(devices.c.node_id.in_(select(challenges.c.device).where(*where)))
                    .values(absent_since=func.coalesce(devices.c.absent_since, absent_at))
                )
            conn.execute(
                update(challenges).where(*where).values(outcome=ChallengeOutcome.NO_ANSWER.value)
            )
            return late

    def get_challenge(self, epoch: int, device: str) -> ChallengeRecord | None:
        """The challenge sent to ``device`` in ``epoch``; None if none was."""
        with self._read() as conn:
            found = db_reports.challenge_rows(
                conn, challenges.c.epoch == epoch, challenges.c.device == device
            )
            return found[0] if found else None

    def epoch_challenges(self, epoch: int) -> list[ChallengeRecord]:
        """Every challenge of the epoch, by device."""
        with self._read() as conn:
            return db_reports.challenge_rows(conn, challenges.c.epoch == epoch)

    def proof_items(self, epoch: int, device: str) -> list[ProofItemRecord]:
        """The verdicts on the shards ``device`` was asked about in ``epoch``."""
        with self._read() as conn:
            rows = conn.execute(
                select(proof_items)
                .where(proof_items.c.epoch == epoch, proof_items.c.device == device)
                .order_by(proof_items.c.cid, proof_items.c.shard_index)
            )
            return [
                ProofItemRecord(r.epoch, r.device, r.cid, r.shard_index, bool(r.passed), r.reason)
                for r in rows
            ]

    def proof_inputs(self, epoch: int) -> dict[str, DeviceProof]:
        """The epoch's proof rounds as :func:`lichen.rewards.epoch_rewards` takes them.

        An answered challenge gives its judged items (shard label ``cid/index``, the shard's
        size); a rejected, missing or still pending answer counts as no answer. Held bytes
        are each device's live placements now.
        """
        with self._read() as conn:
            return db_reports.proof_inputs(conn, epoch)

    # -- rewards ----------------------------------------------------------------------------

    def epoch_rewards(self, epoch: int) -> list[RewardRecord]:
        """Every device's reward in a closed epoch, by device."""
        with self._read() as conn:
            return db_reports.reward_rows(conn, rewards.c.epoch == epoch)

    def device_rewards(self, node_id: str, limit: int = 100, offset: int = 0) -> Page[RewardRecord]:
        """A device's rewards, newest epoch first."""
        check_page(limit, offset)
        with self._read() as conn:
            where = rewards.c.device == node_id
            total = conn.execute(select(func.count()).where(where)).scalar_one()
            items = db_reports.reward_rows(
                conn, where, newest_first=True, limit=limit, offset=offset
            )
            return Page(tuple(items), total, limit, offset)

    # -- repairs ----------------------------------------------------------------------------

    def create_repair(
        self,
        cid: str,
        lost_indices: Sequence[int],
        repairer: str,
        targets: Sequence[tuple[int, str]],
        now: float,
    ) -> int:
        """Record a repair order; its id."""
        for _, holder in targets:
            check_node_id(holder)
        with self._write() as conn:
            repair_id = conn.execute(
                insert(repairs)
                .values(
                    cid=cid,
                    lost_indices=[check_count(i, "shard index") for i in lost_indices],
                    repairer=repairer,
                    targets=[[check_count(i, "shard index"), h] for i, h in targets],
                    ordered_at=now,
                    state=RepairState.ORDERED.value,
                    detail="",
                )
                .returning(repairs.c.id)
            ).scalar_one()
            return int(repair_id)

    def finish_repair(self, repair_id: int, now: float, *, ok: bool, detail: str = "") -> bool:
        """Mark an ordered repair done or failed; False if it was not in progress."""
        check_text(detail, "detail")
        state = RepairState.DONE if ok else RepairState.FAILED
        with self._write() as conn:
            result = conn.execute(
                update(repairs)
                .where(repairs.c.id == repair_id, repairs.c.state == RepairState.ORDERED.value)
                .values(finished_at=now, state=state.value, detail=detail)
            )
            return result.rowcount == 1

    def get_repair(self, repair_id: int) -> Repair | None:
        """The repair order; None if unknown."""
        with self._read() as conn:
            found = db_reports.repair_rows(conn, repairs.c.id == repair_id, limit=1)
            return found[0] if found else None

    def repairs_in_progress(self) -> list[Repair]:
        """Repairs ordered and not finished, oldest first."""
        with self._read() as conn:
            return db_reports.repair_rows(
                conn, repairs.c.state == RepairState.ORDERED.value, oldest_first=True
            )

    def list_repairs(
        self, limit: int = 100, offset: int = 0, state: RepairState | None = None
    ) -> Page[Repair]:
        """Repairs, newest first, optionally only those in ``state``."""
        check_page(limit, offset)
        where = None if state is None else repairs.c.state == RepairState(state).value
        with self._read() as conn:
            count = select(func.count()).select_from(repairs)
            total = conn.execute(count if where is None else count.where(where)).scalar_one()
            items = db_reports.repair_rows(conn, where, limit=limit, offset=offset)
            return Page(tuple(items), total, limit, offset)

    # -- views for the API and the dashboard ----------------------------------------------------

    def overview(self) -> db_reports.Overview:
        """The mesh at a glance: devices, capacity, objects by health, the current epoch."""
        with self._read() as conn:
            return db_reports.overview(conn)

    def device_detail(self, node_id: str, epochs: int = 30) -> db_reports.DeviceDetail | None:
        """A device with its last ``epochs`` proof rounds and rewards; None if unknown."""
        check_page(epochs, 0)
        with self._read() as conn:
            row = conn.execute(select(devices).where(devices.c.node_id == node_id)).first()
            if row is None:
                return None
            return db_reports.device_detail(conn, device_of(row), epochs)

    def data_health(self, recent: int = 20) -> db_reports.DataHealth:
        """Objects grouped by live shard count; repairs in progress and the latest finished."""
        check_page(recent, 0)
        with self._read() as conn:
            return db_reports.data_health(conn, recent)

    def warnings(self, limit: int = 100, offset: int = 0) -> Page[db_reports.DeviceWarning]:
        """Unrevoked devices whose standing is not ok, worst first."""
        check_page(limit, offset)
        with self._read() as conn:
            return db_reports.warnings(conn, limit, offset)

    def device_rows(
        self,
        limit: int = 100,
        offset: int = 0,
        which: db_views.DeviceFilter = db_views.DeviceFilter.ALL,
        *,
        by_capacity: bool = False,
    ) -> Page[db_views.DeviceRow]:
        """Devices by name (or capacity) with their pass rate, rewards and warning."""
        check_page(limit, offset)
        with self._read() as conn:
            which = db_views.DeviceFilter(which)
            return db_views.device_rows(conn, limit, offset, which, by_capacity=by_capacity)

    def epoch_figures(self, last: int = 50, upto: int | None = None) -> list[db_views.EpochFigures]:
        """The newest ``last`` epochs' (up to ``upto``) proof and payment totals, oldest first."""
        check_page(last, 0)
        with self._read() as conn:
            return db_views.epoch_figures(conn, last, upto)


def _challenge_rows(
    epoch: int, sent: Sequence[tuple[str, bytes]], sent_at: float, deadline: float
) -> list[dict[str, Any]]:
    return [
        {
            "epoch": epoch,
            "device": device,
            "challenge": challenge,
            "sent_at": sent_at,
            "deadline": deadline,
            "outcome": ChallengeOutcome.PENDING.value,
            "items_passed": 0,
            "items_failed": 0,
            "detail": "",
        }
        for device, challenge in sent
    ]


def _reward_row(epoch: int, r: DeviceReward) -> dict[str, Any]:
    return {
        "epoch": epoch,
        "device": r.node_id,
        "outcome": str(r.outcome),
        "proven_bytes": r.proven_bytes,
        "items_passed": r.items_passed,
        "items_failed": r.items_failed,
        "reward": r.reward,
        "penalty": r.penalty,
        "before_state": r.before.state.value,
        "before_failures": r.before.failures,
        "after_state": r.after.state.value,
        "after_failures": r.after.failures,
        "explanation": list(r.explanation),
    }
