"""Sensor enrollment and admission: who may write readings to this agent's streams.

A sensor is enrolled with ``lichen sensor add`` and gets a 32-byte key. It sends each SenML
pack as a COSE_Mac0 (Content-Format 17) whose ``kid`` is its name and whose protected Partial
IV is its message counter (:func:`lichen.cose.mac0`). The agent admits the pack only if the
kid names an enrolled sensor that is not revoked, the MAC verifies under its key, the stream
is the one it was enrolled for, and the counter is above the highest it accepted from that
sensor. A stock CoAP client that cannot compute a MAC may instead be enrolled with a token
(off by default), sent as the URI query ``t=<token>`` with a SenML+JSON or SenML+CBOR body.
A token is a bearer secret with no replay protection: meant for a LAN you trust.

Provenance: every admitted reading is renamed ``<sensor>:<name>``, so the sensor that wrote
it is part of the reading itself: in the write-ahead log, in the sealed SenML pack whose
content address the agent signs (COSE_Sign1, Ed25519) into the stream's hash chain, and in
``lichen stream read``. That signature is the agent's counter-signature: it says "I accepted
these readings from these sensors". The sensor's MAC itself is not kept, because a MAC under
a shared key proves nothing to anyone but the agent and the sensor. One sensor cannot write a
reading that reads as another's. Readings accepted unauthenticated from the agent's own host
keep their names.

Replays: the highest counter must survive a crash, and must never run ahead of or behind the
readings stored with it. So it is written with them: :attr:`Admission.mark` goes into the
stream's write-ahead log in the same append as the readings, and :meth:`recover` reads it back
at start-up. Before a log is trimmed the registry file is checkpointed
(:meth:`SensorRegistry.checkpoint`). A message equal, byte for byte in its MAC, to the last
one accepted from a sensor is answered 2.04 again and stored nothing: a sensor whose answer
was lost in a crash resends the very same message, and this makes that resend idempotent.

The registry is one CBOR file, ``sensors.cbor`` in the data directory, mode 0600 (it holds
keys), replaced atomically (:func:`edge_agent.fsutil.write_secret`). The command line and the
running agent both write it, each under an exclusive ``flock`` on ``sensors.lock`` and as a
read-modify-write, so neither loses the other's change; the agent notices a change made by
the command line by the file's identity (inode, size, mtime) before each admission, which
costs one ``stat``. That needs no running agent to enroll a sensor, and no network protocol
for enrollment. As CDDL::

    registry = { "v" => 1, "sensors" => [* sensor] }
    sensor = {
      "name" => tstr,            ; [A-Za-z0-9][A-Za-z0-9._-]*, at most 63; the kid in UTF-8
      "stream" => tstr,          ; the one stream it may write
      "key" => bstr .size 32,    ; HMAC-SHA-256 key
      "token" => bstr .size 32 / null,   ; set only when token access is allowed
      "revoked" => bool,
      "counter" => uint,         ; highest message counter accepted (0: none yet)
      "tag" => bstr,             ; MAC tag of the message that carried it (empty: none)
      "added" => uint,           ; unix time of enrollment
    }
    mark = [name: tstr, key-id: bstr .size 8, counter: uint, tag: bstr]   ; in the stream log
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import dataclasses
import fcntl
import hashlib
import hmac
import os
import re
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_agent import fsutil
from lichen import cbor, cose, senml, stream
from lichen.errors import (
    ConfigError,
    LichenError,
    MalformedMessage,
    NotAuthorised,
    Refused,
    RemoteProtocolError,
    UnsupportedVersion,
)

REGISTRY_FILE = "sensors.cbor"
LOCK_FILE = "sensors.lock"
REGISTRY_VERSION = 1
KEY_SIZE = 32  # RFC 9053 section 3.1: HMAC 256/256 takes a 256-bit key
TOKEN_SIZE = 32
KEY_ID_SIZE = 8  # bytes of SHA-256(key) in a mark: tells enrollments of one name apart
MAX_SENSORS = 1024  # sensors one agent enrolls; bounds the file and every lookup
MAX_REGISTRY_BYTES = MAX_SENSORS * 512  # one entry is about 200 bytes
MAX_NAME = 63
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
TOKEN_QUERY = "t"
PROVENANCE_SEPARATOR = ":"
CT_COSE_MAC0 = 17  # application/cose; cose-type="cose-mac0", RFC 9052 section 11.2
MAX_MESSAGE_BYTES = senml.MAX_PACK_BYTES
"""Largest request body of readings in any format, a COSE_Mac0 included (about 120 bytes
of it are COSE's): one datagram, as :data:`lichen.senml.MAX_PACK_BYTES` explains."""

_MAC0_LIMITS = cbor.Limits(
    max_size=MAX_MESSAGE_BYTES, max_depth=4, max_items=32, allowed_tags=frozenset({17})
)
_REGISTRY_LIMITS = cbor.Limits(
    max_size=MAX_REGISTRY_BYTES,
    max_depth=4,
    max_items=MAX_SENSORS * 20 + 8,
    allowed_tags=frozenset(),
)
_MARK_LIMITS = cbor.Limits(max_size=256, max_depth=2, max_items=8, allowed_tags=frozenset())


def check_name(name: str) -> str:
    """``name`` if it is a valid sensor name; :class:`ConfigError` otherwise."""
    if not NAME.fullmatch(name):
        raise ConfigError(
            f"sensor name {name!r}: 1 to {MAX_NAME} letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def key_id(key: bytes) -> bytes:
    """A short, non-secret fingerprint of ``key``."""
    return hashlib.sha256(b"lichen sensor key id\x00" + key).digest()[:KEY_ID_SIZE]


def token_text(token: bytes) -> str:
    """A token as it goes in a URI query: base64url without padding (43 characters)."""
    return base64.urlsafe_b64encode(token).rstrip(b"=").decode("ascii")


def _token_bytes(text: str) -> bytes | None:
    if len(text) != 43:
        return None
    try:
        return base64.urlsafe_b64decode(text + "=")
    except (binascii.Error, ValueError):
        return None


@dataclass(frozen=True)
class Sensor:
    """One enrolled sensor, as the registry holds it."""

    name: str
    stream: str
    key: bytes = field(repr=False)
    token: bytes | None = field(default=None, repr=False)
    """The token a stock client may send instead of a MAC; None: token access is off."""
    revoked: bool = False
    counter: int = 0
    """The highest message counter accepted from this sensor."""
    tag: bytes = field(default=b"", repr=False)
    """The MAC tag of the message that carried :attr:`counter`."""
    added: int = 0

    @property
    def kid(self) -> bytes:
        """The COSE key id the sensor sends: its name."""
        return self.name.encode()

    def to_cbor(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "stream": self.stream,
            "key": self.key,
            "token": self.token,
            "revoked": self.revoked,
            "counter": self.counter,
            "tag": self.tag,
            "added": self.added,
        }

    @classmethod
    def from_cbor(cls, raw: Any) -> Sensor:
        if not isinstance(raw, dict):
            raise MalformedMessage("a sensor entry must be a map")
        fields = cbor.MapReader(raw, "sensor")
        name = fields.tstr("name", max_size=MAX_NAME)
        if not NAME.fullmatch(name):
            raise MalformedMessage(f"sensor name {name!r} is not valid")
        token = fields.optional("token")
        if token is not None and (not isinstance(token, bytes) or len(token) != TOKEN_SIZE):
            raise MalformedMessage(f"sensor {name}: token must be {TOKEN_SIZE} bytes or null")
        revoked = fields.optional("revoked")
        if not isinstance(revoked, bool):
            raise MalformedMessage(f"sensor {name}: revoked must be a boolean")
        sensor = cls(
            name=name,
            stream=stream.check_stream_name(fields.tstr("stream")),
            key=fields.bstr("key", size=KEY_SIZE),
            token=token,
            revoked=revoked,
            counter=fields.uint("counter"),
            tag=fields.bstr("tag", max_size=cose.HMAC_TAG_SIZE),
            added=fields.uint("added"),
        )
        fields.finish()
        return sensor


@dataclass
class Admission:
    """Readings that passed every check, ready to be stored.

    After storing them call :meth:`commit`; if storing fails, :meth:`release`, so that the
    sensor may send the same message again.
    """

    records: tuple[senml.Record, ...]
    sensor: str | None = None
    """The sensor they came from; None for unauthenticated readings from this host."""
    mark: bytes | None = None
    """What to store with them so the counter survives a crash (MACed readings only)."""
    duplicate: bool = False
    """The message is the last one this sensor sent, already stored: store nothing."""
    _registry: SensorRegistry | None = None
    _counter: int = 0
    _tag: bytes = b""

    def commit(self) -> None:
        """The readings are stored: the counter and tag become the sensor's last."""
        if self._registry is not None and self.sensor is not None and self.mark is not None:
            self._registry._set_counter(self.sensor, self._counter, self._tag)

    def release(self) -> None:
        """The readings were not stored: give the counter back."""
        if self._registry is not None and self.sensor is not None and self.mark is not None:
            self._registry._release(self.sensor, self._counter)


class SensorRegistry:
    """The enrolled sensors of one agent, backed by ``<data_dir>/sensors.cbor``."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.path = data_dir / REGISTRY_FILE
        self._sensors: dict[str, Sensor] = {}
        self._stamp: tuple[int, int, int] | None = None
        self._highest: dict[str, int] = {}  # counters reserved by admissions in flight
        # Admissions run in worker threads, commits and checkpoints in the stream's writer
        # thread: every change to the entries in memory holds this lock.
        self._lock = threading.RLock()

    # -- the file -------------------------------------------------------------------------------

    @classmethod
    def open(cls, data_dir: Path) -> SensorRegistry:
        """The registry of ``data_dir`` (empty if no sensor was ever enrolled)."""
        registry = cls(data_dir)
        try:
            registry.refresh()
        except (RemoteProtocolError, OSError) as exc:
            raise ConfigError(f"{registry.path}: cannot read the sensor registry: {exc}") from None
        return registry

    def _file_stamp(self) -> tuple[int, int, int] | None:
        try:
            info = os.stat(self.path)
        except FileNotFoundError:
            return None
        return (info.st_ino, info.st_size, info.st_mtime_ns)

    def _read(self) -> dict[str, Sensor]:
        try:
            raw = fsutil.read_bounded(self.path, MAX_REGISTRY_BYTES)
        except FileNotFoundError:
            return {}
        value = cbor.decode(raw, _REGISTRY_LIMITS)
        if not isinstance(value, dict) or value.get("v") != REGISTRY_VERSION:
            raise UnsupportedVersion(f"{self.path}: not a version {REGISTRY_VERSION} registry")
        fields = cbor.MapReader(value, "sensor registry")
        fields.optional("v")
        entries = [Sensor.from_cbor(e) for e in fields.array("sensors", max_len=MAX_SENSORS)]
        fields.finish()
        sensors = {s.name: s for s in entries}
        if len(sensors) != len(entries):
            raise MalformedMessage(f"{self.path}: a sensor name appears twice")
        return sensors

    def _write(self, sensors: dict[str, Sensor]) -> None:
        body = {"v": REGISTRY_VERSION, "sensors": [s.to_cbor() for s in sensors.values()]}
        fsutil.write_secret(self.path, cbor.encode(body))

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        fd = os.open(self.data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, fsutil.SECRET_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def _merge(self, on_disk: dict[str, Sensor]) -> dict[str, Sensor]:
        """The file's entries, with the higher counter of file and memory for each same key."""
        merged = {}
        for name, sensor in on_disk.items():
            mine = self._sensors.get(name)
            if mine is not None and mine.key == sensor.key and mine.counter > sensor.counter:
                sensor = dataclasses.replace(sensor, counter=mine.counter, tag=mine.tag)
            merged[name] = sensor
        return merged

    def refresh(self) -> None:
        """Re-read the file if another process changed it since this one last did."""
        stamp = self._file_stamp()
        if stamp == self._stamp:
            return
        with self._lock:
            self._sensors = self._merge(self._read())
            self._stamp = stamp

    def _update(self, change: Any) -> Sensor:
        """Apply ``change(sensors) -> Sensor`` to the file's entries, under the lock."""
        with self._locked(), self._lock:
            sensors = self._merge(self._read())
            changed = change(sensors)
            self._write(sensors)
            self._sensors = sensors
            self._stamp = self._file_stamp()
        return changed  # type: ignore[no-any-return]

    # -- enrollment (the command line) ----------------------------------------------------------

    def add(
        self, name: str, stream_name: str, *, key: bytes, token: bytes | None, now: int
    ) -> Sensor:
        """Enroll ``name`` for ``stream_name``; ConfigError if it is enrolled and not revoked.

        A revoked name may be enrolled again: it gets a new key and starts from counter 0.
        """
        check_name(name)
        stream.check_stream_name(stream_name)
        if len(key) != KEY_SIZE:
            raise ConfigError(f"a sensor key is {KEY_SIZE} bytes, not {len(key)}")

        def change(sensors: dict[str, Sensor]) -> Sensor:
            old = sensors.get(name)
            if old is not None and not old.revoked:
                raise ConfigError(f"sensor {name} is already enrolled (revoke it first)")
            if old is not None and old.key == key:
                raise ConfigError(f"sensor {name} was revoked with this key: use a new key")
            if old is None and len(sensors) >= MAX_SENSORS:
                raise ConfigError(f"this agent already has {MAX_SENSORS} sensors")
            sensors[name] = Sensor(name, stream_name, key, token, added=now)
            return sensors[name]

        return self._update(change)

    def revoke(self, name: str) -> Sensor:
        """Revoke ``name``: from now on its readings get 4.03."""

        def change(sensors: dict[str, Sensor]) -> Sensor:
            if name not in sensors:
                raise ConfigError(f"no sensor named {name!r} is enrolled")
            sensors[name] = dataclasses.replace(sensors[name], revoked=True)
            return sensors[name]

        return self._update(change)

    def sensors(self) -> list[Sensor]:
        """Every enrolled sensor (revoked ones too), by name."""
        self.refresh()
        return sorted(self._sensors.values(), key=lambda s: s.name)

    def get(self, name: str) -> Sensor | None:
        """The sensor called ``name``, if enrolled."""
        return self._sensors.get(name)

    # -- counters (the agent) --------------------------------------------------------------------

    def checkpoint(self) -> None:
        """Write the counters accepted so far to the file (before a stream log is trimmed)."""
        if not self._sensors and not self.path.exists():
            return  # no sensor was ever enrolled: nothing to keep
        with self._locked(), self._lock:
            self._sensors = self._merge(self._read())
            self._write(self._sensors)
            self._stamp = self._file_stamp()

    def recover(self, marks: Iterable[bytes]) -> int:
        """Raise counters to those in marks found in stream logs; return how many were used."""
        used = 0
        for raw in marks:
            try:
                value = cbor.decode(raw, _MARK_LIMITS)
                name, kid_hash, counter, tag = value
                if not (isinstance(name, str) and isinstance(counter, int)):
                    continue
            except (LichenError, ValueError, TypeError):
                continue
            with self._lock:
                sensor = self._sensors.get(name)
                if sensor is None or key_id(sensor.key) != kid_hash or counter <= sensor.counter:
                    continue
                self._sensors[name] = dataclasses.replace(sensor, counter=counter, tag=bytes(tag))
            used += 1
        return used

    def _set_counter(self, name: str, counter: int, tag: bytes) -> None:
        with self._lock:
            sensor = self._sensors.get(name)
            if sensor is not None and counter > sensor.counter:
                self._sensors[name] = dataclasses.replace(sensor, counter=counter, tag=tag)
            if self._highest.get(name) == counter:
                del self._highest[name]

    def _release(self, name: str, counter: int) -> None:
        with self._lock:
            if self._highest.get(name) == counter:
                del self._highest[name]

    # -- admission ---------------------------------------------------------------------------

    def admit(
        self,
        stream_name: str,
        content_format: int,
        payload: bytes,
        query: Sequence[str],
        *,
        local: bool,
        now: float,
    ) -> Admission:
        """Check a POST of readings to ``stream_name``; the readings it may store.

        Raises :class:`NotAuthorised` (4.01: unknown sensor or token, bad MAC, replay, no
        credentials from another host), :class:`Refused` (4.03: revoked, another stream), or
        :class:`MalformedMessage` (4.00).
        """
        self.refresh()
        if content_format == CT_COSE_MAC0:
            return self._admit_mac0(stream_name, payload, now)
        token = query_value(query, TOKEN_QUERY)
        if token is not None:
            sensor = self._by_token(token)
            self._check_may_write(sensor, stream_name)
            records = _named(sensor.name, senml.decode(payload, content_format, now))
            return Admission(records, sensor=sensor.name)
        if not local:
            raise NotAuthorised("readings need an enrolled sensor key")
        return Admission(senml.decode(payload, content_format, now))

    def check_reader(self, stream_name: str, token: str) -> Sensor:
        """The sensor whose ``token`` lets a client read ``stream_name``; raises as admit()."""
        self.refresh()
        sensor = self._by_token(token)
        self._check_may_write(sensor, stream_name)
        return sensor

    def _check_may_write(self, sensor: Sensor, stream_name: str) -> None:
        if sensor.revoked:
            raise Refused(f"sensor {sensor.name} is revoked")
        if sensor.stream != stream_name:
            raise Refused(f"sensor {sensor.name} writes to stream {sensor.stream}, not this one")

    def _by_token(self, text: str) -> Sensor:
        token = _token_bytes(text)
        if token is not None:
            for sensor in self._sensors.values():
                if sensor.token is not None and hmac.compare_digest(sensor.token, token):
                    return sensor
        raise NotAuthorised("unknown sensor token")

    def _admit_mac0(self, stream_name: str, payload: bytes, now: float) -> Admission:
        message = cose.parse(payload, _MAC0_LIMITS)
        if message.tag != cose.TAG_MAC0:
            raise MalformedMessage("content-format 17 carries a COSE_Mac0")
        name = message.kid.decode("utf-8", "replace")
        sensor = self._sensors.get(name)
        if sensor is None:
            raise NotAuthorised(f"no sensor {name[:MAX_NAME]!r} is enrolled here")
        message.verify_mac(sensor.key)
        self._check_may_write(sensor, stream_name)
        counter = message.counter
        if counter is None:
            raise NotAuthorised("a sensor message needs a counter (Partial IV)")
        named = _named(name, senml.decode_cbor(message.payload, now))
        with self._lock:
            sensor = self._sensors.get(name, sensor)  # a commit may have raised its counter
            highest = max(sensor.counter, self._highest.get(name, 0))
            if counter <= highest:
                tag = sensor.tag
                if counter == sensor.counter and hmac.compare_digest(message.authenticator, tag):
                    return Admission((), sensor=name, duplicate=True)
                raise NotAuthorised(
                    f"replay: counter {counter} is not above {highest}, "
                    f"the last accepted from sensor {name}"
                )
            if not named:
                raise MalformedMessage("the pack holds no readings")
            self._highest[name] = counter
        mark = cbor.encode([name, key_id(sensor.key), counter, message.authenticator])
        return Admission(
            named,
            sensor=name,
            mark=mark,
            _registry=self,
            _counter=counter,
            _tag=message.authenticator,
        )


def query_value(query: Sequence[str], key: str) -> str | None:
    """The value of the first ``key=value`` item of a CoAP Uri-Query, or None."""
    for item in query:
        name, _, value = item.partition("=")
        if name == key:
            return value
    return None


def _named(sensor: str, records: tuple[senml.Record, ...]) -> tuple[senml.Record, ...]:
    """``records`` renamed ``<sensor>:<name>``: the sensor is part of each reading."""
    prefix = sensor + PROVENANCE_SEPARATOR
    try:
        return tuple(dataclasses.replace(r, name=prefix + r.name) for r in records)
    except LichenError as exc:
        raise MalformedMessage(f"reading name too long with the sensor's name: {exc}") from None


def new_secret() -> bytes:
    """32 random bytes: a new sensor key or token."""
    return os.urandom(KEY_SIZE)
