"""The write-ahead log survives ``kill -9``: every acknowledged record is there, intact.

A child process (:mod:`tests.integration.wal_crash_child`) writes in a loop and prints what it
has acknowledged; the test reads those lines, kills the child with SIGKILL at a moment chosen
from a seed, and reopens the log. A process kill leaves the page cache intact, so this checks
the write path and recovery, not the disk's honesty about ``fsync`` (the unit tests cover torn
and damaged files directly).
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

from edge_agent.wal import WriteAheadLog
from tests.integration.wal_crash_child import generation, marker, payload

REPO = Path(__file__).resolve().parents[2]
MIN_ACKS = 200
MAX_JITTER = 0.003  # seconds: a few appends or resets on an SSD


def _start(*args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-m", "tests.integration.wal_crash_child", *args],
        cwd=REPO,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _kill_after(proc: subprocess.Popen[str], acks: int, jitter: float) -> int:
    """Read acknowledgements until ``acks`` have arrived, SIGKILL the child, return the last one.

    ``jitter`` seconds pass between the last ack read and the kill: that moves the kill across
    the phases of the next write (encode, write, fsync, rename). No outcome depends on it;
    every outcome is checked. Lines the child printed between the last read and its death were
    acknowledged too, so the rest of stdout is read after the kill and counted.
    """
    assert proc.stdout is not None and proc.stderr is not None
    seen: list[int] = []
    try:
        while len(seen) < acks:
            line = proc.stdout.readline()
            if not line:
                raise AssertionError(f"child exited early: {proc.stderr.read()}")
            seen.append(int(line))
        time.sleep(jitter)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    rest = proc.stdout.read()
    seen.extend(int(line) for line in rest.splitlines(keepends=True) if line.endswith("\n"))
    proc.stdout.close()
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    assert seen == sorted(seen)
    return seen[-1]


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name != "s.wal")


@pytest.mark.parametrize(("seed", "max_batch"), [(1, 1), (2, 1), (3, 10), (4, 100), (5, 300)])
def test_kill_during_appends_keeps_every_acknowledged_record(
    tmp_path: Path, seed: int, max_batch: int
) -> None:
    path = tmp_path / "s.wal"
    rng = random.Random(seed)
    proc = _start("append", str(path), str(seed), str(max_batch))
    acked = _kill_after(proc, MIN_ACKS + rng.randrange(400), rng.uniform(0, MAX_JITTER))

    with WriteAheadLog.open(path) as log:
        records = log.records()
        assert log.recovery.kept_aside is None
        assert len(records) >= acked
        # Nothing torn, nothing reordered: exactly records 0 .. n-1, each byte-for-byte.
        assert records == [payload(i) for i in range(len(records))]
        log.append([payload(len(records))])
    with WriteAheadLog.open(path) as log:
        assert log.count == len(records) + 1
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("seed", [11, 12, 13])
def test_kill_during_resets_leaves_old_or_new_log(tmp_path: Path, seed: int) -> None:
    path = tmp_path / "s.wal"
    rng = random.Random(seed)
    proc = _start("reset", str(path))
    last = _kill_after(proc, MIN_ACKS + rng.randrange(400), rng.uniform(0, MAX_JITTER))

    with WriteAheadLog.open(path) as log:
        records = log.records()
        assert log.recovery.kept_aside is None
    # Acknowledged: reset `last` and its marker. In flight: reset `last + 1`, then its marker.
    allowed = [
        [*generation(last), marker(last)],
        generation(last + 1),
        [*generation(last + 1), marker(last + 1)],
    ]
    assert records in allowed
    # open() removed the temporary file of a reset the kill interrupted, if there was one.
    assert _leftovers(tmp_path) == []
