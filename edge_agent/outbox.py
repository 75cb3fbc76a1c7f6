"""What this agent owes the hub, kept across restarts: its receipts and the manifests it owns.

Two kinds of item go to the hub in ``receipts`` batches (:func:`lichen.hubmessages.make_receipts`):

- a receipt for every shard this agent holds. The store is the durable copy
  (:meth:`ShardStore.put_receipt`, called when a shard is accepted); a held shard whose receipt
  is missing or unreadable (a crash between the two writes, a shard stored by an older agent)
  gets a fresh one signed from its header.
- every manifest this agent owns with all n owner-signed shard headers, which the hub needs to
  order repairs. ``lichen put`` leaves them with its local agent (``PUT
  /manifests/<cid>/headers``) and the stream sealer hands them over directly; each is written
  to ``<dir>/owned/<cid>`` (CBOR ``[manifest, [headers]]``, atomic) before the upload is
  answered.

What was sent is recorded in ``<dir>/sent``, an append-only log fsynced after the broker
acknowledged (PUBACK) the batch that carried it: ``hub <hub key hex>`` on the first line, then
``r <cid hex> <index>`` or ``m <cid hex>`` per item. A crash between the PUBACK and the fsync
sends that batch again, so the hub must take a repeated receipt or manifest as a no-op. When
the pinned hub changes, the log starts over and everything is sent to the new hub. The log is
compacted when it opens (entries for shards and manifests no longer held are dropped).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from edge_agent import fsutil
from edge_agent.store import ShardStore
from lichen import cbor, cid, holder, shard
from lichen.errors import LichenError, LocalProtocolError, MalformedMessage, RemoteProtocolError
from lichen.hubmessages import ManifestUpload
from lichen.identity import Identity, PublicIdentity
from lichen.manifest import MANIFEST_LIMITS, Manifest, check_header, open_manifest, open_receipt

OWNED_DIR = "owned"
SENT_FILE = "sent"
# A manifest (at most MANIFEST_LIMITS.max_size) and 256 signed headers of at most 1 KiB each.
MAX_HEADER_SIZE = 1024
MAX_OWNED_SIZE = MANIFEST_LIMITS.max_size + shard.MAX_SHARDS * (MAX_HEADER_SIZE + 8) + 64
OWNED_LIMITS = cbor.Limits(
    max_size=MAX_OWNED_SIZE, max_depth=3, max_items=8 + shard.MAX_SHARDS, allowed_tags=frozenset()
)
# 64 bytes a line is plenty ("r" + 72 hex digits + an index); a longer log is compacted.
MAX_SENT_LOG = 64 * 1024 * 1024
_COMPACT_SLACK = 256  # stale lines tolerated before the log is rewritten at open

Logger = logging.Logger | logging.LoggerAdapter[logging.Logger]
ItemKey = tuple[str, bytes, int]
"""("r", object CID, shard index) for a receipt, ("m", object CID, 0) for a manifest."""


@dataclass(frozen=True)
class Pending:
    """Items the broker has not acknowledged, each with the key :meth:`Outbox.mark_sent` takes."""

    receipts: list[tuple[ItemKey, bytes]]
    manifests: list[tuple[ItemKey, tuple[bytes, tuple[bytes, ...]]]]

    def __bool__(self) -> bool:
        return bool(self.receipts or self.manifests)


def decode_owned(data: bytes, owner: PublicIdentity | None) -> ManifestUpload:
    """Parse and check ``[signed manifest, [n signed headers]]`` (the ``manifest-upload`` of
    :mod:`lichen.hubmessages`); with ``owner``, the manifest must be that node's.

    Raises :class:`MalformedMessage`, :class:`BadSignature` or :class:`IntegrityError`.
    """
    raw = cbor.decode(data, OWNED_LIMITS)
    if not (
        isinstance(raw, list)
        and len(raw) == 2
        and isinstance(raw[0], bytes)
        and isinstance(raw[1], list)
        and all(isinstance(h, bytes) and len(h) <= MAX_HEADER_SIZE for h in raw[1])
    ):
        raise MalformedMessage("expected [manifest, [headers]] with headers of at most 1 KiB")
    signed, headers = raw[0], tuple(raw[1])
    manifest = open_manifest(signed)
    if owner is not None and manifest.owner != owner.public_key:
        raise MalformedMessage("the manifest is owned by another node")
    if len(headers) != manifest.n:
        raise MalformedMessage(f"{len(headers)} headers for a manifest with n = {manifest.n}")
    for index, header in enumerate(headers):
        check_header(manifest, index, header)
    return ManifestUpload(signed, manifest, headers)


def encode_owned(signed_manifest: bytes, headers: Sequence[bytes]) -> bytes:
    """The CBOR ``[manifest, [headers]]`` that :func:`decode_owned` reads."""
    return cbor.encode([signed_manifest, list(headers)])


class Outbox:
    """The durable list of what the hub has not yet acknowledged; see the module docstring.

    Blocking and thread-safe: the agent calls it through ``asyncio.to_thread``. ``wake`` (set by
    the hub link) is called, from whatever thread, whenever something new is to be sent.
    """

    def __init__(self, directory: Path, store: ShardStore, identity: Identity, log: Logger) -> None:
        """Use :meth:`open`."""
        self.directory = directory
        self.store = store
        self.identity = identity
        self.log = log
        self.wake: Callable[[], None] | None = None
        self._lock = threading.Lock()
        self._hub_key = ""
        self._sent: set[ItemKey] = set()
        self._log_lines = 0
        # Owned uploads checked since they were kept or first read, until the hub has them: a
        # send round does not check each unsent file again.
        self._checked: dict[bytes, ManifestUpload] = {}

    @classmethod
    def open(cls, directory: Path, store: ShardStore, identity: Identity, log: Logger) -> Outbox:
        """Open (creating) the outbox at ``directory`` and read its sent log."""
        outbox = cls(directory, store, identity, log)
        (directory / OWNED_DIR).mkdir(parents=True, exist_ok=True, mode=0o700)
        fsutil.remove_stale_temps_in(directory / OWNED_DIR, lambda name: True)
        fsutil.remove_stale_temps(directory / SENT_FILE)
        outbox._read_sent()
        return outbox

    # -- adding ------------------------------------------------------------------------------

    def keep_owned(
        self, signed_manifest: bytes, headers: Sequence[bytes], manifest: Manifest | None = None
    ) -> None:
        """Keep an owned manifest with its n signed headers until the hub has it (durable).

        The caller vouches for the headers (it made them, or :func:`decode_owned` checked
        them); ``manifest`` is ``signed_manifest`` already opened, else it is opened here.
        Raises :class:`LocalProtocolError` if the manifest is not this agent's or the headers
        are not one per shard.
        """
        try:
            opened = manifest if manifest is not None else open_manifest(signed_manifest)
        except RemoteProtocolError as exc:
            raise LocalProtocolError(f"not a manifest: {exc}") from exc
        if opened.owner != self.identity.public.public_key or len(headers) != opened.n:
            raise LocalProtocolError("not a manifest this agent owns with one header per shard")
        upload = ManifestUpload(signed_manifest, opened, tuple(headers))
        data = encode_owned(signed_manifest, headers)
        fsutil.atomic_write(self._owned_path(opened.object_cid), data, fsutil.SECRET_MODE)
        with self._lock:
            self._sent.discard(("m", opened.object_cid, 0))
            self._checked[opened.object_cid] = upload
        self.notify()

    def notify(self) -> None:
        """Tell the hub link there is something new (a receipt was just stored)."""
        if self.wake is not None:
            self.wake()

    # -- sending -----------------------------------------------------------------------------

    def use_hub(self, hub_key: bytes) -> None:
        """Send to the hub with this key from now on: a new hub has been sent nothing."""
        with self._lock:
            if self._hub_key == hub_key.hex():
                return
            self._hub_key = hub_key.hex()
            self._sent.clear()
            self._rewrite()

    def pending(self, now: float) -> Pending:
        """Every receipt and owned manifest the current hub has not acknowledged."""
        with self._lock:
            sent = set(self._sent)
        receipts = []
        for info in self.store.shards():
            key: ItemKey = ("r", info.header.object_cid, info.header.index)
            if key not in sent and info.expiry >= now:
                receipts.append((key, self._receipt_for(info.header, now)))
        manifests = []
        for object_cid, path in self._owned_files():
            key = ("m", object_cid, 0)
            if key in sent:
                continue
            upload = self._read_owned(object_cid, path, now)
            if upload is not None:
                manifests.append((key, upload))
        return Pending(receipts, manifests)

    def mark_sent(self, keys: Sequence[ItemKey]) -> None:
        """Record that the broker acknowledged these items (appended and fsynced)."""
        if not keys:
            return
        lines = "".join(_line(k) for k in keys).encode()
        with self._lock:
            if not self._hub_key:
                raise LocalProtocolError("mark_sent() before use_hub()")
            fd = os.open(self.directory / SENT_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                fsutil.write_all(fd, lines)
                fsutil.sync_file(fd, data_only=True)
            finally:
                os.close(fd)
            self._sent.update(keys)
            self._log_lines += len(keys)
            for kind, object_cid, _ in keys:
                if kind == "m":
                    self._checked.pop(object_cid, None)

    # -- internals ---------------------------------------------------------------------------

    def _owned_path(self, object_cid: bytes) -> Path:
        return self.directory / OWNED_DIR / cid.to_text(object_cid)

    def _owned_files(self) -> list[tuple[bytes, Path]]:
        found = []
        for entry in sorted(os.listdir(self.directory / OWNED_DIR)):
            try:
                found.append((cid.from_text(entry), self.directory / OWNED_DIR / entry))
            except MalformedMessage:
                continue  # a temporary file or a stranger: not ours to touch
        return found

    def _read_owned(
        self, object_cid: bytes, path: Path, now: float
    ) -> tuple[bytes, tuple[bytes, ...]] | None:
        with self._lock:
            upload = self._checked.get(object_cid)
        try:
            if upload is None:
                data = fsutil.read_bounded(path, MAX_OWNED_SIZE)
                upload = decode_owned(data, self.identity.public)
                if upload.manifest.object_cid != object_cid:
                    raise MalformedMessage("the file names another object")
        except FileNotFoundError:
            return None
        except (OSError, RemoteProtocolError) as exc:
            self.log.error("outbox: dropping damaged %s: %s", path.name, exc)
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            return None
        if upload.manifest.expiry < now:
            with self._lock:
                self._checked.pop(object_cid, None)
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            return None
        with self._lock:
            self._checked[object_cid] = upload
        return upload.signed, upload.headers

    def _receipt_for(self, header: shard.ShardHeader, now: float) -> bytes:
        """This agent's stored receipt for a held shard, or a fresh one, stored."""
        me = self.identity.public
        signed = self.store.receipt(header.object_cid, header.index, me.kid)
        if signed is not None:
            try:
                # Checked here, as one bad receipt would make the hub refuse the whole batch.
                if open_receipt(signed, me).root == header.root:
                    return signed
            except RemoteProtocolError:
                pass
        signed = holder.receipt_for(header, self.identity, int(now)).sign(self.identity)
        try:
            self.store.put_receipt(signed, header.object_cid, header.index, me.kid)
        except (OSError, LichenError) as exc:
            self.log.warning("outbox: receipt for shard %d not kept: %s", header.index, exc)
        return signed

    def _read_sent(self) -> None:
        path = self.directory / SENT_FILE
        try:
            text = fsutil.read_bounded(path, MAX_SENT_LOG).decode("ascii", "replace")
        except FileNotFoundError:
            return
        except (OSError, MalformedMessage) as exc:
            self.log.warning("outbox: sent log unreadable (%s): everything will be sent again", exc)
            return
        lines = text.split("\n")
        head = lines[0].split(" ")
        if len(head) != 2 or head[0] != "hub":
            self.log.warning("outbox: sent log has no hub line: everything will be sent again")
            return
        self._hub_key = head[1]
        # A torn last line (crash during the append) simply does not parse and is sent again.
        for line in lines[1:]:
            key = _parse_line(line)
            if key is not None:
                self._sent.add(key)
        self._log_lines = len(lines) - 1
        live = self._live_keys()
        if self._log_lines > len(self._sent & live) + _COMPACT_SLACK:
            self._sent &= live
            self._rewrite()

    def _live_keys(self) -> set[ItemKey]:
        keys: set[ItemKey] = {
            ("r", s.header.object_cid, s.header.index) for s in self.store.shards()
        }
        keys.update(("m", object_cid, 0) for object_cid, _ in self._owned_files())
        return keys

    def _rewrite(self) -> None:
        """Write the log afresh (atomically) from the in-memory set; the lock is held."""
        body = f"hub {self._hub_key}\n" + "".join(_line(k) for k in sorted(self._sent))
        fsutil.atomic_write(self.directory / SENT_FILE, body.encode(), fsutil.SECRET_MODE)
        self._log_lines = len(self._sent)


def _line(key: ItemKey) -> str:
    kind, object_cid, index = key
    return f"r {object_cid.hex()} {index}\n" if kind == "r" else f"m {object_cid.hex()}\n"


def _parse_line(line: str) -> ItemKey | None:
    parts = line.split(" ")
    try:
        if parts[0] == "r" and len(parts) == 3:
            object_cid, index = bytes.fromhex(parts[1]), int(parts[2])
            cid.check(object_cid)
            return ("r", object_cid, index) if 0 <= index < shard.MAX_SHARDS else None
        if parts[0] == "m" and len(parts) == 2:
            object_cid = bytes.fromhex(parts[1])
            cid.check(object_cid)
            return ("m", object_cid, 0)
    except (ValueError, MalformedMessage):
        return None
    return None
