"""Logging for the agent and the CLI: one line per event on stderr, with the node id."""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class NodeLog(logging.LoggerAdapter[logging.Logger]):
    """A logger that starts every line with the (short) node id it speaks for."""

    def __init__(self, logger: logging.Logger, node_id: str) -> None:
        super().__init__(logger, {"node": node_id})
        self.node = node_id[:8]

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        return f"[{self.node}] {msg}", kwargs


def setup(verbose: int = 0) -> None:
    """Send log lines to stderr (journald keeps them under systemd); -v for debug."""
    level = logging.DEBUG if verbose > 0 else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # aiocoap and zeroconf are chatty at INFO about things an operator cannot act on.
    for noisy in ("coap", "coap-server", "zeroconf", "alembic", "amqtt", "transitions"):
        logging.getLogger(noisy).setLevel(logging.WARNING if verbose < 2 else logging.DEBUG)
