"""A bounded ring buffer of messages no agent has taken yet, oldest first.

:class:`FileRing` keeps them on flash, so readings taken while no agent answers survive a
reboot: ``ring.dat`` holds ``capacity`` slots of ``slot_size`` bytes (a 2-byte length, then
the message), and ``ring.st`` the state ``head count dropped capacity slot_size``, replaced
whole (written to a temporary file, then renamed) after each change. A message is written to
its slot before the state counts it, so a power cut loses at most the message being added. A
state that cannot be read, or that records another layout (the config's ``buffer`` or
``slot_size`` changed), starts the ring empty: slots of another size cannot be read back.
:class:`MemoryRing` has the same methods for a board without a filesystem (its buffer dies
with a reboot).

When the buffer is full, adding a message drops the oldest one and counts it in
``dropped``: fresh readings are worth more than stale ones.
"""

import os
import struct

_LENGTH = 2  # bytes of the length prefix in each slot


class MemoryRing:
    """The ring in RAM."""

    def __init__(self, capacity):
        if capacity < 1:
            raise ValueError("a ring holds at least one message")
        self.capacity = capacity
        self.items = []
        self.dropped = 0

    def __len__(self):
        return len(self.items)

    def push(self, message):
        """Add ``message`` last; return True when the oldest had to be dropped for it."""
        dropped = len(self.items) >= self.capacity
        if dropped:
            self.items.pop(0)
            self.dropped += 1
        self.items.append(bytes(message))
        return dropped

    def peek(self):
        """The oldest message, or None when empty."""
        return self.items[0] if self.items else None

    def pop(self):
        """Remove the oldest message."""
        if self.items:
            self.items.pop(0)


def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


class FileRing:
    """The ring in two files under ``directory`` (which must exist)."""

    def __init__(self, directory, capacity, slot_size=256):
        if capacity < 1 or slot_size <= _LENGTH:
            raise ValueError("a ring holds at least one slot of more than 2 bytes")
        self.capacity = capacity
        self.slot_size = slot_size
        self.data_path = directory + "/ring.dat"
        self.state_path = directory + "/ring.st"
        self.head = 0
        self.count = 0
        self.dropped = 0
        loaded = self._load()
        size = capacity * slot_size
        if not loaded or not _exists(self.data_path) or os.stat(self.data_path)[6] != size:
            self._create()

    def _load(self):
        """Take the saved state; False when there is none, it is bad, or of another layout."""
        try:
            with open(self.state_path) as f:
                fields = [int(field) for field in f.read().split()]
        except (OSError, ValueError):
            return False
        if len(fields) != 5 or fields[3:] != [self.capacity, self.slot_size]:
            return False
        head, count, dropped = fields[:3]
        if not (0 <= head < self.capacity and 0 <= count <= self.capacity and dropped >= 0):
            return False
        self.head, self.count, self.dropped = head, count, dropped
        return True

    def _create(self):
        # Writing every slot up front: seeking past the end of a file is not portable.
        self.head = self.count = self.dropped = 0
        blank = b"\x00" * self.slot_size
        with open(self.data_path, "wb") as f:
            for _ in range(self.capacity):
                f.write(blank)
        self._save()

    def _save(self):
        temp = self.state_path + ".tmp"
        with open(temp, "w") as f:
            state = (self.head, self.count, self.dropped, self.capacity, self.slot_size)
            f.write("%d %d %d %d %d\n" % state)
        os.rename(temp, self.state_path)

    def __len__(self):
        return self.count

    def push(self, message):
        """Add ``message`` last; return True when the oldest had to be dropped for it.

        ValueError if it does not fit in a slot.
        """
        if len(message) + _LENGTH > self.slot_size:
            raise ValueError(
                "message of %d bytes does not fit a %d-byte slot" % (len(message), self.slot_size)
            )
        dropped = self.count >= self.capacity
        if dropped:
            self.head = (self.head + 1) % self.capacity
            self.count -= 1
            self.dropped += 1
        slot = (self.head + self.count) % self.capacity
        with open(self.data_path, "r+b") as f:
            f.seek(slot * self.slot_size)
            f.write(struct.pack(">H", len(message)) + bytes(message))
        self.count += 1
        self._save()
        return dropped

    def peek(self):
        """The oldest message, or None when empty."""
        if not self.count:
            return None
        with open(self.data_path, "rb") as f:
            f.seek(self.head * self.slot_size)
            slot = f.read(self.slot_size)
        length = struct.unpack(">H", slot[:_LENGTH])[0]
        return bytes(slot[_LENGTH : _LENGTH + length])

    def pop(self):
        """Remove the oldest message."""
        if self.count:
            self.head = (self.head + 1) % self.capacity
            self.count -= 1
            self._save()
