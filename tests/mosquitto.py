"""A real Mosquitto broker for integration tests, on a free loopback port.

:class:`Mosquitto` writes a config into a temporary directory (one listener on 127.0.0.1,
persistence off, every log type to stderr), optionally with a password file and an ACL, starts
``mosquitto -c``, and returns once the broker logs that it is running; it stops it at the end.
Tests wait on its log (:meth:`Mosquitto.wait_for_log`), never on sleeps. The password file is
made with ``mosquitto_passwd`` when it is installed and otherwise written here in Mosquitto's
own ``$7$`` format (PBKDF2-SHA512), which is also what :func:`hash_password` produces.

The ACL gives the hub account ``lichen/v1/#`` and each agent account (named by its node id)
only ``lichen/v1/<node id>/#``, plus read access to ``lichen/v1/hub/#``.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import pytest

from tests.agents import LogWatcher, free_port

START_TIMEOUT = 10.0  # seconds: a last resort, startup ends on the "running" log line
RUNNING = re.compile(r"mosquitto version \S+ running")
PBKDF2_ITERATIONS = 101  # mosquitto_passwd's default for $7$ hashes
SALT_SIZE = 12  # bytes, as mosquitto_passwd draws them


def mosquitto_path() -> str | None:
    """The mosquitto binary (Debian puts it in /usr/sbin, often not on PATH), or None."""
    found = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")
    return found


def require_mosquitto() -> str:
    """The mosquitto binary, or skip the test with the reason."""
    path = mosquitto_path()
    if path is None:
        reason = "mosquitto is not installed (apt-get install mosquitto; ./dev setup does)"
        if os.environ.get("CI"):
            pytest.fail(f"Mosquitto tests must run under CI: {reason}")
        pytest.skip(reason)
    return path


def hash_password(password: str, salt: bytes) -> str:
    """A Mosquitto 2.x password hash: ``$7$iterations$salt$PBKDF2-SHA512`` (base64 parts)."""
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, PBKDF2_ITERATIONS, 64)
    b64 = base64.b64encode
    return f"$7${PBKDF2_ITERATIONS}${b64(salt).decode()}${b64(digest).decode()}"


@dataclass(frozen=True)
class Account:
    """A broker login and the topic patterns it may read and write."""

    username: str
    password: str
    readwrite: tuple[str, ...] = ()
    read: tuple[str, ...] = ()


def hub_account(password: str = "hub-password") -> Account:
    """The hub's login: every control-plane topic."""
    return Account("hub", password, readwrite=("lichen/v1/#",))


def agent_account(node_id: str, password: str) -> Account:
    """An agent's login, named by its node id: its own topics, and the hub's info to read."""
    return Account(
        node_id, password, readwrite=(f"lichen/v1/{node_id}/#",), read=("lichen/v1/hub/#",)
    )


@dataclass
class Mosquitto:
    """One Mosquitto process; use as a context manager."""

    directory: Path
    accounts: Sequence[Account] | None = None
    """None: anonymous clients allowed, no ACL. Otherwise only these logins, with the ACL."""
    use_mosquitto_passwd: bool = True
    """False: write the password file ourselves even when mosquitto_passwd is installed."""
    port: int = 0
    log: LogWatcher | None = None  # the running (or last) broker's stderr
    _process: subprocess.Popen[str] | None = None

    @property
    def lines(self) -> list[str]:
        """The log of the running (or last) broker so far."""
        return self.log.lines if self.log is not None else []

    @property
    def url(self) -> str:
        """``mqtt://127.0.0.1:port`` (add credentials with :meth:`url_for`)."""
        return f"mqtt://127.0.0.1:{self.port}"

    def url_for(self, account: Account) -> str:
        """The broker URL with ``account``'s credentials in it."""
        return f"mqtt://{account.username}:{account.password}@127.0.0.1:{self.port}"

    def _write_passwords(self, accounts: Sequence[Account]) -> Path:
        path = self.directory / "passwd"
        passwd = shutil.which("mosquitto_passwd") if self.use_mosquitto_passwd else None
        if passwd is not None:
            path.write_text("")
            for a in accounts:
                subprocess.run([passwd, "-b", str(path), a.username, a.password], check=True)
        else:
            path.write_text(
                "".join(
                    f"{a.username}:{hash_password(a.password, os.urandom(SALT_SIZE))}\n"
                    for a in accounts
                )
            )
        path.chmod(0o600)
        return path

    def _write_acl(self, accounts: Sequence[Account]) -> Path:
        path = self.directory / "acl"
        blocks = []
        for a in accounts:
            rules = [f"topic readwrite {t}" for t in a.readwrite] + [
                f"topic read {t}" for t in a.read
            ]
            blocks.append("\n".join([f"user {a.username}", *rules]))
        path.write_text("\n\n".join(blocks) + "\n")
        path.chmod(0o600)
        return path

    def _write_config(self, port: int) -> Path:
        config = [
            f"listener {port} 127.0.0.1",
            "persistence false",
            "log_dest stderr",
            "log_type all",  # includes "Denied PUBLISH" lines, which are at debug level
            "connection_messages true",
        ]
        if os.geteuid() == 0:
            config.append("user root")  # otherwise mosquitto switches to user "mosquitto"
        if self.accounts is None:
            config.append("allow_anonymous true")
        else:
            config.append("allow_anonymous false")
            config.append(f"password_file {self._write_passwords(self.accounts)}")
            config.append(f"acl_file {self._write_acl(self.accounts)}")
        path = self.directory / "mosquitto.conf"
        path.write_text("\n".join(config) + "\n")
        return path

    def start(self) -> None:
        """Start on a free port and return once the broker says it is running."""
        for _ in range(5):
            if self._try_start(free_port()):
                return
            if not any("Address already in use" in line for line in self.lines[-5:]):
                break
        raise RuntimeError("mosquitto did not start:\n" + "\n".join(self.lines[-30:]))

    def start_on(self, port: int) -> None:
        """Start again on ``port`` (after :meth:`stop`), as a broker restart would."""
        if not self._try_start(port):
            raise RuntimeError("mosquitto did not restart:\n" + "\n".join(self.lines[-30:]))

    def _try_start(self, port: int) -> bool:
        binary = require_mosquitto()
        self.directory.mkdir(parents=True, exist_ok=True)
        config = self._write_config(port)
        process = subprocess.Popen(
            [binary, "-c", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._process = process
        self.log = LogWatcher(process, "mosquitto")
        try:
            self.log.wait(RUNNING, START_TIMEOUT)
        except AssertionError:
            if not self.log.ended:  # timed out: the error shows the log
                process.kill()
                raise
            process.wait(timeout=5)
            self._process = None
            return False
        self.port = port
        return True

    def wait_for_log(self, pattern: str, timeout: float = START_TIMEOUT) -> str:
        """The first line the running broker has logged or logs (since its latest start)
        matching ``pattern``; fails on timeout."""
        assert self.log is not None, "mosquitto never started"
        return self.log.lines[self.log.wait(pattern, timeout)]

    def stop(self) -> None:
        """Stop the broker (SIGTERM, then SIGKILL if it lingers)."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)

    def __enter__(self) -> Mosquitto:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
