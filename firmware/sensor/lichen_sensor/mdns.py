"""Find an agent on the LAN with one mDNS query (RFC 6762 section 5.1, one-shot queries).

The sensor asks for ``_lichen._udp.local`` PTR records from an ordinary UDP socket (not
port 5353), so responders answer it by unicast (section 6.7, legacy unicast) and the board
needs no multicast membership. From the answer's PTR, SRV, TXT and A records it takes each
agent's IPv4 address and CoAP port (the TXT ``coap=`` key, else the SRV port). An advert
authorises nothing: the agent still has to accept the sensor's MAC. Parsing is bounded
(records, name length, compression jumps) and a malformed answer is skipped, not raised.
"""

import struct

from lichen_sensor import clock

MDNS_ADDRESS = "224.0.0.251"  # RFC 6762 section 3
MDNS_PORT = 5353
SERVICE = "_lichen._udp.local"
TYPE_A, TYPE_PTR, TYPE_TXT, TYPE_SRV = 1, 12, 16, 33
CLASS_IN = 1
MAX_RECORDS = 64  # an answer from a few agents holds a dozen records
MAX_JUMPS = 16  # compression pointers followed in one name
MAX_NAME = 255  # RFC 1035 section 2.3.4
MAX_DATAGRAM = 9000  # RFC 6762 section 17


class DnsError(Exception):
    """A DNS message this parser will not read."""


def _name_bytes(name):
    out = []
    for label in name.strip(".").split("."):
        raw = label.encode("utf-8")
        if not 0 < len(raw) < 64:
            raise ValueError("bad DNS label")
        out.append(bytes((len(raw),)) + raw)
    out.append(b"\x00")
    return b"".join(out)


def build_query(query_id, service=SERVICE):
    """A DNS query for the PTR records of ``service``, its id repeated in the answer."""
    header = struct.pack(">HHHHHH", query_id, 0, 1, 0, 0, 0)
    return header + _name_bytes(service) + struct.pack(">HH", TYPE_PTR, CLASS_IN)


def _read_name(data, pos):
    labels = []
    end = None
    jumps = 0
    length = 0
    while True:
        if pos >= len(data):
            raise DnsError("name runs past the end")
        size = data[pos]
        if size & 0xC0 == 0xC0:
            if pos + 1 >= len(data):
                raise DnsError("truncated pointer")
            jumps += 1
            if jumps > MAX_JUMPS:
                raise DnsError("too many compression pointers")
            if end is None:
                end = pos + 2
            pos = ((size & 0x3F) << 8) | data[pos + 1]
            continue
        if size & 0xC0:
            raise DnsError("reserved label type")
        pos += 1
        if size == 0:
            break
        length += size + 1
        if length > MAX_NAME or pos + size > len(data):
            raise DnsError("name too long or truncated")
        labels.append(bytes(data[pos : pos + size]).decode("utf-8"))
        pos += size
    return ".".join(labels).lower(), (end if end is not None else pos)


def parse(data):
    """The resource records of a DNS message: a list of (name, type, rdata, offset)."""
    if len(data) < 12:
        raise DnsError("shorter than a DNS header")
    _, flags, questions, answers, authorities, additionals = struct.unpack(">HHHHHH", data[:12])
    if not flags & 0x8000:
        return []  # a query, not a response
    if questions + answers + authorities + additionals > MAX_RECORDS:
        raise DnsError("too many records")
    pos = 12
    for _ in range(questions):
        _, pos = _read_name(data, pos)
        pos += 4
    records = []
    for _ in range(answers + authorities + additionals):
        name, pos = _read_name(data, pos)
        if pos + 10 > len(data):
            raise DnsError("truncated record")
        rtype, _, _, rdlength = struct.unpack(">HHIH", data[pos : pos + 10])
        pos += 10
        if pos + rdlength > len(data):
            raise DnsError("truncated record data")
        records.append((name, rtype, bytes(data[pos : pos + rdlength]), pos))
        pos += rdlength
    return records


def _txt(rdata):
    fields = {}
    pos = 0
    while pos < len(rdata):
        size = rdata[pos]
        entry = rdata[pos + 1 : pos + 1 + size]
        pos += 1 + size
        key, _, value = entry.partition(b"=")
        key = key.lower()
        if key not in fields:  # RFC 6763 section 6.4: the first occurrence wins
            fields[key] = value
    return fields


def agents_in(data, service=SERVICE):
    """(IPv4 address, CoAP port) of every agent a DNS response describes."""
    try:
        records = parse(data)
        service = service.lower()
        instances = []
        srv = {}
        txt = {}
        addresses = {}
        for name, rtype, rdata, offset in records:
            if rtype == TYPE_PTR and name == service:
                instances.append(_read_name(data, offset)[0])
            elif rtype == TYPE_SRV and len(rdata) > 6:
                port = struct.unpack(">H", rdata[4:6])[0]
                srv[name] = (_read_name(data, offset + 6)[0], port)
            elif rtype == TYPE_TXT:
                txt[name] = _txt(rdata)
            elif rtype == TYPE_A and len(rdata) == 4:
                addresses[name] = "%d.%d.%d.%d" % tuple(rdata)
    except (DnsError, UnicodeError, ValueError, IndexError):
        return []
    found = []
    for instance in instances:
        if instance not in srv:
            continue
        target, port = srv[instance]
        coap = txt.get(instance, {}).get(b"coap", b"")
        if coap.isdigit() and 0 < int(coap) < 65536:
            port = int(coap)
        if target in addresses:
            found.append((addresses[target], port))
    return found


def discover(sock, random_bytes, timeout_ms=3000, address=None, service=SERVICE):
    """Ask once; return the agents that answer within ``timeout_ms`` as (address, port).

    ``sock`` is an unbound or ephemeral UDP socket; ``address`` is where to ask (the mDNS
    group by default, as ``socket.getaddrinfo`` gives it on each runtime).
    """
    if address is None:
        import socket

        address = socket.getaddrinfo(MDNS_ADDRESS, MDNS_PORT)[0][-1]
    query_id = struct.unpack(">H", random_bytes(2))[0]
    sock.sendto(build_query(query_id, service), address)
    deadline = clock.ticks_add(clock.ticks_ms(), timeout_ms)
    found = []
    while not found:
        remaining = clock.ticks_diff(deadline, clock.ticks_ms())
        if remaining <= 0:
            break
        sock.settimeout(remaining / 1000)
        try:
            data, _ = sock.recvfrom(MAX_DATAGRAM)
        except OSError:
            continue
        for agent in agents_in(data, service):
            if agent not in found:
                found.append(agent)
    return found
