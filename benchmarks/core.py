"""Throughput of the protocol core on one object, on this machine.

Prints MB/s (10^6 bytes per second of the object's size unless a line says otherwise) for
sealing, erasure coding, Merkle hashing and signing a 64 MiB object, the whole write and read
pipelines, and how many storage-proof answers (Ed25519-verified) are checked per second.
Each figure is the best of ``--repeat`` runs, single-threaded. This measures; it asserts
nothing.

    python benchmarks/core.py [--mib 64] [--k 4] [--n 10] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import time
from collections.abc import Callable
from typing import TypeVar

from lichen import audit, cid, cose, erasure, merkle, objects, proofs, seal, shard
from lichen.identity import Identity

T = TypeVar("T")


def best(repeat: int, work: Callable[[], T]) -> tuple[float, T]:
    """The shortest of ``repeat`` timings of ``work()``, and its last result."""
    times = []
    result: T
    for _ in range(repeat):
        start = time.perf_counter()
        result = work()
        times.append(time.perf_counter() - start)
    return min(times), result


def line(what: str, seconds: float, size: int, note: str = "") -> None:
    rate = size / seconds / 1e6
    print(f"  {what:<38} {rate:9.1f} MB/s   {seconds * 1000:8.1f} ms  {note}")


def write_and_read(
    data: bytes,
    key: bytes,
    nonce: bytes,
    k: int,
    n: int,
    owner: Identity,
    repeat: int,
    from_parity: bool = True,
) -> tuple[float, float]:
    """Best seconds over ``repeat`` runs of ``encode_object`` and of ``decode_object`` from k
    shards (the last k when ``from_parity``, else the data shards); RuntimeError if the bytes
    read back differ."""
    write, encoded = best(
        repeat,
        lambda: objects.encode_object(
            data, key=key, nonce=nonce, k=k, n=n, owner=owner, expiry=2**31
        ),
    )
    manifest = objects.make_manifest(encoded, [owner.kid] * n, owner=owner, created=0, label=None)
    chosen = range(n - k, n) if from_parity else range(k)
    fetched = {i: (encoded.shards[i].signed_header, encoded.shards[i].body) for i in chosen}
    read, decoded = best(repeat, lambda: objects.decode_object(manifest, fetched, key))
    if decoded.plaintext != data:
        raise RuntimeError("the core decoded other bytes than it encoded")
    return write, read


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=64, help="object size in MiB (default 64)")
    parser.add_argument("--k", type=int, default=4, help="data shards (default 4)")
    parser.add_argument("--n", type=int, default=10, help="total shards (default 10)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure, best kept")
    parser.add_argument("--proof-items", type=int, default=audit.DEFAULT_TARGET.shards_to_sample)
    args = parser.parse_args()

    size = args.mib * 1024 * 1024
    owner = Identity(os.urandom(32))
    key, nonce = os.urandom(32), os.urandom(24)
    data = os.urandom(size)
    print(
        f"Lichen core, {args.mib} MiB object, k={args.k} n={args.n}, "
        f"block {shard.DEFAULT_BLOCK_SIZE // 1024} KiB, {platform.machine()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}"
    )

    print("stages")
    t, sealed = best(args.repeat, lambda: seal.seal(data, key, nonce))
    line("seal (XChaCha20-Poly1305)", t, size)
    t, _ = best(args.repeat, lambda: seal.unseal(sealed, key))
    line("unseal", t, size)
    t, pieces = best(args.repeat, lambda: erasure.encode(sealed, args.k, args.n))
    line(f"erasure encode ({erasure.CODEC})", t, size)
    parity_first = dict(list(enumerate(pieces))[-args.k :])
    t, _ = best(args.repeat, lambda: erasure.decode(parity_first, args.k, args.n, len(sealed)))
    line("erasure decode from the last k pieces", t, size)
    t, _ = best(args.repeat, lambda: merkle.MerkleTree.from_body(sealed, shard.DEFAULT_BLOCK_SIZE))
    line("Merkle tree over the object", t, size)
    t, _ = best(args.repeat, lambda: owner.sign(sealed))
    line("Ed25519 sign of the object", t, size)
    payload = os.urandom(300)
    count = 2000
    t, _ = best(args.repeat, lambda: [cose.sign1(payload, owner) for _ in range(count)])
    print(f"  {'COSE_Sign1 of a shard header':<38} {count / t:9.0f} /s")

    print("pipelines")
    write, read = write_and_read(data, key, nonce, args.k, args.n, owner, args.repeat)
    line("write: seal + code + hash + sign", write, size, f"({args.n} shards)")
    line("read: verify k shards + decode + unseal", read, size, "(parity shards)")

    print("storage proofs")
    holder = Identity(os.urandom(32))
    body = pieces[0]  # a shard's body is one erasure piece
    tree = merkle.MerkleTree.from_body(body, shard.DEFAULT_BLOCK_SIZE)
    # Every challenged shard shares one body: verifying costs the same per item either way.
    held = [(cid.digest_to_cid(os.urandom(32)), 0, tree.leaf_count) for _ in range(200)]
    roots = {(c, i): (tree.root, tree.leaf_count, shard.DEFAULT_BLOCK_SIZE) for c, i, _ in held}

    def read_block(_cid: bytes, _index: int, block_index: int) -> tuple[bytes, list[bytes]]:
        return shard.block(body, shard.DEFAULT_BLOCK_SIZE, block_index), tree.inclusion_path(
            block_index
        )

    challenge = proofs.make_challenge(
        1, os.urandom(32), holder.kid, 10**10, held, args.proof_items, 1, random.Random(1)
    )
    answer = proofs.answer(challenge, read_block, holder)
    rounds = 50
    t, result = best(
        args.repeat,
        lambda: [
            proofs.verify(challenge, answer, holder.public, roots, 0.0) for _ in range(rounds)
        ][-1],
    )
    assert result.all_passed
    print(
        f"  {'answers verified':<38} {rounds / t:9.0f} /s   "
        f"({len(challenge.items)} items x 1 block of {shard.DEFAULT_BLOCK_SIZE // 1024} KiB, "
        f"{tree.leaf_count} leaves, answer {len(answer) / 1024:.0f} KiB, one Ed25519 verify each)"
    )
    print(f"  {'blocks proven':<38} {rounds * len(challenge.items) / t:9.0f} /s")


if __name__ == "__main__":
    main()
