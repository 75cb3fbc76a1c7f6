"""The sensor loop: read, encode, authenticate, send; buffer what no agent takes.

Each round the driver's readings become one SenML+CBOR pack, authenticated as a COSE_Mac0
under the sensor's key with the next message counter, and POSTed as one confirmable CoAP
request to ``/s/<stream>`` (Content-Format 17, ``application/cose; cose-type="cose-mac0"``,
RFC 9052 section 11.2). The agent answers 2.04 once the readings are on its disk.

When no agent answers, the message goes into the ring buffer and the sensor backs off
(doubling from ``min_backoff_ms`` to ``max_backoff_ms``); new messages queue behind it and are
sent later, oldest first, unchanged: a message resent after its answer was lost carries the
same counter and MAC, and the agent answers it 2.04 without storing it twice. A 4.xx answer
is final (wrong key, revoked sensor, malformed pack): the message is counted as rejected and
not retried. A 5.xx answer is retried like silence.
"""

from lichen_sensor import clock, coap, cose, senml

CT_COSE_MAC0 = 17  # application/cose; cose-type="cose-mac0", RFC 9052 section 11.2

OK = "ok"
REJECTED = "rejected"
RETRY = "retry"
BUFFERED = "buffered"


class Sensor:
    """One sensor writing to one stream through one agent (a :class:`coap.Client`)."""

    def __init__(
        self,
        coap_client,
        key,
        kid,
        stream,
        driver,
        ring,
        counter,
        time_source=clock.unix_time,
        min_backoff_ms=1000,
        max_backoff_ms=60000,
        log=None,
        on_acked=None,
    ):
        self.coap = coap_client
        self.key = key
        self.kid = kid
        self.path = ["s", stream]
        self.driver = driver
        self.ring = ring
        self.counter = counter
        self.time_source = time_source
        self.min_backoff_ms = min_backoff_ms
        self.max_backoff_ms = max_backoff_ms
        self.log = log
        self.on_acked = on_acked
        self._backoff_ms = min_backoff_ms
        self._retry_at = None
        self.taken = 0
        self.sent = 0
        self.buffered = 0
        self.sent_from_buffer = 0
        self.rejected = 0
        self.too_large = 0
        self.last_refusal = None

    def _say(self, text):
        if self.log is not None:
            self.log(text)

    def stats(self):
        """Counts since boot (``dropped`` counts since the ring was made, across reboots)."""
        return {
            "taken": self.taken,
            "sent": self.sent,
            "buffered": self.buffered,
            "sent_from_buffer": self.sent_from_buffer,
            "pending": len(self.ring),
            "dropped": self.ring.dropped + self.too_large,
            "rejected": self.rejected,
            "retransmissions": self.coap.retransmissions,
        }

    def measure(self):
        """Read the driver; return the authenticated message for its readings."""
        now = self.time_source()
        readings = []
        for name, value, unit in self.driver.read():
            # Without a set clock, time 0 means "when the agent receives it" (RFC 8428
            # section 4.5.3): right for a live reading, late for a buffered one.
            reading = {"n": name, "v": value, "t": now if now is not None else 0}
            if unit:
                reading["u"] = unit
            readings.append(reading)
        self.taken += 1
        pack = senml.encode_pack(readings)
        return cose.mac0(pack, self.key, self.kid, self.counter.take())

    def _may_try(self):
        return self._retry_at is None or clock.ticks_diff(clock.ticks_ms(), self._retry_at) >= 0

    def _failed(self, why):
        self._say("no agent (" + why + "); retry in %d ms" % self._backoff_ms)
        self._retry_at = clock.ticks_add(clock.ticks_ms(), self._backoff_ms)
        self._backoff_ms = min(self._backoff_ms * 2, self.max_backoff_ms)

    def _answered(self):
        self._retry_at = None
        self._backoff_ms = self.min_backoff_ms

    def _deliver(self, message):
        try:
            code, payload = self.coap.post(self.path, CT_COSE_MAC0, message)
        except (coap.NoAnswer, coap.Reset) as exc:
            self._failed(str(exc))
            return RETRY
        except OSError as exc:  # no route, network down: the same as no answer
            self._failed("network error %s" % (exc.args[0] if exc.args else exc))
            return RETRY
        klass = code >> 5
        if klass == 2:
            self._answered()
            if self.on_acked is not None:
                self.on_acked(message)
            return OK
        if klass == 4:
            self._answered()
            self.rejected += 1
            self.last_refusal = (coap.code_text(code), payload)
            self._say("refused " + coap.code_text(code) + ": " + payload.decode("utf-8", "replace"))
            return REJECTED
        self._failed("answer " + coap.code_text(code))
        return RETRY

    def _buffer(self, message):
        try:
            if self.ring.push(message):
                self._say("buffer full: dropped the oldest reading")
        except ValueError as exc:
            self.too_large += 1
            self._say("cannot buffer: %s" % exc)
            return
        self.buffered += 1

    def submit(self, message):
        """Send ``message`` now, or queue it behind older ones; return the outcome."""
        if not len(self.ring) and self._may_try():
            outcome = self._deliver(message)
            if outcome == OK:
                self.sent += 1
            if outcome != RETRY:
                return outcome
        self._buffer(message)
        return BUFFERED

    def flush(self, limit=None):
        """Send buffered messages, oldest first, until one goes unanswered; return how many
        were acknowledged. Does nothing while backing off."""
        done = 0
        while len(self.ring) and self._may_try() and (limit is None or done < limit):
            outcome = self._deliver(self.ring.peek())
            if outcome == RETRY:
                break
            self.ring.pop()
            if outcome == OK:
                self.sent_from_buffer += 1
                done += 1
        return done

    def step(self):
        """One round: measure, send (or buffer), then send what is buffered."""
        outcome = self.submit(self.measure())
        self.flush()
        return outcome

    def run(self, interval_ms, rounds=None):
        """Measure every ``interval_ms`` for ``rounds`` rounds (forever when None)."""
        done = 0
        while rounds is None or done < rounds:
            started = clock.ticks_ms()
            self.step()
            done += 1
            wait = interval_ms - clock.ticks_diff(clock.ticks_ms(), started)
            if wait > 0:
                clock.sleep_ms(wait)
