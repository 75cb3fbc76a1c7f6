"""Unit tests of the sensor firmware that run unchanged under CPython and MicroPython.

Plain functions named ``test_*`` taking a context with ``scratch`` (a fresh, empty directory
path) and using bare ``assert``; ``fw_run.py unit`` runs them under MicroPython and
``test_firmware.py`` runs each under CPython (in pytest) and reads MicroPython's results.
Golden hex strings pin every byte format, so both runtimes are held to the same bytes.
"""

import binascii
import struct

from lichen_sensor import cbor, clock, coap, cose, counter, mdns, ring, senml
from lichen_sensor.client import BUFFERED, OK, REJECTED, Sensor
from lichen_sensor.drivers import CountingDriver, SimulatedDriver
from lichen_sensor.hmac256 import hmac_sha256

KEY = bytes(range(32))
KID = b"greenhouse-1"
T0 = 1735689600  # 2025-01-01T00:00:00Z


def h(text):
    return binascii.unhexlify(text.replace(" ", ""))


def hx(data):
    return binascii.hexlify(data).decode()


def raises(exc_type, function, *args):
    try:
        function(*args)
    except exc_type:
        return True
    raise AssertionError("expected " + exc_type.__name__)


# --- CBOR ---------------------------------------------------------------------------------

CBOR_GOLDEN = [
    (0, "00"),
    (23, "17"),
    (24, "1818"),
    (255, "18ff"),
    (256, "190100"),
    (65536, "1a00010000"),
    (4294967296, "1b0000000100000000"),
    (18446744073709551615, "1bffffffffffffffff"),
    (-1, "20"),
    (-25, "3818"),
    (-18446744073709551616, "3bffffffffffffffff"),
    (True, "f5"),
    (False, "f4"),
    (None, "f6"),
    (b"", "40"),
    (b"\x01\x02", "420102"),
    ("", "60"),
    ("a", "6161"),
    ("\u00fc", "62c3bc"),
    ([], "80"),
    ([1, [2, 3]], "8201820203"),
    ({}, "a0"),
    # Floats in the smallest exact width; cbor2 keeps half below 32768 only.
    (0.0, "f90000"),
    (-0.0, "f98000"),
    (1.5, "f93e00"),
    (-2.75, "f9c180"),
    (0.00006103515625, "f90400"),
    (5.960464477539063e-08, "f90001"),
    (65504.0, "fa477fe000"),
    (100000.5, "fa47c35040"),
    (1.1, "fb3ff199999999999a"),
    (1e300, "fb7e37e43c8800759c"),
    (float("inf"), "f97c00"),
    (float("-inf"), "f9fc00"),
]


def test_cbor_golden_values(ctx):
    for value, expected in CBOR_GOLDEN:
        assert hx(cbor.encode(value)) == expected, (value, hx(cbor.encode(value)))


def test_cbor_maps_sort_shorter_keys_first_then_bytewise(ctx):
    value = {"aa": 1, 100: 2, -1: 3, "b": 4, 1: 5}
    assert hx(cbor.encode(value)) == "a50105200318640261620462616101"


def test_cbor_tag_and_refusals(ctx):
    assert hx(cbor.encode(cbor.Tag(17, [b"", {}]))) == "d18240a0"
    raises(ValueError, cbor.encode, 1 << 64)
    raises(TypeError, cbor.encode, object())


# --- HMAC, COSE ------------------------------------------------------------------------------


def test_hmac_sha256_rfc4231_vectors(ctx):
    # RFC 4231 section 4.2 (test case 1) and 4.7 (test case 6, a key longer than a block).
    assert hx(hmac_sha256(b"\x0b" * 20, b"Hi There")) == (
        "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
    )
    assert hx(
        hmac_sha256(b"\xaa" * 131, b"Test Using Larger Than Block-Size Key - Hash Key First")
    ) == ("60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54")


def test_counter_bytes_have_no_leading_zeros(ctx):
    assert cose.counter_bytes(0) == b"\x00"
    assert cose.counter_bytes(255) == b"\xff"
    assert cose.counter_bytes(256) == b"\x01\x00"
    assert cose.counter_bytes((1 << 64) - 1) == b"\xff" * 8
    raises(ValueError, cose.counter_bytes, 1 << 64)
    raises(ValueError, cose.counter_bytes, -1)


PACK_HEX = "81a4006b74656d7065726174757265016343656c02f94d60061a67748580"
MAC0_HEX = (
    "d18446a20105064101a1044c677265656e686f7573652d31581e"
    + PACK_HEX
    + "5820b77e8672521381f262493d94cce7ca24fef8f884479039b8498f9a5cbf959ea1"
)


def test_senml_pack_golden(ctx):
    pack = senml.encode_pack([{"n": "temperature", "t": T0, "v": 21.5, "u": "Cel"}])
    assert hx(pack) == PACK_HEX


def test_mac0_golden(ctx):
    pack = h(PACK_HEX)
    assert hx(cose.mac0(pack, KEY, KID, 1)) == MAC0_HEX
    raises(ValueError, cose.mac0, pack, b"short", KID, 1)


def test_senml_numbers_and_value_labels(ctx):
    assert senml.number(21.0) == 21 and isinstance(senml.number(21.0), int)
    assert isinstance(senml.number(-0.0), float)
    assert senml.number(T0) == T0
    assert isinstance(senml.number(1 << 53), float)
    assert isinstance(senml.number(-1), float) and isinstance(senml.number(-1.0), float)
    raises(ValueError, senml.number, float("nan"))
    raises(TypeError, senml.number, True)
    pack = senml.encode_pack(
        [
            {"n": "a", "t": T0, "v": True},
            {"n": "b", "t": T0 + 0.5, "v": "on", "s": 3},
            {"n": "c", "t": T0, "v": b"\x01", "ut": 60},
        ]
    )
    assert hx(pack) == (
        "83a300616104f5061a67748580a400616203626f6e050306fb41d9dd2160200000"
        "a4006163061a6774858007183c084101"
    )


# --- CoAP ---------------------------------------------------------------------------------

POST_HEX = "4402123401020304b1730c6b69746368656e2e74656d70111135743d616263ffd1"


def test_coap_request_golden(ctx):
    options = coap.request_options(["s", "kitchen.temp"], 17)
    options.insert(0, (15, b"t=abc"))  # a Uri-Query put first still goes last: sorted
    datagram = coap.encode(coap.CON, coap.POST, 0x1234, b"\x01\x02\x03\x04", options, b"\xd1")
    assert hx(datagram) == POST_HEX
    mtype, code, mid, token, opts, payload = coap.decode(datagram)
    assert (mtype, code, mid, token, payload) == (
        coap.CON,
        coap.POST,
        0x1234,
        h("01020304"),
        b"\xd1",
    )
    assert opts == [(11, b"s"), (11, b"kitchen.temp"), (12, b"\x11"), (15, b"t=abc")]


def test_coap_long_options_round_trip(ctx):
    options = [(11, b"a" * 12), (11, b"b" * 13), (11, b"c" * 300), (300, b""), (2000, b"z")]
    datagram = coap.encode(coap.NON, coap.GET, 7, b"", options, b"payload")
    assert coap.decode(datagram)[4] == options
    assert coap.decode(datagram)[5] == b"payload"


def test_coap_malformed_datagrams_are_refused(ctx):
    for bad in ("40", "80010001", "4901000100", "40010001ff", "4001000100d0", "40010001f0"):
        raises(coap.CoapError, coap.decode, h(bad))
    assert coap.code_text(0x44) == "2.04" and coap.code_text(0x84) == "4.04"


def _client(answer):
    agent = FakeAgent(answer)
    return agent, coap.Client(agent, "agent", Seeded(b"coap"), ack_timeout_ms=4, max_retransmit=1)


def test_coap_reset_raises_reset(ctx):
    def reset(request):
        return [coap.encode(coap.RST, coap.EMPTY, coap.decode(request)[2])]

    agent, client = _client(reset)
    raises(coap.Reset, client.post, ["s", "x"], 17, b"m")
    assert len(agent.sent) == 1  # a reset is final: no retransmission


def test_coap_separate_response_whose_empty_ack_was_lost(ctx):
    def separate_only(request):
        mtype, _, _, token, _, _ = coap.decode(request)
        if mtype != coap.CON:
            return []
        return [coap.encode(coap.CON, coap.CHANGED, 999, token, (), b"done")]

    agent, client = _client(separate_only)
    assert client.post(["s", "x"], 17, b"m") == (coap.CHANGED, b"done")
    ack = coap.decode(agent.sent[-1])
    assert (ack[0], ack[1], ack[2]) == (coap.ACK, coap.EMPTY, 999)
    assert client.retransmissions == 0


def test_coap_late_duplicate_is_acknowledged_and_skipped(ctx):
    def late_duplicate_first(request):
        mtype, _, mid, token, _, _ = coap.decode(request)
        if mtype != coap.CON:
            return []
        # A separate response to an earlier request, sent again, then this one's answer.
        stale = coap.encode(coap.CON, coap.CHANGED, 998, b"old!", (), b"stale")
        return [stale, coap.encode(coap.ACK, coap.CHANGED, mid, token, (), b"fresh")]

    agent, client = _client(late_duplicate_first)
    assert client.post(["s", "x"], 17, b"m") == (coap.CHANGED, b"fresh")
    acks = [coap.decode(d) for d in agent.sent if coap.decode(d)[0] == coap.ACK]
    assert [(a[1], a[2]) for a in acks] == [(coap.EMPTY, 998)]


# --- ring buffer and counter ---------------------------------------------------------------


def _check_ring(make):
    r = make(3)
    assert len(r) == 0 and r.peek() is None
    for i in range(3):
        assert r.push(bytes((i,)) * (i + 1)) is False
    assert len(r) == 3 and r.peek() == b"\x00"
    assert r.push(b"\x03") is True  # full: the oldest goes
    assert r.dropped == 1 and r.peek() == b"\x01\x01"
    r.pop()
    assert r.peek() == b"\x02\x02\x02"
    r.pop()
    r.pop()
    assert len(r) == 0 and r.peek() is None
    r.pop()  # popping an empty ring does nothing
    assert len(r) == 0


def test_memory_ring_keeps_order_and_counts_drops(ctx):
    _check_ring(ring.MemoryRing)


def test_file_ring_keeps_order_and_counts_drops(ctx):
    _check_ring(lambda capacity: ring.FileRing(ctx.scratch, capacity, 16))


def test_file_ring_survives_a_reboot(ctx):
    r = ring.FileRing(ctx.scratch, 4, 32)
    for i in range(6):
        r.push(b"m" + bytes((i,)))
    r.pop()
    again = ring.FileRing(ctx.scratch, 4, 32)
    assert len(again) == 3 and again.dropped == 2
    assert again.peek() == b"m\x03"
    raises(ValueError, again.push, b"x" * 31)  # 31 + 2 length bytes > 32
    again.push(b"x" * 30)
    assert len(again) == 4


def test_file_ring_starts_empty_on_another_layout(ctx):
    r = ring.FileRing(ctx.scratch, 4, 32)
    r.push(b"old")
    # The same 128 bytes of ring.dat, cut into other slots: "old" cannot be read back.
    swapped = ring.FileRing(ctx.scratch, 8, 16)
    assert len(swapped) == 0 and swapped.peek() is None and swapped.dropped == 0
    swapped.push(b"new")
    again = ring.FileRing(ctx.scratch, 8, 16)
    assert len(again) == 1 and again.peek() == b"new"


def test_file_ring_starts_empty_on_a_corrupt_state(ctx):
    bad_states = (
        "",
        "0 1 0",  # the three-field state of an older firmware: layout unknown
        "0 1 0 4",
        "0 1 0 4 32 7",
        "x 1 0 4 32",
        "4 1 0 4 32",  # head past the last slot
        "0 5 0 4 32",  # more messages than slots
        "0 1 -1 4 32",
    )
    for bad in bad_states:
        r = ring.FileRing(ctx.scratch, 4, 32)
        r.push(b"kept")
        with open(ctx.scratch + "/ring.st", "w") as f:
            f.write(bad)
        again = ring.FileRing(ctx.scratch, 4, 32)
        assert len(again) == 0 and again.peek() is None, bad
        again.push(b"next")
        assert ring.FileRing(ctx.scratch, 4, 32).peek() == b"next", bad
        again.pop()


def test_file_counter_never_reuses_a_counter_after_a_reboot(ctx):
    path = ctx.scratch + "/counter"
    first = counter.FileCounter(path, block=10)
    taken = [first.take() for _ in range(15)]
    assert taken == list(range(1, 16))
    second = counter.FileCounter(path, block=10)
    assert second.take() == 21  # the block 11..20 was reserved by the first boot
    third = counter.FileCounter(path, block=10)
    assert third.take() == 31
    assert counter.MemoryCounter().take() == 1


# --- the sensor loop against a scripted agent ------------------------------------------------


class FakeAgent:
    """A socket whose far end is a scripted CoAP server; ``answer(request)`` says what."""

    def __init__(self, answer):
        self.answer = answer
        self.sent = []
        self.inbox = []
        self.timeout = None

    def sendto(self, data, address):
        data = bytes(data)
        self.sent.append(data)
        self.inbox.extend(self.answer(data))

    def settimeout(self, timeout):
        self.timeout = timeout

    def recvfrom(self, size):
        if self.inbox:
            return self.inbox.pop(0), "agent"
        clock.sleep_ms(int(self.timeout * 1000) + 1)
        raise OSError(11)

    def requests(self):
        return [d for d in self.sent if coap.decode(d)[1] == coap.POST]


def piggybacked(code=coap.CHANGED, payload=b""):
    def answer(request):
        mtype, _, mid, token, _, _ = coap.decode(request)
        if mtype != coap.CON:
            return []
        return [coap.encode(coap.ACK, code, mid, token, (), payload)]

    return answer


def separate(request):
    mtype, _, mid, token, _, _ = coap.decode(request)
    if mtype != coap.CON:
        return []
    return [coap.encode(coap.ACK, coap.EMPTY, mid), coap.encode(coap.CON, coap.CHANGED, 999, token)]


def silent(request):
    return []


class Seeded:
    """Repeatable 'random' bytes: SHA-256 in counter mode, the same on both runtimes."""

    def __init__(self, seed):
        self.seed = seed
        self.blocks = 0
        self.pool = b""

    def __call__(self, n):
        import hashlib

        while len(self.pool) < n:
            self.pool += hashlib.sha256(self.seed + struct.pack(">I", self.blocks)).digest()
            self.blocks += 1
        out, self.pool = self.pool[:n], self.pool[n:]
        return out


def make_sensor(agent, buffer=10, driver=None):
    client = coap.Client(agent, "agent", Seeded(b"unit"), ack_timeout_ms=4, max_retransmit=1)
    times = [T0]

    def now():
        times[0] += 1
        return times[0]

    return Sensor(
        client,
        KEY,
        KID,
        "kitchen.temp",
        driver or CountingDriver(),
        ring.MemoryRing(buffer),
        counter.MemoryCounter(),
        time_source=now,
        min_backoff_ms=0,
        max_backoff_ms=0,
    )


def test_reading_is_posted_as_mac0_and_acknowledged(ctx):
    agent = FakeAgent(piggybacked())
    sensor = make_sensor(agent, driver=SimulatedDriver())
    assert sensor.step() == OK
    (request,) = agent.requests()
    mtype, code, _, token, options, payload = coap.decode(request)
    assert mtype == coap.CON and code == coap.POST and len(token) == 4
    assert options == [(11, b"s"), (11, b"kitchen.temp"), (12, b"\x11")]
    pack = senml.encode_pack([{"n": "temperature", "t": T0 + 1, "v": 20.0, "u": "Cel"}])
    assert payload == cose.mac0(pack, KEY, KID, 1)
    assert sensor.stats()["sent"] == 1 and sensor.stats()["pending"] == 0


def test_separate_response_is_taken_and_acknowledged(ctx):
    agent = FakeAgent(separate)
    sensor = make_sensor(agent)
    assert sensor.step() == OK
    acks = [d for d in agent.sent if coap.decode(d)[0] == coap.ACK]
    assert [coap.decode(a)[2] for a in acks] == [999]


def test_silence_buffers_then_sends_oldest_first_unchanged(ctx):
    agent = FakeAgent(silent)
    sensor = make_sensor(agent)
    sensor.min_backoff_ms = sensor._backoff_ms = 60000
    for _ in range(3):
        assert sensor.step() == BUFFERED
    first_try = agent.requests()
    # Tried once and retransmitted once (MAX_RETRANSMIT 1), byte for byte; then backing off,
    # the next two went straight to the buffer.
    assert len(first_try) == 2 and first_try[0] == first_try[1]
    assert sensor.stats()["pending"] == 3 and sensor.coap.retransmissions == 1
    agent.answer = piggybacked()
    agent.sent = []
    sensor._retry_at = clock.ticks_ms()
    acked = []
    sensor.on_acked = acked.append
    assert sensor.flush() == 3
    resent = agent.requests()
    assert [coap.decode(d)[5] for d in resent] == acked
    assert acked[0] == coap.decode(first_try[0])[5]  # the same message: counter and MAC
    assert [sensor_counter(m) for m in acked] == [1, 2, 3]
    stats = sensor.stats()
    assert stats["buffered"] == 3 and stats["sent_from_buffer"] == 3 and stats["pending"] == 0


def test_full_buffer_drops_the_oldest_and_counts_it(ctx):
    agent = FakeAgent(silent)
    sensor = make_sensor(agent, buffer=2)
    for _ in range(5):
        sensor.submit(sensor.measure())
    assert sensor.stats()["dropped"] == 3 and sensor.stats()["pending"] == 2
    agent.answer = piggybacked()
    acked = []
    sensor.on_acked = acked.append
    sensor.flush()
    counters = [sensor_counter(m) for m in acked]
    assert counters == [4, 5]


def sensor_counter(message):
    """The message counter: the Partial IV (label 6) of the COSE_Mac0's protected header."""
    # d1 (tag 17), 84 (array of 4), then the protected header as a short byte string that
    # holds the map a2 01 05 06 <bstr>: {1: 5 (HMAC 256/256), 6: Partial IV}.
    assert message[:2] == b"\xd1\x84" and message[2] >> 5 == 2 and message[2] & 0x1F < 24
    protected = message[3 : 3 + (message[2] & 0x1F)]
    assert protected[:4] == b"\xa2\x01\x05\x06" and protected[4] >> 5 == 2
    size = protected[4] & 0x1F
    assert 1 <= size <= 8 and len(protected) == 5 + size
    value = 0
    for byte in protected[5:]:
        value = (value << 8) | byte
    return value


def test_refusal_is_final_and_counted(ctx):
    agent = FakeAgent(piggybacked(0x81, b"sensor greenhouse-1 is not enrolled"))
    sensor = make_sensor(agent)
    assert sensor.step() == REJECTED
    assert sensor.stats()["rejected"] == 1 and sensor.stats()["pending"] == 0
    assert sensor.last_refusal == ("4.01", b"sensor greenhouse-1 is not enrolled")


def test_flush_drops_a_buffered_message_refused_at_the_head(ctx):
    agent = FakeAgent(silent)
    sensor = make_sensor(agent)
    sensor.min_backoff_ms = sensor._backoff_ms = 60000
    for _ in range(3):
        assert sensor.step() == BUFFERED
    refuse_first = piggybacked(0x81, b"replay")
    accept = piggybacked()

    def answer(request):
        mtype, _, _, _, _, payload = coap.decode(request)
        if mtype != coap.CON:
            return []
        return refuse_first(request) if sensor_counter(payload) == 1 else accept(request)

    agent.answer = answer
    sensor._retry_at = clock.ticks_ms()
    acked = []
    sensor.on_acked = acked.append
    assert sensor.flush() == 2  # the refused head is popped, not retried, and not counted
    assert [sensor_counter(m) for m in acked] == [2, 3]
    stats = sensor.stats()
    assert stats["rejected"] == 1 and stats["pending"] == 0 and stats["sent_from_buffer"] == 2
    assert sensor.last_refusal == ("4.01", b"replay")


def test_server_error_is_retried_later(ctx):
    agent = FakeAgent(piggybacked(0xA3, b"store full"))  # 5.03
    sensor = make_sensor(agent)
    assert sensor.step() == BUFFERED
    agent.answer = piggybacked()
    assert sensor.flush() == 1


def test_backoff_holds_new_readings_in_the_buffer(ctx):
    agent = FakeAgent(silent)
    sensor = make_sensor(agent)
    sensor.min_backoff_ms = sensor._backoff_ms = 60000
    sensor.step()
    agent.sent = []
    agent.answer = piggybacked()
    assert sensor.step() == BUFFERED and agent.sent == []  # backing off: not even tried
    assert sensor.stats()["pending"] == 2
    sensor._retry_at = clock.ticks_ms()
    assert sensor.flush() == 2


# --- mDNS ---------------------------------------------------------------------------------


def _rr(name, rtype, rdata, cache_flush=False):
    rclass = 1 | (0x8000 if cache_flush else 0)
    return mdns._name_bytes(name) + struct.pack(">HHIH", rtype, rclass, 120, len(rdata)) + rdata


def _response(records):
    return struct.pack(">HHHHHH", 0, 0x8400, 0, len(records), 0, 0) + b"".join(records)


def test_mdns_query_golden(ctx):
    assert hx(mdns.build_query(0x1234)) == (
        "123400000001000000000000075f6c696368656e045f756470056c6f63616c00000c0001"
    )


def test_mdns_answer_gives_address_and_coap_port(ctx):
    instance = "lichen-abc._lichen._udp.local"
    txt = b"\x09txtvers=1\x09coap=5684"
    answer = _response(
        [
            _rr("_lichen._udp.local", mdns.TYPE_PTR, mdns._name_bytes(instance)),
            _rr(
                instance,
                mdns.TYPE_SRV,
                struct.pack(">HHH", 0, 0, 5683) + mdns._name_bytes("pi.local"),
                True,
            ),
            _rr(instance, mdns.TYPE_TXT, txt, True),
            _rr("pi.local", mdns.TYPE_A, bytes((192, 168, 1, 20)), True),
        ]
    )
    assert mdns.agents_in(answer) == [("192.168.1.20", 5684)]
    assert mdns.agents_in(answer[:-4]) == []  # truncated: skipped, not raised
    assert mdns.agents_in(b"\x00" * 12) == []  # a query, not a response
    loop = struct.pack(">HHHHHH", 0, 0x8400, 0, 1, 0, 0) + b"\xc0\x0c"
    assert mdns.agents_in(loop) == []


def test_mdns_follows_a_compression_pointer_in_the_srv_target(ctx):
    instance = "lichen-abc._lichen._udp.local"
    ptr = _rr("_lichen._udp.local", mdns.TYPE_PTR, mdns._name_bytes(instance))
    a_record = _rr("pi.local", mdns.TYPE_A, bytes((10, 0, 0, 9)))
    # RFC 1035 section 4.1.4: the target "pi.local" is a pointer to the A record's name,
    # which starts right after the 12-byte header and the PTR record.
    target = struct.pack(">H", 0xC000 | (12 + len(ptr)))
    srv = _rr(instance, mdns.TYPE_SRV, struct.pack(">HHH", 0, 0, 5683) + target)
    assert mdns.agents_in(_response([ptr, a_record, srv])) == [("10.0.0.9", 5683)]
    # A label then a pointer: "pi" + a pointer to the "local" of the A record's name.
    partial = b"\x02pi" + struct.pack(">H", 0xC000 | (12 + len(ptr) + 3))
    srv = _rr(instance, mdns.TYPE_SRV, struct.pack(">HHH", 0, 0, 5700) + partial)
    assert mdns.agents_in(_response([ptr, a_record, srv])) == [("10.0.0.9", 5700)]
