"""A process for the shard store crash test: it stores shards in a loop until it is killed.

``python -m tests.integration.store_crash_child ROOT SEED``: opens the store at ROOT and puts
shard after shard (:func:`make_shard` of 0, 1, 2, ...); after each ``put_shard`` returns it
prints ``<cid> <index> <root hex>`` and flushes, so every line the test reads is a shard the
store acknowledged. The loop ends by itself after :data:`MAX_SHARDS`, or when stdout is
closed, so a dying test does not leave it running.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

from edge_agent.store import ShardStore
from lichen import cid, holder, messages, shard
from lichen.identity import Identity

OWNER = Identity(bytes(range(32)))
HOLDER = Identity(bytes(range(1, 33)))
NOW = 1_700_000_000
MAX_SHARDS = 100_000
MAX_BODY = 256 * 1024  # large enough that a kill often lands inside the write or the fsync


def make_shard(seed: int, i: int) -> shard.Shard:
    """Shard ``i`` of run ``seed``: 1 byte to 256 KiB, a random valid block size."""
    rng = random.Random(f"{seed}/{i}")
    body = rng.randbytes(rng.randint(1, MAX_BODY))
    return shard.build_shard(
        body,
        object_cid=cid.of(f"{seed}/{i // 4}".encode()),
        index=i % 4,
        k=2,
        n=4,
        codec="zfec-rs/1",
        object_size=len(body),
        block_size=rng.choice([512, 1024, 4096, 16384]),
        expiry=NOW + 10**6,
        owner=OWNER,
    )


def main(root: str, seed: int) -> None:
    store = ShardStore.open(Path(root), 1 << 40)
    for i in range(MAX_SHARDS):
        s = make_shard(seed, i)
        accepted = holder.accept_shard(
            messages.ShardTransfer(s.signed_header, s.body),
            holder=HOLDER,
            now=NOW,
            free_bytes=store.free_bytes(),
            held_root=store.held_root,
        )
        store.put_shard(accepted)
        sys.stdout.write(
            f"{cid.to_text(s.header.object_cid)} {s.header.index} {s.header.root.hex()}\n"
        )
        sys.stdout.flush()


if __name__ == "__main__":
    try:
        main(sys.argv[1], int(sys.argv[2]))
    except BrokenPipeError:
        sys.exit(0)
