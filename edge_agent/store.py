"""The agent's on-disk store of shards, manifests and receipts.

One file per shard (owner-signed header, leaf hashes and body), per manifest and per receipt,
under a root directory; names and formats are in :mod:`edge_agent.store_format`. An in-memory
index maps (object CID, index) to each shard's header and file size.

Every file is written with :mod:`edge_agent.fsutil`'s atomic writes (temporary file, fsync,
rename, fsync of the directory): after a crash at any point a shard is absent or whole, never
torn or half-visible. :meth:`ShardStore.open` removes the temporaries of interrupted writes,
then reads each shard file's prefix and header only (not its body) to rebuild the index; a file
that does not parse (bad magic, bad signature, wrong name, size not matching its header, not a
regular file) is moved to ``quarantine/``, logged and counted, and never served. Other names
are ignored and left alone. A shard file of a newer format version is left in place and
skipped. :meth:`ShardStore.scrub` rereads bodies in bounded, resumable steps and quarantines
any that no longer match their Merkle root. Quarantined files are not counted in
:meth:`ShardStore.used_bytes`; emptying ``quarantine/`` is the operator's call.

Threading: the API is synchronous and blocking; the agent calls the large reads and writes
through ``asyncio.to_thread``. The ``put_*`` methods are serialised by a writer lock (one
writer at a time; the disk is the bottleneck anyway); every other call may run in another
thread at the same time, and a lock held only for in-memory updates and renames keeps the index
consistent. A read that races the removal of its shard returns None; a removal never takes away
a newer file written under the same name. Only one process may open a store directory.
"""

from __future__ import annotations

import bisect
import contextlib
import errno
import logging
import os
import secrets
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edge_agent import fsutil
from edge_agent import store_format as fmt
from edge_agent.store_format import HASH_SIZE, MetaKey, ShardInfo, ShardKey
from lichen import merkle, shard
from lichen.errors import (
    IntegrityError,
    LocalProtocolError,
    MalformedMessage,
    RemoteProtocolError,
    StoreFull,
    UnsupportedVersion,
)
from lichen.holder import Accepted
from lichen.manifest import (
    MANIFEST_LIMITS,
    RECEIPT_LIMITS,
    open_manifest,
    parse_receipt_unverified,
)

__all__ = ["ScrubReport", "ShardInfo", "ShardKey", "ShardStore", "StoreCounters"]

FILE_MODE = fsutil.SECRET_MODE  # only the agent reads its store
SHARD_DIR = "shards"
MANIFEST_DIR = "manifests"
RECEIPT_DIR = "receipts"
QUARANTINE_DIR = "quarantine"
# 8 MiB of trees: 32 trees of 64 MiB shards at the default 16 KiB blocks (4096 leaves each), so
# a challenge that samples a few dozen blocks of a few shards builds each tree once.
DEFAULT_TREE_CACHE_BYTES = 8 * 1024 * 1024
# A MerkleTree keeps every level: the leaf level plus at most as many bytes again above it.
_TREE_BYTES_PER_LEAF = 2 * HASH_SIZE
_TREE_OVERHEAD = 256

Logger = logging.Logger | logging.LoggerAdapter[logging.Logger]
_default_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScrubReport:
    """What one :meth:`ShardStore.scrub` call checked and found.

    ``corrupt`` shards (body, header or file damaged, or the file gone) were removed from the
    index and quarantined; ``repaired`` ones had only damaged leaf hashes, rewritten from the
    good body. ``finished_pass`` is true when the cursor passed the last shard in this call.
    """

    checked: tuple[ShardKey, ...]
    corrupt: tuple[ShardKey, ...]
    repaired: tuple[ShardKey, ...]
    bytes_checked: int
    finished_pass: bool


@dataclass(frozen=True)
class StoreCounters:
    """A snapshot of the figures the agent exports as metrics."""

    shards: int
    bytes: int
    """Same as :meth:`ShardStore.used_bytes`."""
    manifests: int
    receipts: int
    corrupt_found: int
    """Files (shards, manifests, receipts) found damaged or gone since open, then quarantined."""
    repaired: int
    """Shards whose leaf hashes were rewritten from a good body, since open."""
    quarantined_at_open: int
    ignored_at_open: int
    """Directory entries whose names are not the store's, left alone."""
    unsupported_at_open: int
    """Shard files of a newer format version, left in place and not served."""
    tree_cache_bytes: int
    """Estimated bytes of the Merkle trees cached for proofs."""


@dataclass(frozen=True)
class _MetaEntry:
    """An indexed manifest or receipt: when it expires, when it was made (the newest is kept)."""

    expiry: int
    created: int


def _manifest_fields(data: bytes) -> tuple[MetaKey, int, int]:
    manifest = open_manifest(data)  # checks the owner's signature too
    return (manifest.object_cid,), manifest.expiry, manifest.created


def _receipt_fields(data: bytes) -> tuple[MetaKey, int, int]:
    receipt = parse_receipt_unverified(data)  # the store holds no keys to check it with
    return (receipt.object_cid, receipt.index, receipt.holder), receipt.expiry, receipt.accepted_at


@dataclass(frozen=True)
class _MetaKind:
    """Where and how manifests, or receipts, are kept."""

    directory: str
    file_name: Callable[[MetaKey], str]
    parse_name: Callable[[str], MetaKey | None]
    max_size: int
    fields: Callable[[bytes], tuple[MetaKey, int, int]]
    """Parse and check the signed bytes: (key, expiry, created); RemoteProtocolError if bad."""


_MANIFESTS = _MetaKind(
    MANIFEST_DIR,
    fmt.manifest_file_name,
    fmt.parse_manifest_name,
    MANIFEST_LIMITS.max_size,
    _manifest_fields,
)
_RECEIPTS = _MetaKind(
    RECEIPT_DIR,
    fmt.receipt_file_name,
    fmt.parse_receipt_name,
    RECEIPT_LIMITS.max_size,
    _receipt_fields,
)


def _is_full(exc: OSError) -> bool:
    return exc.errno in (errno.ENOSPC, errno.EDQUOT)


def _unlink(path: Path) -> int:
    """Remove ``path``; 1 if it was there, 0 if not."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return 0
    return 1


class ShardStore:
    """Shards, manifests and receipts in a directory, with an in-memory index; see the module.

    Create it with :meth:`open`. Memory: the index (a few hundred bytes per shard), plus the
    Merkle tree cache, bounded by ``tree_cache_bytes`` (estimated at 64 bytes per block of each
    cached shard), plus the piece being written or read, plus 1 MiB while a body is rehashed.
    """

    def __init__(self, root: Path, capacity_bytes: int, tree_cache_bytes: int, log: Logger) -> None:
        """Use :meth:`open`, which also reads what is on disk."""
        self.root = root
        self._capacity = capacity_bytes
        self._tree_budget = tree_cache_bytes
        self._log = log
        self._lock = threading.Lock()  # the in-memory index, held briefly
        self._writer = threading.Lock()  # one put_* at a time, held for the whole write
        self._shards: dict[ShardKey, ShardInfo] = {}
        self._used = 0
        self._manifests: dict[MetaKey, _MetaEntry] = {}  # by (object CID,)
        self._receipts: dict[MetaKey, _MetaEntry] = {}  # by (object CID, index, holder kid)
        self._meta = {_MANIFESTS.directory: self._manifests, _RECEIPTS.directory: self._receipts}
        self._trees: OrderedDict[ShardKey, tuple[ShardInfo, merkle.MerkleTree, int]] = OrderedDict()
        self._tree_bytes = 0
        self._cursor: ShardKey | None = None
        self._corrupt_found = 0
        self._repaired = 0
        self._quarantined_at_open = 0
        self._ignored_at_open = 0
        self._unsupported_at_open = 0

    @classmethod
    def open(
        cls,
        root: Path,
        capacity_bytes: int,
        *,
        tree_cache_bytes: int = DEFAULT_TREE_CACHE_BYTES,
        log: Logger | None = None,
    ) -> ShardStore:
        """Open (creating if needed) the store at ``root``, holding at most ``capacity_bytes``.

        Removes temporaries of interrupted writes and rebuilds the index from each file's
        prefix and header; damaged files go to ``quarantine/`` and are counted
        (:class:`StoreCounters`). Raises ``OSError`` only if the directories cannot be made.
        """
        if capacity_bytes < 0 or tree_cache_bytes < 0:
            raise LocalProtocolError("capacity and tree cache sizes must be >= 0")
        store = cls(Path(root), capacity_bytes, tree_cache_bytes, log or _default_log)
        temps = store._prepare()
        store._scan_shards()
        store._scan_meta(_MANIFESTS)
        store._scan_meta(_RECEIPTS)
        store._log.info(
            "store %s: %d shards (%d bytes), %d manifests, %d receipts; quarantined %d, "
            "ignored %d, skipped %d of a newer version, removed %d temporary files",
            store.root,
            len(store._shards),
            store._used,
            len(store._manifests),
            len(store._receipts),
            store._quarantined_at_open,
            store._ignored_at_open,
            store._unsupported_at_open,
            temps,
        )
        return store

    # -- capacity and listings ---------------------------------------------------------------

    @property
    def capacity_bytes(self) -> int:
        """The most bytes of shard files this store keeps."""
        return self._capacity

    def used_bytes(self) -> int:
        """Bytes of the shard files held (prefix, header, leaf hashes and body of each)."""
        return self._used

    def free_bytes(self) -> int:
        """Room left under the capacity, in bytes of shard file.

        A shard's file is its body plus its header and 32 bytes per block, so a body of exactly
        ``free_bytes()`` does not fit: :meth:`put_shard` refuses it with ``StoreFull``.
        """
        return max(0, self._capacity - self._used)

    def held_root(self, object_cid: bytes, index: int) -> bytes | None:
        """The Merkle root of the shard held for (``object_cid``, ``index``), or None."""
        with self._lock:
            entry = self._shards.get((object_cid, index))
        return None if entry is None else entry.root

    def shard_info(self, object_cid: bytes, index: int) -> ShardInfo | None:
        """The index entry of a held shard, or None."""
        with self._lock:
            return self._shards.get((object_cid, index))

    def shards(self) -> list[ShardInfo]:
        """Every shard held, ordered by (object CID, index)."""
        with self._lock:
            return [self._shards[k] for k in sorted(self._shards)]

    def shard_count(self) -> int:
        """How many shards are held (without listing them)."""
        return len(self._shards)

    def counters(self) -> StoreCounters:
        """The current figures for metrics."""
        with self._lock:
            return StoreCounters(
                shards=len(self._shards),
                bytes=self._used,
                manifests=len(self._manifests),
                receipts=len(self._receipts),
                corrupt_found=self._corrupt_found,
                repaired=self._repaired,
                quarantined_at_open=self._quarantined_at_open,
                ignored_at_open=self._ignored_at_open,
                unsupported_at_open=self._unsupported_at_open,
                tree_cache_bytes=self._tree_bytes,
            )

    # -- shards ------------------------------------------------------------------------------

    def put_shard(self, accepted: Accepted) -> None:
        """Store an accepted shard; returns once it survives a crash or a power cut.

        Idempotent: a shard already held with the same root is left as it is. Raises
        :class:`StoreFull` when its file does not fit in :meth:`free_bytes` or the disk is
        full, :class:`IntegrityError` when a shard with another root is held for the same
        object and index, or when the shard does not check out. The body is hashed once more
        here (the leaf hashes the file keeps come from it).
        """
        with self._writer:
            self._put_shard(accepted)

    def _put_shard(self, accepted: Accepted) -> None:
        checked = accepted.shard
        header, signed = checked.header, checked.signed_header
        key = (header.object_cid, header.index)
        with self._lock:
            held = self._shards.get(key)
        if held is not None:
            if held.root == header.root:
                return
            raise IntegrityError(f"already holding shard {header.index} with another root")
        if shard.open_header(signed) != header:
            raise IntegrityError("the signed header does not match the shard's header")
        tree = shard.verify_body(header, checked.body)
        entry = ShardInfo(header, len(signed))
        free = self.free_bytes()
        if entry.file_size > free:
            raise StoreFull(f"no room: shard file of {entry.file_size} bytes, {free} free")
        path = self._shard_path(key)
        prefix = fmt.encode_prefix(len(signed))
        try:
            fsutil.atomic_write_chunks(
                path, [prefix + signed, tree.leaf_hashes, checked.body], FILE_MODE
            )
        except OSError as exc:
            if _is_full(exc):
                raise StoreFull(f"disk full writing {path.name}") from exc
            raise
        with self._lock:
            self._shards[key] = entry
            self._used += entry.file_size
        self._log.debug("store: put %s (%d bytes)", path.name, entry.file_size)

    def get_shard(self, object_cid: bytes, index: int) -> tuple[bytes, bytes] | None:
        """The signed header and the body of a held shard, or None.

        The header is checked again; the body is not rehashed (the receiver checks it, and
        :meth:`scrub` finds rot). A shard whose file turns out damaged is quarantined.
        """
        entry = self.shard_info(object_cid, index)
        if entry is None:
            return None
        try:
            fd = fmt.open_ro(self._shard_path(entry.key))
            try:
                if os.fstat(fd).st_size != entry.file_size:
                    raise MalformedMessage("file size changed")
                signed, header = fmt.read_prefix_and_header(fd)
                if header != entry.header:
                    raise MalformedMessage("header changed on disk")
                body = fmt.pread_exact(fd, entry.piece_size, entry.body_offset)
            finally:
                os.close(fd)
        except (OSError, RemoteProtocolError) as exc:
            self._lose(entry, str(exc))
            return None
        return signed, body

    def read_block(
        self, object_cid: bytes, index: int, block_index: int
    ) -> tuple[bytes, list[bytes]] | None:
        """Block ``block_index`` of a held shard and its Merkle audit path, or None.

        The pair verifies with :func:`lichen.merkle.verify_inclusion` against the shard's root.
        The block is checked against its leaf hash first; if it does not match, the shard is
        quarantined and None returned. Trees come from a small LRU cache (see the class).
        A ``block_index`` outside the shard also gives None: it fits
        :data:`lichen.proofs.ReadBlock`, and such a challenge item is answered as missing.
        """
        entry = self.shard_info(object_cid, index)
        if entry is None or not 0 <= block_index < entry.header.leaf_count:
            return None
        tree = self._tree(entry)
        if tree is None:
            return None
        start = block_index * entry.header.block_size
        length = min(entry.header.block_size, entry.piece_size - start)
        try:
            fd = fmt.open_ro(self._shard_path(entry.key))
            try:
                block = fmt.pread_exact(fd, length, entry.body_offset + start)
            finally:
                os.close(fd)
        except (OSError, RemoteProtocolError) as exc:
            self._lose(entry, str(exc))
            return None
        leaf = tree.leaf_hashes[block_index * HASH_SIZE : (block_index + 1) * HASH_SIZE]
        if merkle.leaf_hash(block) != leaf:
            self._lose(entry, f"block {block_index} does not match its leaf hash")
            return None
        return block, tree.inclusion_path(block_index)

    def delete_shard(self, object_cid: bytes, index: int) -> bool:
        """Remove a shard; True if it was held."""
        entry = self.shard_info(object_cid, index)
        if entry is None or not self._remove_shard(entry):
            return False
        fsutil.fsync_dir(self.root / SHARD_DIR)
        return True

    # -- manifests and receipts --------------------------------------------------------------

    def put_manifest(self, signed: bytes) -> None:
        """Keep an owner-signed manifest, checked (signature included) with ``open_manifest``.

        Replaces a stored manifest of the same object unless that one was created later.
        Raises :class:`MalformedMessage` or :class:`BadSignature` for a bad manifest.
        """
        self._put_meta(_MANIFESTS, signed, None)

    def get_manifest(self, object_cid: bytes) -> bytes | None:
        """The signed manifest of ``object_cid``, or None; a damaged file is quarantined."""
        return self._get_meta(_MANIFESTS, (object_cid,))

    def manifests(self) -> list[bytes]:
        """The binary CIDs of the objects whose manifests are kept, in order."""
        with self._lock:
            return sorted(k[0] for k in self._manifests)

    def put_receipt(self, signed: bytes, object_cid: bytes, index: int, holder_kid: bytes) -> None:
        """Keep ``holder_kid``'s receipt for shard ``index`` of ``object_cid``.

        Its COSE framing and fields are checked and must name this object, index and holder;
        its signature is not (the store holds no keys): check it first with
        :func:`lichen.manifest.open_receipt`. Replaces the same holder's receipt for that
        shard unless the stored one was accepted later. :class:`MalformedMessage` if bad.
        """
        self._put_meta(_RECEIPTS, signed, (object_cid, index, holder_kid))

    def receipts(self, object_cid: bytes) -> list[bytes]:
        """The receipts kept for ``object_cid``, by shard index then holder; skips damaged ones."""
        with self._lock:
            keys = sorted(k for k in self._receipts if k[0] == object_cid)
        found = (self._get_meta(_RECEIPTS, key) for key in keys)
        return [data for data in found if data is not None]

    def receipt(self, object_cid: bytes, index: int, holder_kid: bytes) -> bytes | None:
        """``holder_kid``'s receipt for shard ``index`` of ``object_cid``, or None."""
        return self._get_meta(_RECEIPTS, (object_cid, index, holder_kid))

    # -- expiry and scrubbing ----------------------------------------------------------------

    def collect_garbage(self, now: float) -> int:
        """Remove shards, manifests and receipts whose expiry is before ``now``; return how many."""
        with self._lock:
            shards = [e for e in self._shards.values() if e.expiry < now]
        removed = sum(self._remove_shard(entry) for entry in shards)
        if shards:
            fsutil.fsync_dir(self.root / SHARD_DIR)
        for kind in (_MANIFESTS, _RECEIPTS):
            table = self._meta[kind.directory]
            gone = 0
            with self._lock:
                for key in [k for k, e in table.items() if e.expiry < now]:
                    del table[key]
                    gone += _unlink(self._meta_path(kind, key))
            if gone:
                fsutil.fsync_dir(self.root / kind.directory)
            removed += gone
        if removed:
            self._log.info("store: removed %d expired files", removed)
        return removed

    def scrub(self, max_bytes: int | None = None) -> ScrubReport:
        """Reread stored shards from where the last call stopped and check them.

        Checks shards in (object CID, index) order, wrapping at the end, each at most once per
        call, until the next one would take the bytes checked over ``max_bytes`` (at least one
        is checked per call; None: all of them). A shard whose header or body no longer matches
        its signed root is quarantined, dropped from the index, logged and counted.
        """
        if max_bytes is not None and max_bytes <= 0:
            raise LocalProtocolError("max_bytes must be positive")
        with self._lock:
            keys = sorted(self._shards)
        start = 0 if self._cursor is None else bisect.bisect_right(keys, self._cursor)
        checked: list[ShardKey] = []
        corrupt: list[ShardKey] = []
        repaired: list[ShardKey] = []
        total = 0
        finished_pass = not keys
        for key in keys[start:] + keys[:start]:
            entry = self.shard_info(*key)
            if entry is not None:
                if max_bytes is not None and checked and total + entry.file_size > max_bytes:
                    break
                outcome, _ = self._check(entry)
                checked.append(key)
                total += entry.file_size
                if outcome == "corrupt":
                    corrupt.append(key)
                elif outcome == "repaired":
                    repaired.append(key)
            if key == keys[-1]:
                finished_pass, self._cursor = True, None
            else:
                self._cursor = key
        return ScrubReport(tuple(checked), tuple(corrupt), tuple(repaired), total, finished_pass)

    # -- internals ---------------------------------------------------------------------------

    def _shard_path(self, key: ShardKey) -> Path:
        return self.root / SHARD_DIR / fmt.shard_file_name(key)

    def _meta_path(self, kind: _MetaKind, key: MetaKey) -> Path:
        return self.root / kind.directory / kind.file_name(key)

    def _put_meta(self, kind: _MetaKind, signed: bytes, expected: MetaKey | None) -> None:
        """Check and write a manifest or receipt, unless a later one (by creation) is kept."""
        key, expiry, created = kind.fields(signed)
        if expected is not None and key != expected:
            raise MalformedMessage(f"{kind.directory}: signed for another object, shard or holder")
        table, path = self._meta[kind.directory], self._meta_path(kind, key)
        with self._writer:
            with self._lock:
                held = table.get(key)
                if held is not None and held.created > created:
                    return
                # Unindexed while its file is replaced, so that a reader that found the old
                # file damaged cannot quarantine the new one (see _get_meta).
                table.pop(key, None)
            try:
                fsutil.atomic_write(path, signed, FILE_MODE)
            except OSError as exc:
                if held is not None:
                    with self._lock:
                        table.setdefault(key, held)
                if _is_full(exc):
                    raise StoreFull(f"disk full writing {path.name}") from exc
                raise
            with self._lock:
                table[key] = _MetaEntry(expiry, created)

    def _get_meta(self, kind: _MetaKind, key: MetaKey) -> bytes | None:
        """Read and recheck an indexed manifest or receipt; quarantine it if damaged."""
        table = self._meta[kind.directory]
        with self._lock:
            entry = table.get(key)
        if entry is None:
            return None
        path = self._meta_path(kind, key)
        try:
            data = fmt.read_small(path, kind.max_size)
            if kind.fields(data)[0] != key:
                raise MalformedMessage("the file names another object, shard or holder")
        except (OSError, RemoteProtocolError) as exc:
            with self._lock:
                if table.get(key) is entry:
                    del table[key]
                    self._corrupt_found += 1
                    self._quarantine(path, str(exc))
            return None
        return data

    def _remove_shard(self, entry: ShardInfo) -> bool:
        """Unindex and unlink a shard, unless the index has moved on; True if removed."""
        with self._lock:
            if self._shards.get(entry.key) is not entry:
                return False
            self._unindex(entry)
            _unlink(self._shard_path(entry.key))
        return True

    def _unindex(self, entry: ShardInfo) -> None:
        """Drop a shard and its cached tree from memory (lock held)."""
        del self._shards[entry.key]
        self._used -= entry.file_size
        cached = self._trees.pop(entry.key, None)
        if cached is not None:
            self._tree_bytes -= cached[2]

    def _lose(self, entry: ShardInfo, reason: str) -> bool:
        """A held shard is damaged or gone: never serve it again, quarantine it, count it.

        False if another call removed or replaced the entry meanwhile (nothing is done then).
        """
        with self._lock:
            # The rename stays under the lock so that a new file written under the same name
            # (only possible once the entry is gone) is never the one moved away.
            if self._shards.get(entry.key) is not entry:
                return False
            self._unindex(entry)
            self._corrupt_found += 1
            self._quarantine(self._shard_path(entry.key), reason)
            return True

    def _quarantine(self, path: Path, reason: str) -> bool:
        """Move ``path`` into ``quarantine/`` with a warning; False if it could not be moved."""
        target = self.root / QUARANTINE_DIR / f"{path.name}.{secrets.token_hex(4)}"
        try:
            os.rename(path, target)
        except FileNotFoundError:
            self._log.warning("store: %s is gone (%s)", path.name, reason)
            return False
        except OSError as exc:
            self._log.error("store: could not quarantine %s (%s): %s", path.name, reason, exc)
            return False
        with contextlib.suppress(OSError):
            fsutil.fsync_dir(target.parent)
            fsutil.fsync_dir(path.parent)
        self._log.warning("store: quarantined %s: %s", path.name, reason)
        return True

    def _tree(self, entry: ShardInfo) -> merkle.MerkleTree | None:
        """The shard's Merkle tree: cached, or rebuilt from its leaf hashes (checked)."""
        with self._lock:
            cached = self._trees.get(entry.key)
            if cached is not None and cached[0] is entry:
                self._trees.move_to_end(entry.key)
                return cached[1]
        try:
            fd = fmt.open_ro(self._shard_path(entry.key))
            try:
                size = HASH_SIZE * entry.header.leaf_count
                leaves = fmt.pread_exact(fd, size, entry.leaves_offset)
            finally:
                os.close(fd)
        except (OSError, RemoteProtocolError) as exc:
            self._lose(entry, str(exc))
            return None
        tree = merkle.MerkleTree.from_leaf_hashes(leaves)
        if tree.root != entry.root:
            # The derived leaf hashes are damaged: check the body, which repairs or quarantines.
            _, checked = self._check(entry)
            if checked is None:
                return None
            tree = checked
        self._cache_tree(entry, tree)
        return tree

    def _cache_tree(self, entry: ShardInfo, tree: merkle.MerkleTree) -> None:
        cost = _TREE_OVERHEAD + _TREE_BYTES_PER_LEAF * tree.leaf_count
        if cost > self._tree_budget:
            return
        with self._lock:
            if self._shards.get(entry.key) is not entry:
                return
            old = self._trees.pop(entry.key, None)
            if old is not None:
                self._tree_bytes -= old[2]
            self._trees[entry.key] = (entry, tree, cost)
            self._tree_bytes += cost
            while self._tree_bytes > self._tree_budget:
                _, (_, _, evicted) = self._trees.popitem(last=False)
                self._tree_bytes -= evicted

    def _check(self, entry: ShardInfo) -> tuple[str, merkle.MerkleTree | None]:
        """Reread a shard's file and check all of it against the signed header.

        Returns ("ok", tree), ("repaired", tree) when only the leaf hashes were damaged and
        have been rewritten, ("corrupt", None) after quarantining the shard, or ("gone", None)
        if another call removed it meanwhile.
        """
        path = self._shard_path(entry.key)
        try:
            fd = fmt.open_ro(path)
            try:
                info = os.fstat(fd)
                if info.st_size != entry.file_size:
                    raise MalformedMessage(
                        f"file holds {info.st_size} bytes, not {entry.file_size}"
                    )
                signed, header = fmt.read_prefix_and_header(fd)
                if header != entry.header or len(signed) != entry.header_size:
                    raise MalformedMessage("header changed on disk")
                stored = fmt.pread_exact(fd, HASH_SIZE * header.leaf_count, entry.leaves_offset)
                tree = merkle.MerkleTree(fmt.iter_blocks(fd, entry))
            finally:
                os.close(fd)
        except (OSError, RemoteProtocolError) as exc:
            return ("corrupt" if self._lose(entry, str(exc)) else "gone"), None
        if tree.root != entry.root:
            lost = self._lose(entry, "body does not match its Merkle root")
            return ("corrupt" if lost else "gone"), None
        if stored == tree.leaf_hashes:
            return "ok", tree
        # Only the derived leaf hashes are damaged: the body is good, so rewrite them in place.
        # A crash mid-rewrite leaves them damaged again, which the next check repairs.
        with self._lock:
            if self._shards.get(entry.key) is not entry:
                return "ok", tree
            try:
                fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
                try:
                    current = os.fstat(fd)
                    if (current.st_ino, current.st_dev) != (info.st_ino, info.st_dev):
                        return "ok", tree
                    fsutil.write_all(fd, tree.leaf_hashes, entry.leaves_offset)
                    fsutil.sync_file(fd)
                finally:
                    os.close(fd)
            except OSError as exc:
                self._log.error("store: could not rewrite leaf hashes of %s: %s", path.name, exc)
                return "ok", tree
            self._repaired += 1
        self._log.warning("store: rewrote damaged leaf hashes of %s", path.name)
        return "repaired", tree

    # -- opening -----------------------------------------------------------------------------

    def _prepare(self) -> int:
        """Make the directories; remove stale temporary files. Returns how many were removed."""
        created = not self.root.is_dir()
        self.root.mkdir(parents=True, exist_ok=True)
        for name in (SHARD_DIR, MANIFEST_DIR, RECEIPT_DIR, QUARANTINE_DIR):
            directory = self.root / name
            if not directory.is_dir():
                directory.mkdir()
                created = True
        if created:
            fsutil.fsync_dir(self.root)
            fsutil.fsync_dir(self.root.parent)
        return sum(
            fsutil.remove_stale_temps_in(self.root / name, fmt.is_store_name)
            for name in (SHARD_DIR, MANIFEST_DIR, RECEIPT_DIR)
        )

    def _entries(self, name: str) -> list[str]:
        with os.scandir(self.root / name) as entries:
            return sorted(e.name for e in entries)

    def _ignore(self, name: str) -> None:
        self._ignored_at_open += 1
        self._log.warning("store: ignoring unexpected file %r", name[:100])

    def _quarantine_at_open(self, path: Path, reason: str) -> None:
        self._quarantined_at_open += 1
        self._quarantine(path, reason)

    def _scan_shards(self) -> None:
        directory = self.root / SHARD_DIR
        for name in self._entries(SHARD_DIR):
            key = fmt.parse_shard_name(name)
            if key is None:
                self._ignore(name)
                continue
            try:
                entry = fmt.load_shard(directory / name, key)
            except UnsupportedVersion as exc:
                self._unsupported_at_open += 1
                self._log.warning("store: skipping %s: %s", name, exc)
                continue
            except (OSError, RemoteProtocolError) as exc:
                self._quarantine_at_open(directory / name, str(exc))
                continue
            self._shards[key] = entry
            self._used += entry.file_size

    def _scan_meta(self, kind: _MetaKind) -> None:
        directory, table = self.root / kind.directory, self._meta[kind.directory]
        for name in self._entries(kind.directory):
            key = kind.parse_name(name)
            if key is None:
                self._ignore(name)
                continue
            try:
                data = fmt.read_small(directory / name, kind.max_size)
                named, expiry, created = kind.fields(data)
                if named != key:
                    raise MalformedMessage("the file names another object, shard or holder")
            except (OSError, RemoteProtocolError) as exc:
                self._quarantine_at_open(directory / name, str(exc))
                continue
            table[key] = _MetaEntry(expiry, created)
