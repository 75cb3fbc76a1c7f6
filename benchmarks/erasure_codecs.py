"""Compare the C-backed Reed-Solomon libraries Lichen could use: zfec and pyeclib.

Run from the repository root::

    .venv/bin/python benchmarks/erasure_codecs.py            # 64 MiB input, best of 3
    .venv/bin/python benchmarks/erasure_codecs.py --mib 8 --repeat 1

For each (k, n) it measures, in MB/s of original data (1 MB = 10**6 bytes):

- encode: bytes in, n pieces out (for zfec this includes cutting and padding the k data
  pieces, since pyeclib does that inside its own call);
- decode: the worst case, from the k pieces with the most parity in them (all parity when
  n - k >= k), back to the original bytes.

Each pyeclib backend is tried first and skipped, with the reason, if it does not load here.
Every timed decode is checked against the input, so a fast wrong answer cannot win, and the
"k-subsets" column decodes a small input from every one of the C(n, k) subsets: a
Reed-Solomon code must rebuild from any k pieces, and a backend that cannot (ISA-L's plain
Vandermonde matrix is not MDS for every k, n) is unusable whatever its speed. A last row runs
the same work through ``lichen.erasure`` to show what the wrapper costs.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import zfec

PARAMS = [(3, 10), (4, 6), (10, 16)]
PYECLIB_BACKENDS = [
    "liberasurecode_rs_vand",
    "isa_l_rs_vand",
    "isa_l_rs_vand_inv",
    "isa_l_rs_cauchy",
    "jerasure_rs_vand",
    "jerasure_rs_cauchy",
]


@dataclass(frozen=True)
class Codec:
    """One library/backend: encode bytes to n pieces, decode from chosen piece indices."""

    name: str
    encode: Callable[[bytes, int, int], list[bytes]]
    decode: Callable[[list[bytes], list[int], int, int, int], bytes]


def worst_case_indices(k: int, n: int) -> list[int]:
    """The k highest piece indices: every parity piece first, then the last data pieces."""
    return list(range(n - k, n))


def zfec_encode(data: bytes, k: int, n: int) -> list[bytes]:
    size = -(-len(data) // k)
    view = memoryview(data)
    blocks = []
    for i in range(k):
        chunk = view[i * size : (i + 1) * size]
        blocks.append(
            bytes(chunk) if len(chunk) == size else bytes(chunk) + bytes(size - len(chunk))
        )
    return list(zfec.Encoder(k, n).encode(tuple(blocks)))


def zfec_decode(pieces: list[bytes], indices: list[int], k: int, n: int, size: int) -> bytes:
    chosen = [pieces[i] for i in indices]
    blocks = zfec.Decoder(k, n).decode(tuple(chosen), tuple(indices))
    return b"".join(blocks)[:size]


def pyeclib_codec(backend: str) -> tuple[Codec | None, str]:
    """A Codec for one pyeclib backend, or None and the reason it does not work here."""
    import warnings

    from pyeclib.ec_iface import ECDriver

    drivers: dict[tuple[int, int], ECDriver] = {}

    def driver(k: int, n: int) -> ECDriver:
        if (k, n) not in drivers:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                drivers[(k, n)] = ECDriver(k=k, m=n - k, ec_type=backend)
        return drivers[(k, n)]

    def encode(data: bytes, k: int, n: int) -> list[bytes]:
        return list(driver(k, n).encode(data))

    def decode(pieces: list[bytes], indices: list[int], k: int, n: int, size: int) -> bytes:
        return bytes(driver(k, n).decode([pieces[i] for i in indices]))

    try:
        probe = b"probe" * 1000
        fragments = encode(probe, 4, 6)
        if decode(fragments, worst_case_indices(4, 6), 4, 6, len(probe)) != probe:
            return None, "decodes wrongly"
    except Exception as exc:  # any load failure just means "not available here"
        return None, f"{type(exc).__name__}: {str(exc).splitlines()[0][:70]}"
    return Codec(f"pyeclib {backend}", encode, decode), ""


def lichen_codec() -> Codec | None:
    try:
        from lichen import erasure
    except ImportError:
        return None

    def decode(pieces: list[bytes], indices: list[int], k: int, n: int, size: int) -> bytes:
        return erasure.decode({i: pieces[i] for i in indices}, k, n, size)

    return Codec(f"lichen.erasure ({erasure.CODEC})", erasure.encode, decode)


def failing_subsets(codec: Codec, k: int, n: int) -> int:
    """How many of the C(n, k) piece subsets fail to rebuild a small input."""
    data = random.Random(1).randbytes(3001)
    pieces = codec.encode(data, k, n)
    failed = 0
    for subset in itertools.combinations(range(n), k):
        try:
            ok = codec.decode(pieces, list(subset), k, n, len(data)) == data
        except Exception:  # a backend error on a valid subset counts as a failure
            ok = False
        failed += not ok
    return failed


def best_seconds(work: Callable[[], object], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        work()
        best = min(best, time.perf_counter() - start)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=64, help="input size in MiB (default 64)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure, best kept")
    args = parser.parse_args(argv)

    data = random.Random(0).randbytes(args.mib * 2**20)
    codecs = [Codec("zfec", zfec_encode, zfec_decode)]
    for backend in PYECLIB_BACKENDS:
        codec, why = pyeclib_codec(backend)
        if codec is None:
            print(f"skipped pyeclib {backend}: {why}")
        else:
            codecs.append(codec)
    wrapper = lichen_codec()
    if wrapper is not None:
        codecs.append(wrapper)

    print(f"input {args.mib} MiB, best of {args.repeat}, MB/s of original data (10**6 B/s)")
    header = f"{'codec':<44} {'k,n':>6} {'encode':>9} {'decode':>9} {'k-subsets':>14}"
    print(header)
    print("-" * len(header))
    megabytes = len(data) / 1e6
    for k, n in PARAMS:
        indices = worst_case_indices(k, n)
        for codec in codecs:
            pieces = codec.encode(data, k, n)
            if codec.decode(pieces, indices, k, n, len(data)) != data:
                print(f"{codec.name}: decode mismatch at k={k}, n={n}", file=sys.stderr)
                return 1
            enc = best_seconds(functools.partial(codec.encode, data, k, n), args.repeat)
            dec = best_seconds(
                functools.partial(codec.decode, pieces, indices, k, n, len(data)), args.repeat
            )
            del pieces
            failed = failing_subsets(codec, k, n)
            subsets = "all ok" if failed == 0 else f"{failed} FAIL"
            print(
                f"{codec.name:<44} {f'{k},{n}':>6} {megabytes / enc:>9.0f} "
                f"{megabytes / dec:>9.0f} {subsets:>14}"
            )
        print(f"{'':<44} {'':>6} decode from pieces {indices}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
