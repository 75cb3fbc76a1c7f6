"""An epoch the hub could not finish (a SIGKILL, a database outage) is closed before the next
one opens, so the ledger keeps no gap and still verifies."""

from __future__ import annotations

import time
from pathlib import Path

from hub.db import Database, default_url
from tests.agents import HubProc


def test_an_unfinished_epoch_is_closed_late_and_the_ledger_verifies(tmp_path: Path) -> None:
    hub = HubProc(tmp_path / "hub", 0)
    hub.init_hub()
    for section, key, value in [
        ("epochs", "length", "2.0"),
        ("epochs", "answer_within", "1.0"),
        ("http", "bind", '"127.0.0.1"'),
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
