"""Time for the sensor: a millisecond tick counter, and the wall clock as Unix time.

MicroPython has ``time.ticks_ms`` (wrapping) and ``ticks_diff``; CPython has neither, so
both get the same three functions here. Some ports count wall time from 2000-01-01, not
1970: :func:`unix_time` corrects that, and answers None while the clock is plainly not set
(before 1978, SenML's limit for an absolute time, RFC 8428 section 4.5.3).
"""

import time

try:
    ticks_ms = time.ticks_ms
    ticks_diff = time.ticks_diff
    ticks_add = time.ticks_add
    sleep_ms = time.sleep_ms
except AttributeError:

    def ticks_ms():
        """Milliseconds from an arbitrary start."""
        return int(time.monotonic() * 1000)

    def ticks_diff(end, start):
        """``end - start`` in milliseconds."""
        return end - start

    def ticks_add(ticks, delta):
        """``ticks + delta`` in milliseconds."""
        return ticks + delta

    def sleep_ms(ms):
        """Sleep ``ms`` milliseconds."""
        time.sleep(ms / 1000)


EPOCH_2000 = 946684800  # seconds from 1970-01-01 to 2000-01-01
_OFFSET = EPOCH_2000 if time.gmtime(0)[0] == 2000 else 0
RELATIVE_TIME_LIMIT = 1 << 28  # RFC 8428 section 4.5.3: below this a time is relative


def unix_time():
    """Whole seconds since 1970, or None while the board's clock is not set."""
    now = int(time.time()) + _OFFSET
    return now if now >= RELATIVE_TIME_LIMIT else None
