"""An epoch the hub could not finish (a SIGKILL, a database outage) is closed before the next
one opens, so the ledger keeps no gap and still verifies."""

from __future__ import annotations

import time
from pathlib import Path

from hub.db import Database, default_url
from tests.agents import HubProc
from tests.pg import Cluster, pg_cluster, pg_database, pg_url  # noqa: F401  (fixtures)


def test_an_unfinished_epoch_is_closed_late_and_the_ledger_verifies(tmp_path: Path) -> None:
    hub = HubProc(tmp_path / "hub", 0)
    hub.init()
    for section, key, value in [
        ("epochs", "length", "2.0"),
        ("epochs", "answer_within", "1.0"),
    ]:
        hub.configure(section, key, value)
    # What a hub killed in the middle of its first epoch leaves behind: epoch 1 open.
    with Database.open(default_url(hub.data_dir)) as db:
        db.upgrade()
        now = time.time()
        db.open_epoch(1, now - 60, now - 50)
    hub.start()
    try:
        hub.wait_for(r"epoch 1 closed late: the hub was interrupted")
        hub.wait_for(r"epoch 2 closed:")
        verified = hub.api("/api/ledger/verify")
        assert verified["verified"], verified
        assert verified["summary"]["first_epoch"] == 1
    finally:
        hub.kill()


def test_epochs_resume_after_database_outage(
    tmp_path: Path,
    pg_cluster: Cluster,  # noqa: F811
    pg_url: str,  # noqa: F811
) -> None:
    hub = HubProc(tmp_path / "hub", 0)
    hub.init("--database", pg_url)
    # An epoch every 2 s, so the epoch loop meets the outage, not just the dashboard.
    hub.configure("epochs", "length", "2.0")
    hub.configure("epochs", "answer_within", "1.0")
    hub.start()
    try:
        hub.wait_for(r"epoch \d+ closed")
        down = hub.mark()
        try:
            pg_cluster.allow_connections(pg_url, False)
            # Past the end of the epoch that was open when the database went away.
            hub.wait_for(r"epoch not finished: the database did not answer", since=down, timeout=10)
        finally:
            pg_cluster.allow_connections(pg_url, True)
        up = hub.mark()
        assert hub.running
        # Epochs go on; an epoch the outage interrupted midway (if it struck then) is closed
        # late, so the ledger has no gap and still verifies.
        hub.wait_for(r"epoch \d+ closed:", timeout=10, since=up)
        hub.wait_for(r"epoch \d+ closed:", timeout=10, since=hub.mark())
        assert "task failed" not in "".join(hub.lines[down:])
        assert hub.api("/healthz")["database"] is True  # HTTPError unless 200
        assert hub.api("/api/ledger/verify")["verified"]
    finally:
        hub.kill()
