"""A CoAP client over UDP (RFC 7252): confirmable requests with retransmission.

Enough of CoAP for a sensor: build a request with Uri-Path and Content-Format options, send
it as a confirmable message, retransmit with exponential back-off until it is acknowledged
(section 4.2), and take the response piggybacked on the ACK or sent separately (section
5.2.2), acknowledging a separate confirmable response. The socket is injected
(anything with ``sendto``, ``recvfrom`` and ``settimeout``), and so is the source of message
ids and tokens, so that a test can make the bytes on the wire repeatable. Hand-written:
MicroPython has no CoAP library in its standard library.
"""

import struct

from lichen_sensor import clock

VERSION = 1
CON, NON, ACK, RST = 0, 1, 2, 3  # section 3: message types
EMPTY = 0
GET, POST, PUT, DELETE = 1, 2, 3, 4
CHANGED = 0x44  # 2.04
OPT_URI_PATH = 11  # section 5.10
OPT_CONTENT_FORMAT = 12
PAYLOAD_MARKER = 0xFF

# Section 4.8 transmission parameters, as defaults; a deployment may shorten them.
ACK_TIMEOUT_MS = 2000
ACK_RANDOM_FACTOR = 1.5
MAX_RETRANSMIT = 4
SEPARATE_TIMEOUT_MS = 10000  # how long to wait for a separate response after an empty ACK
MAX_DATAGRAM = 1280  # answers are short diagnostics; section 4.6 keeps messages near 1 KiB
TOKEN_SIZE = 4


class CoapError(Exception):
    """A datagram that is not a well-formed CoAP message."""


class NoAnswer(Exception):
    """No acknowledgement arrived within the retransmission window (section 4.2)."""


class Reset(Exception):
    """The server answered our request with a Reset message."""


def code_text(code):
    """A code as ``c.dd``, e.g. ``2.04``."""
    return "%d.%02d" % (code >> 5, code & 0x1F)


def _uint(value):
    out = []
    while value:
        out.append(value & 0xFF)
        value >>= 8
    out.reverse()
    return bytes(out)


def _option_part(value):
    # Section 3.1: 0-12 inline, 13 + one byte, 14 + two bytes.
    if value < 13:
        return value, b""
    if value < 269:
        return 13, bytes((value - 13,))
    return 14, struct.pack(">H", value - 269)


def encode(mtype, code, mid, token=b"", options=(), payload=b""):
    """A CoAP message; ``options`` is a list of (number, bytes), put in order here."""
    if len(token) > 8:
        raise ValueError("a token is at most 8 bytes")
    out = [struct.pack(">BBH", (VERSION << 6) | (mtype << 4) | len(token), code, mid), token]
    previous = 0
    # Repeated options keep their order (Uri-Path segments): MicroPython's sort is not
    # stable, so the position breaks ties.
    ordered = [(number, i, value) for i, (number, value) in enumerate(options)]
    ordered.sort()
    for number, _, value in ordered:
        delta, delta_ext = _option_part(number - previous)
        length, length_ext = _option_part(len(value))
        out.append(bytes(((delta << 4) | length,)))
        out.append(delta_ext)
        out.append(length_ext)
        out.append(value)
        previous = number
    if payload:
        out.append(bytes((PAYLOAD_MARKER,)))
        out.append(payload)
    return b"".join(out)


def _extended(data, pos, nibble):
    if nibble < 13:
        return nibble, pos
    if nibble == 13:
        if pos >= len(data):
            raise CoapError("truncated option")
        return data[pos] + 13, pos + 1
    if nibble == 14:
        if pos + 2 > len(data):
            raise CoapError("truncated option")
        return struct.unpack(">H", data[pos : pos + 2])[0] + 269, pos + 2
    raise CoapError("reserved option nibble 15")


def decode(data):
    """(type, code, mid, token, options, payload) of a datagram; CoapError if malformed."""
    if len(data) < 4:
        raise CoapError("shorter than a CoAP header")
    first, code, mid = struct.unpack(">BBH", data[:4])
    if first >> 6 != VERSION:
        raise CoapError("not CoAP version 1")
    tkl = first & 0x0F
    if tkl > 8:
        raise CoapError("token length over 8")
    pos = 4 + tkl
    if pos > len(data):
        raise CoapError("truncated token")
    token = bytes(data[4:pos])
    options = []
    number = 0
    payload = b""
    while pos < len(data):
        byte = data[pos]
        pos += 1
        if byte == PAYLOAD_MARKER:
            payload = bytes(data[pos:])
            if not payload:
                raise CoapError("payload marker without a payload")
            break
        delta, pos = _extended(data, pos, byte >> 4)
        length, pos = _extended(data, pos, byte & 0x0F)
        if pos + length > len(data):
            raise CoapError("truncated option value")
        number += delta
        options.append((number, bytes(data[pos : pos + length])))
        pos += length
    return (first >> 4) & 0x03, code, mid, token, options, payload


def request_options(path, content_format=None):
    """Options for a request to ``path`` (a list of segments)."""
    options = [(OPT_URI_PATH, segment.encode("utf-8")) for segment in path]
    if content_format is not None:
        options.append((OPT_CONTENT_FORMAT, _uint(content_format)))
    return options


class Client:
    """Confirmable requests to one server address over an injected UDP socket.

    ``random_bytes(n)`` gives the message id start, tokens and the retransmission jitter
    (``os.urandom`` on a board; a seeded function in tests, to repeat the same bytes).
    """

    def __init__(
        self,
        sock,
        address,
        random_bytes,
        ack_timeout_ms=ACK_TIMEOUT_MS,
        max_retransmit=MAX_RETRANSMIT,
        separate_timeout_ms=SEPARATE_TIMEOUT_MS,
    ):
        self.sock = sock
        self.address = address
        self.random_bytes = random_bytes
        self.ack_timeout_ms = ack_timeout_ms
        self.max_retransmit = max_retransmit
        self.separate_timeout_ms = separate_timeout_ms
        self._mid = struct.unpack(">H", random_bytes(2))[0]
        self.retransmissions = 0

    def _receive(self, deadline):
        """One decoded message before ``deadline`` (ticks), or None when time is up."""
        while True:
            remaining = clock.ticks_diff(deadline, clock.ticks_ms())
            if remaining <= 0:
                return None
            self.sock.settimeout(remaining / 1000)
            try:
                data, _ = self.sock.recvfrom(MAX_DATAGRAM)
            except OSError:
                # A timeout (CPython's socket.timeout is an OSError; MicroPython raises
                # OSError(ETIMEDOUT or EAGAIN)), or an ICMP port unreachable turned into an
                # error on the next receive: either way, keep waiting until the deadline.
                continue
            try:
                return decode(data)
            except CoapError:
                continue  # section 4.2: a malformed message is silently ignored

    def _acknowledge(self, mid):
        self.sock.sendto(encode(ACK, EMPTY, mid), self.address)

    def request(self, code, path, content_format=None, payload=b""):
        """Send a confirmable request; return (response code, payload).

        Raises NoAnswer when nothing acknowledges it after MAX_RETRANSMIT retransmissions,
        Reset when the server resets it.
        """
        self._mid = (self._mid + 1) & 0xFFFF
        mid = self._mid
        token = self.random_bytes(TOKEN_SIZE)
        datagram = encode(CON, code, mid, token, request_options(path, content_format), payload)
        # Section 4.2: the first timeout is random in [ACK_TIMEOUT, ACK_TIMEOUT * factor].
        jitter = self.random_bytes(1)[0] / 255
        timeout = int(self.ack_timeout_ms * (1 + (ACK_RANDOM_FACTOR - 1) * jitter))
        for attempt in range(self.max_retransmit + 1):
            if attempt:
                self.retransmissions += 1
            self.sock.sendto(datagram, self.address)
            deadline = clock.ticks_add(clock.ticks_ms(), timeout)
            while True:
                message = self._receive(deadline)
                if message is None:
                    break
                mtype, rcode, rmid, rtoken, _, rpayload = message
                if mtype == ACK and rmid == mid:
                    if rcode == EMPTY:
                        return self._separate(token)
                    if rtoken == token:
                        return rcode, rpayload
                elif mtype == RST and rmid == mid:
                    raise Reset("the server reset the request")
                elif mtype in (CON, NON) and rtoken == token and rcode != EMPTY:
                    # A separate response whose empty ACK was lost (section 5.2.2).
                    if mtype == CON:
                        self._acknowledge(rmid)
                    return rcode, rpayload
                elif mtype == CON:
                    self._acknowledge(rmid)  # a late duplicate of an earlier separate response
            timeout *= 2
        raise NoAnswer("no acknowledgement after %d transmissions" % (self.max_retransmit + 1))

    def _separate(self, token):
        deadline = clock.ticks_add(clock.ticks_ms(), self.separate_timeout_ms)
        while True:
            message = self._receive(deadline)
            if message is None:
                raise NoAnswer("acknowledged, but the separate response never came")
            mtype, rcode, rmid, rtoken, _, rpayload = message
            if mtype in (CON, NON) and rtoken == token and rcode != EMPTY:
                if mtype == CON:
                    self._acknowledge(rmid)
                return rcode, rpayload
            if mtype == CON:
                self._acknowledge(rmid)

    def post(self, path, content_format, payload):
        """A confirmable POST; (code, payload) as :meth:`request`."""
        return self.request(POST, path, content_format, payload)
