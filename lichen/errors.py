"""The error tree of Lichen: one root, one branch per party at fault.

::

    LichenError                      anything Lichen raises on purpose
    ├── LocalProtocolError           you called it wrong: a bug on this side
    │   └── ConfigError              a configuration value is missing or invalid
    ├── RemoteProtocolError          the peer (or a file, or a sensor) sent something wrong
    │   ├── MalformedMessage         not decodable: bad CBOR, oversize, too deep, duplicate keys
    │   ├── UnsupportedVersion       a well-formed message of a version we do not speak
    │   ├── BadSignature             a COSE_Sign1 or handshake signature does not verify
    │   ├── BadMac                   a COSE_Mac0 tag does not verify
    │   ├── IntegrityError           bytes do not match the hash or Merkle root they claim
    │   └── ProofRejected            a storage-proof answer does not prove what was asked
    ├── Refused                      a well-formed request this node will not serve
    │   ├── StoreFull                no room for what was offered
    │   └── NotAuthorised            the requester lacks a key or right for this
    └── DataUnavailable              the data cannot be had right now
        └── NotEnoughShards          fewer than k distinct shards of an object were found

The split follows h11's ``LocalProtocolError`` / ``RemoteProtocolError``: an adapter turns
a ``RemoteProtocolError`` into a 4.xx answer and a log line, and lets a
``LocalProtocolError`` crash loudly, because it means our own code is wrong. ``Refused`` is
nobody's bug: the request was fine, the answer is no (4.03, or 5.03 when the store is full).
"""

from __future__ import annotations


class LichenError(Exception):
    """Root of every error Lichen raises on purpose."""


class LocalProtocolError(LichenError):
    """The caller used the API wrongly (a bug on this side, not the peer's fault)."""


class ConfigError(LocalProtocolError):
    """A configuration value is missing or invalid."""


class RemoteProtocolError(LichenError):
    """A peer, a file or a sensor sent data that breaks the protocol."""


class MalformedMessage(RemoteProtocolError):
    """Input that cannot be decoded: bad CBOR, over a size, depth or count bound, duplicate keys."""


class UnsupportedVersion(RemoteProtocolError):
    """A well-formed message whose version this node does not speak."""


class BadSignature(RemoteProtocolError):
    """A signature that does not verify under the key it claims."""


class BadMac(RemoteProtocolError):
    """A MAC that does not verify under the shared key."""


class IntegrityError(RemoteProtocolError):
    """Bytes that do not match the hash or Merkle root they are bound to."""


class ProofRejected(RemoteProtocolError):
    """A storage-proof answer that does not prove possession of what was challenged."""


class Refused(LichenError):
    """A well-formed request that this node will not serve (capacity, policy, rights)."""


class StoreFull(Refused):
    """The store has no room for what was offered."""


class NotAuthorised(Refused):
    """The requester lacks the key or the right this request needs."""


class DataUnavailable(LichenError):
    """The requested data cannot be had right now."""


class NotEnoughShards(DataUnavailable):
    """Fewer than k distinct, valid shards of an object are available.

    ``found`` lists the shard indices that were available, ``needed`` is k.
    """

    def __init__(self, message: str, *, found: tuple[int, ...] = (), needed: int = 0) -> None:
        super().__init__(message)
        self.found = found
        self.needed = needed
