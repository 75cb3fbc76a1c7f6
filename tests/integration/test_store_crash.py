"""The shard store survives ``kill -9``: every acknowledged shard is there and whole.

A child process (:mod:`tests.integration.store_crash_child`) stores shards in a loop and
prints each one after ``put_shard`` returns; the test reads those lines, kills the child with
SIGKILL at a moment chosen from a seed, reopens the store and checks it. A process kill leaves
the page cache intact, so this checks the write path (temporary file, rename) and recovery at
open, not the disk's honesty about ``fsync``; the unit tests cover torn and damaged files.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edge_agent.store import ShardStore
from lichen import cid, shard

REPO = Path(__file__).resolve().parents[2]
MIN_ACKS = 20
MAX_JITTER = 0.01  # seconds: moves the kill across the phases of the next put


def _start(root: Path, seed: int) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-m", "tests.integration.store_crash_child", str(root), str(seed)],
        cwd=REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _kill_after(proc: subprocess.Popen[str], acks: int, jitter: float) -> list[str]:
    """Read acknowledgements until ``acks`` have arrived, SIGKILL the child, return them all.

    Lines the child printed between the last read and its death were acknowledged too, so the
    rest of stdout is read after the kill; a line cut short by the kill is not counted.
    """
    assert proc.stdout is not None and proc.stderr is not None
    seen: list[str] = []
    try:
        while len(seen) < acks:
            line = proc.stdout.readline()
            if not line:
                raise AssertionError(f"child exited early: {proc.stderr.read()}")
            seen.append(line)
        time.sleep(jitter)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    seen.extend(
        line for line in proc.stdout.read().splitlines(keepends=True) if line.endswith("\n")
    )
    proc.stdout.close()
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    return seen


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5, 6])
def test_kill_during_puts_keeps_every_acknowledged_shard(tmp_path: Path, seed: int) -> None:
    root = tmp_path / "store"
    rng = random.Random(seed)
    proc = _start(root, seed)
    lines = _kill_after(proc, MIN_ACKS + rng.randrange(40), rng.uniform(0, MAX_JITTER))

    st = ShardStore.open(root, 1 << 40)
    counters = st.counters()
    assert counters.quarantined_at_open == 0 and counters.ignored_at_open == 0
    assert list((root / "quarantine").iterdir()) == []
    # Nothing torn or half-visible: every file left is a whole, indexed shard (the temporary
    # file of the put the kill interrupted, if any, was removed at open).
    indexed = st.shards()
    assert sorted(p.name for p in (root / "shards").iterdir()) == sorted(
        f"{cid.to_text(i.header.object_cid)}.{i.header.index}.shard" for i in indexed
    )
    assert len(indexed) in (len(lines), len(lines) + 1)  # the last put may have completed
    for line in lines:
        text, index, root_hex = line.split()
        object_cid = cid.from_text(text)
        assert st.held_root(object_cid, int(index)) == bytes.fromhex(root_hex)
        found = st.get_shard(object_cid, int(index))
        assert found is not None
        checked = shard.open_shard(*found)
        assert checked.header.root.hex() == root_hex
    report = st.scrub()
    assert report.corrupt == () and report.repaired == () and len(report.checked) == len(indexed)
