"""How long one hub epoch takes for 10,000 devices, in memory, on this machine.

Plans a challenge per device (:func:`lichen.audit.plan`), signs them, has every device answer
(:func:`lichen.proofs.answer`; timed apart, as the devices do that work, not the hub), judges
every answer (:func:`lichen.audit.judge_answer`), computes the rewards and writes and checks
the ledger record. Prints the time of each step and the proof-checking rates: answers and
blocks verified per second. Single-threaded, and the core's work only: the hub's database
(reading placements, recording challenges, verdicts and the record) is not included. The
devices and their shards are the audit simulation's (:class:`sims.audit_sim.AuditSim`, all
honest): each holds ``--shards`` shards whose bodies come from a small shared pool, so the
Merkle trees and bodies fit in memory at any scale. Answers are made and judged ``--batch``
devices at a time, so at most that many answers are held at once. Measures; asserts nothing
beyond every honest answer passing.

    python benchmarks/hub_epoch.py [--devices 10000] [--shards 50] [--block-size 16384]
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # sims/ is not installed
    sys.path.insert(0, str(ROOT))

from lichen import audit, ledger, proofs, shard  # noqa: E402
from lichen.audit import AuditTarget, Verdict  # noqa: E402
from lichen.identity import Identity  # noqa: E402
from lichen.rewards import RewardPolicy, epoch_rewards  # noqa: E402
from sims.audit_sim import AuditSim, SimConfig  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=10_000)
    parser.add_argument("--shards", type=int, default=50, help="shards held per device")
    parser.add_argument("--block-size", type=int, default=shard.DEFAULT_BLOCK_SIZE)
    parser.add_argument("--blocks", type=int, default=16, help="blocks per shard body")
    parser.add_argument("--bodies", type=int, default=8, help="distinct bodies shared")
    parser.add_argument("--n", type=int, default=10, help="shards per object")
    parser.add_argument("--batch", type=int, default=100, help="answers held at once")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    target = AuditTarget()
    piece_size = args.block_size * args.blocks
    print(
        f"Lichen hub epoch: {args.devices:,} devices x {args.shards} shards, "
        f"{target.shards_to_sample} sampled x {target.blocks_per_shard} block of "
        f"{args.block_size // 1024} KiB ({args.blocks}-block shards), {platform.machine()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}"
    )

    start = time.perf_counter()
    sim = AuditSim(
        SimConfig(
            devices=args.devices,
            shards_per_device=args.shards,
            n=args.n,
            cheaters=0,
            block_size=args.block_size,
            piece_size=piece_size,
            bodies=args.bodies,
            target=target,
            repair=None,
            keep_ledger=False,
            seed=args.seed,
        )
    )
    placements = sim.placements()
    objects = len(sim.objects)
    print(f"  setup (keys, {objects * args.n:,} placements)  {time.perf_counter() - start:8.2f} s")

    epoch, now = 1, int(sim.clock.now())
    nonces = {node_id: sim.rng.randbytes(32) for node_id in placements}
    hub = Identity(sim.rng.randbytes(32))

    start = time.perf_counter()
    challenges = audit.plan(epoch, placements, nonces, now + 60, target)
    plan_time = time.perf_counter() - start
    start = time.perf_counter()
    signed = {node_id: audit.sign_challenge(c, hub) for node_id, c in challenges.items()}
    sign_time = time.perf_counter() - start
    del signed

    answer_time = judge_time = 0.0
    answer_bytes = 0
    verdicts: dict[str, Verdict] = {}
    order = list(challenges)
    for at in range(0, len(order), args.batch):
        batch = order[at : at + args.batch]
        start = time.perf_counter()
        answers = {
            n: proofs.answer(challenges[n], sim.devices[n].read_block, sim.devices[n].identity)
            for n in batch
        }
        answer_time += time.perf_counter() - start
        answer_bytes += sum(len(a) for a in answers.values())
        start = time.perf_counter()
        for node_id in batch:
            verdicts[node_id] = audit.judge_answer(
                challenges[node_id],
                (answers[node_id], now + 30),
                sim.keys[node_id],
                placements[node_id],
            )
        judge_time += time.perf_counter() - start
        del answers
    blocks = sum(len(i.block_indices) for c in challenges.values() for i in c.items)
    assert all(v.failed == 0 and v.answered for v in verdicts.values())

    start = time.perf_counter()
    rewards = epoch_rewards(
        epoch,
        3600,
        RewardPolicy(pool=10**9),
        {node_id: v.proof for node_id, v in verdicts.items()},
        {},
    )
    rewards_time = time.perf_counter() - start
    start = time.perf_counter()
    record = ledger.make_record(hub, None, rewards, now, now + 3600)
    record_time = time.perf_counter() - start
    start = time.perf_counter()
    ledger.open_record(record, hub.public)
    check_time = time.perf_counter() - start

    count = len(challenges)
    hub_time = plan_time + sign_time + judge_time + rewards_time + record_time
    print("hub, per epoch (the core's work: the database is not included)")
    print(f"  plan {count:,} challenges                {plan_time:8.2f} s")
    print(f"  sign {count:,} challenges                {sign_time:8.2f} s")
    print(
        f"  judge {count:,} answers                  {judge_time:8.2f} s"
        f"   ({answer_bytes / count / 1024:.0f} KiB each)"
    )
    print(f"  rewards for {len(rewards.devices):,} devices          {rewards_time:8.2f} s")
    print(
        f"  ledger record ({len(record) / 1e6:.1f} MB)               {record_time:8.2f} s"
        f"   (verify it: {check_time:.2f} s)"
    )
    print(f"  total                                {hub_time:8.2f} s")
    print("proof checks")
    print(f"  answers verified                     {count / judge_time:8.0f} /s")
    print(f"  blocks proven                        {blocks / judge_time:8.0f} /s")
    print("devices (not part of the hub's time)")
    print(f"  answers produced                     {count / answer_time:8.0f} /s")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak memory                            {peak:8.0f} MiB")


if __name__ == "__main__":
    main()
