"""A throwaway PostgreSQL cluster for tests, on a free loopback port in a temporary directory.

``pg_cluster`` (session-scoped) runs ``initdb`` and ``pg_ctl`` from the Debian ``postgresql``
package (``/usr/lib/postgresql/<version>/bin``) with password authentication and no fsync,
listening on 127.0.0.1 only, and stops and removes it at the end. ``pg_url`` gives each test
an empty database: one database for the session whose ``public`` schema is dropped and made
anew before each test (much faster than a database per test). PostgreSQL refuses to run as root, so
under root the binaries run as the ``postgres`` user (or ``nobody``) through ``runuser``, and
the directory is handed to that user.

Without PostgreSQL or psycopg the fixtures skip with the reason, except under CI (``CI`` set),
where they fail: ``./dev setup`` installs PostgreSQL, so its absence there is a bug.

Use: ``from tests.pg import pg_cluster, pg_database, pg_url`` in a test module (pytest finds
imported fixtures), then ask for ``pg_url``.
"""

from __future__ import annotations

import os
import pwd
import re
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pytest

from tests.agents import free_port

SUPERUSER = "lichen"
START_TIMEOUT = 60  # seconds pg_ctl waits for the server to accept connections
COMMAND_TIMEOUT = 120.0  # seconds any one initdb/pg_ctl call may take before we give up
START_ATTEMPTS = 3  # another process may take the free port between our check and the bind
# A scratch server: durability is worthless here, speed is not.
SERVER_SETTINGS = (
    "fsync=off",
    "synchronous_commit=off",
    "full_page_writes=off",
    "listen_addresses=127.0.0.1",
)


def _unavailable(reason: str) -> NoReturn:
    if os.environ.get("CI"):
        pytest.fail(f"PostgreSQL tests must run under CI: {reason}")
    pytest.skip(reason)


def find_bin_dir() -> Path | None:
    """The newest ``/usr/lib/postgresql/<version>/bin`` that has initdb and pg_ctl."""

    def version(path: Path) -> tuple[int, ...]:
        return tuple(int(part) for part in re.findall(r"\d+", path.parent.name))

    found = [
        path
        for path in Path("/usr/lib/postgresql").glob("*/bin")
        if (path / "initdb").exists() and (path / "pg_ctl").exists()
    ]
    return max(found, key=version) if found else None


def _server_user() -> pwd.struct_passwd | None:
    """The unprivileged account to run PostgreSQL as when we are root; None when we are not."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    _unavailable("running as root and there is no postgres or nobody user to run PostgreSQL as")


@dataclass
class Cluster:
    """A running scratch cluster and how to reach it."""

    bin_dir: Path
    root: Path
    port: int
    password: str
    user: pwd.struct_passwd | None

    @property
    def data_dir(self) -> Path:
        """The cluster's data directory."""
        return self.root / "data"

    @property
    def log_file(self) -> Path:
        """The server's log, shown when it fails to start."""
        return self.root / "server.log"

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run a PostgreSQL program from ``bin_dir`` as the cluster's user."""
        command = [str(self.bin_dir / args[0]), *args[1:]]
        if self.user is not None:
            command = ["runuser", "-u", self.user.pw_name, "--", *command]
        return subprocess.run(
            command,
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT,
            check=False,
        )

    def url(self, database: str) -> str:
        """The SQLAlchemy URL of ``database`` in this cluster."""
        return f"postgresql+psycopg://{SUPERUSER}:{self.password}@127.0.0.1:{self.port}/{database}"

    def run_sql(self, database: str, *statements: str, name: str = "") -> None:
        """Run ``statements`` in ``database`` as the superuser, with ``{}`` standing for the
        identifier ``name`` (quoted, never pasted in)."""
        import psycopg
        from psycopg import sql

        conninfo = f"host=127.0.0.1 port={self.port} user={SUPERUSER} dbname={database}"
        with psycopg.connect(conninfo, password=self.password, autocommit=True) as conn:
            for statement in statements:
                query = sql.SQL(statement)
                conn.execute(query.format(sql.Identifier(name)) if name else query)

    def create_database(self, name: str) -> str:
        """Create an empty database; its URL."""
        self.run_sql("postgres", "CREATE DATABASE {} STRATEGY FILE_COPY", name=name)
        return self.url(name)

    def allow_connections(self, url: str, allowed: bool) -> None:
        """Let clients into the database of ``url``, or refuse them and end every session it
        has: to its clients, the database has gone away (and, allowed again, come back)."""
        name = url.rsplit("/", 1)[1]
        if allowed:
            self.run_sql("postgres", "ALTER DATABASE {} ALLOW_CONNECTIONS true", name=name)
            return
        self.run_sql("postgres", "ALTER DATABASE {} ALLOW_CONNECTIONS false", name=name)
        import psycopg
        from psycopg import sql

        conninfo = f"host=127.0.0.1 port={self.port} user={SUPERUSER} dbname=postgres"
        with psycopg.connect(conninfo, password=self.password, autocommit=True) as conn:
            conn.execute(
                sql.SQL(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = {} AND pid <> pg_backend_pid()"
                ).format(sql.Literal(name))
            )

    def stop(self) -> None:
        """Stop the server at once (nothing in it is worth a clean shutdown)."""
        self.run("pg_ctl", "-D", str(self.data_dir), "-m", "immediate", "-w", "stop")


def _init(bin_dir: Path, user: pwd.struct_passwd | None) -> Cluster:
    root = Path(tempfile.mkdtemp(prefix="lichen-pg-"))
    password = secrets.token_hex(16)
    cluster = Cluster(bin_dir, root, 0, password, user)
    pwfile = root / "password"
    pwfile.write_text(password + "\n")
    if user is not None:
        for path in (root, pwfile):
            os.chown(path, user.pw_uid, user.pw_gid)
    pwfile.chmod(0o600)
    done = cluster.run(
        "initdb",
        "-D",
        str(cluster.data_dir),
        "-U",
        SUPERUSER,
        "--auth=scram-sha-256",
        f"--pwfile={pwfile}",
        "--encoding=UTF8",
        "--no-locale",
        "--no-sync",
    )
    pwfile.unlink()
    if done.returncode != 0:
        shutil.rmtree(root, ignore_errors=True)
        _unavailable(f"initdb failed: {done.stderr.strip() or done.stdout.strip()}")
    return cluster


def _start(cluster: Cluster) -> bool:
    cluster.port = free_port()
    options = [f"-p {cluster.port}", f"-k {cluster.root}"]
    options += [f"-c {setting}" for setting in SERVER_SETTINGS]
    done = cluster.run(
        "pg_ctl",
        "-D",
        str(cluster.data_dir),
        "-l",
        str(cluster.log_file),
        "-w",
        "-t",
        str(START_TIMEOUT),
        "-o",
        " ".join(options),
        "start",
    )
    return done.returncode == 0


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    """A scratch PostgreSQL cluster for the whole test session."""
    bin_dir = find_bin_dir()
    if bin_dir is None:
        _unavailable("PostgreSQL is not installed (apt-get install postgresql, or ./dev setup)")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _unavailable("psycopg is not installed (pip install 'psycopg[binary]')")
    cluster = _init(bin_dir, _server_user())
    try:
        if not any(_start(cluster) for _ in range(START_ATTEMPTS)):
            log = cluster.log_file.read_text() if cluster.log_file.exists() else ""
            _unavailable(f"PostgreSQL did not start: {log[-2000:]}")
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(cluster.root, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_database(pg_cluster: Cluster) -> str:
    """The URL of one database for the session; ``pg_url`` empties it before each test."""
    return pg_cluster.create_database(f"lichen_test_{os.getpid()}")


@pytest.fixture
def pg_url(pg_cluster: Cluster, pg_database: str) -> str:
    """The URL of an empty database: the session's, with its ``public`` schema made anew.

    Dropping a schema takes milliseconds where CREATE DATABASE takes most of a second.
    """
    name = pg_database.rsplit("/", 1)[1]
    pg_cluster.run_sql(name, "DROP SCHEMA public CASCADE", "CREATE SCHEMA public")
    return pg_database
