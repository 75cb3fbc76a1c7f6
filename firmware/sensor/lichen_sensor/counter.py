"""The sensor's message counter: strictly increasing across reboots.

The agent refuses any message whose counter is not above the last one it accepted from this
sensor, so a counter must never be used twice. :class:`FileCounter` reserves counters in
blocks: before using a counter beyond what the file allows, it writes the new limit (to a
temporary file, then a rename), so after a reboot it starts at the old limit. A reboot skips
at most a block of numbers, and flash is written once per block, not once per message.
"""

import os

FIRST = 1  # the agent starts each sensor at 0 accepted: the first counter must be above it


class MemoryCounter:
    """Counters from ``start``, kept in RAM (for tests, or a board that never reboots)."""

    def __init__(self, start=FIRST):
        self.next = start

    def take(self):
        """The next unused counter."""
        value = self.next
        self.next += 1
        return value


class FileCounter:
    """Counters kept in file ``path``, reserved ``block`` at a time."""

    def __init__(self, path, block=64):
        if block < 1:
            raise ValueError("block must be at least 1")
        self.path = path
        self.block = block
        self.next = FIRST
        try:
            with open(path) as f:
                self.next = max(FIRST, int(f.read().strip()))
        except (OSError, ValueError):
            pass  # a new board: no counter used yet
        self.limit = self.next  # nothing reserved by this boot yet

    def take(self):
        """The next unused counter; writes a new reservation first when one is needed."""
        if self.next >= self.limit:
            limit = self.next + self.block
            temp = self.path + ".tmp"
            with open(temp, "w") as f:
                f.write("%d\n" % limit)
            os.rename(temp, self.path)
            self.limit = limit
        value = self.next
        self.next += 1
        return value
