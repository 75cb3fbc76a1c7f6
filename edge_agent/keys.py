"""The agent's secrets on disk: its node identity and the owner's master key.

Both are 32 random bytes in files of mode 0600 in the data directory, written atomically so a
crash during ``lichen agent init`` never leaves half a key. The node key signs handshakes,
receipts and proofs; the master key derives each object's encryption key (see
:func:`lichen.seal.object_key`) and never leaves this device.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from edge_agent import fsutil
from lichen import seal
from lichen.errors import ConfigError, MalformedMessage
from lichen.identity import SEED_SIZE, Identity

NODE_KEY_FILE = "node.key"
MASTER_KEY_FILE = "owner.key"
_MAGIC = {NODE_KEY_FILE: b"lichen-node-key/1\n", MASTER_KEY_FILE: b"lichen-owner-key/1\n"}


def _create(data_dir: Path, name: str) -> bytes:
    return create_seed(data_dir / name, _MAGIC[name])


def _load(data_dir: Path, name: str) -> bytes:
    return load_seed(data_dir / name, _MAGIC[name], f"lichen agent init --data-dir {data_dir}")


def create_seed(path: Path, magic: bytes) -> bytes:
    """A fresh 32-byte secret, written to ``path`` after the ``magic`` line (mode 0600)."""
    secret = os.urandom(SEED_SIZE)
    fsutil.write_secret(path, magic + secret)
    return secret


def load_seed(path: Path, magic: bytes, init: str) -> bytes:
    """The secret :func:`create_seed` wrote to ``path``; :class:`ConfigError` if it is missing
    (``init`` is the command that makes it), damaged, or readable by others."""
    try:
        raw = fsutil.read_bounded(path, len(magic) + SEED_SIZE)
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        raise ConfigError(f"{path}: missing (run '{init}')") from None
    except (OSError, MalformedMessage) as exc:
        raise ConfigError(f"{path}: cannot read the key: {exc}") from None
    if not raw.startswith(magic) or len(raw) != len(magic) + SEED_SIZE:
        raise ConfigError(f"{path}: not a Lichen key file")
    if mode & 0o077:
        raise ConfigError(f"{path}: readable by others (mode {mode:04o}); run chmod 600 on it")
    return raw[len(magic) :]


def exists(data_dir: Path) -> bool:
    """Whether ``data_dir`` already holds a node key."""
    return (data_dir / NODE_KEY_FILE).exists()


def create(data_dir: Path) -> Identity:
    """Create both keys in ``data_dir`` (which must exist); return the node identity."""
    _create(data_dir, MASTER_KEY_FILE)
    return Identity(_create(data_dir, NODE_KEY_FILE))


def load_identity(data_dir: Path) -> Identity:
    """The node identity stored in ``data_dir``; :class:`ConfigError` if missing or unsafe."""
    return Identity(_load(data_dir, NODE_KEY_FILE))


class Keyring:
    """The owner's master key, and the per-object keys derived from it."""

    def __init__(self, master: bytes) -> None:
        self._master = master

    @classmethod
    def load(cls, data_dir: Path) -> Keyring:
        """The keyring stored in ``data_dir``; :class:`ConfigError` if missing or unsafe."""
        return cls(_load(data_dir, MASTER_KEY_FILE))

    def key_for(self, nonce: bytes) -> bytes:
        """The key of the object sealed with ``nonce``."""
        return seal.object_key(self._master, nonce)

    def new_object_key(self) -> tuple[bytes, bytes]:
        """A fresh nonce and the key of the object that will be sealed with it."""
        nonce = os.urandom(seal.NONCE_SIZE)
        return nonce, self.key_for(nonce)

    def __repr__(self) -> str:
        return "Keyring(<secret>)"
