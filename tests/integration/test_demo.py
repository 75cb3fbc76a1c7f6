"""``lichen demo`` as a newcomer runs it: it starts, works, stops by itself and says what it did."""

from __future__ import annotations

import re
import subprocess

from tests.agents import LICHEN, env, free_port


def test_demo_runs_and_prints_a_summary() -> None:
    result = subprocess.run(
        [*LICHEN, "demo", "--agents", "3", "--duration", "25", "--http-port", str(free_port())],
        capture_output=True,
        text=True,
        env=env(),
        timeout=240,
    )
    out = result.stdout
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Dashboard: http://127.0.0.1:" in out
    assert "devices enrolled:  3 of 3 agents" in out
    readings = re.search(r"readings stored:\s+(\d+) acknowledged", out)
    assert readings is not None and int(readings.group(1)) > 0
    proofs = re.search(r"proofs:\s+(\d+) passed, (\d+) failed", out)
    assert proofs is not None and int(proofs.group(1)) > 0 and proofs.group(2) == "0"
    paid = re.search(r"rewards paid:\s+(\d+) units", out)
    assert paid is not None and int(paid.group(1)) > 0
    assert re.search(r"objects:\s+[1-9]\d* \(full [1-9]", out), out
