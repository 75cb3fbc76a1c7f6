"""Stream indexes: a hash chain of signed segment records."""

from __future__ import annotations

import pytest

from lichen import cbor, cid, cose, stream
from lichen.errors import BadSignature, IntegrityError, LocalProtocolError, MalformedMessage
from lichen.identity import Identity

AGENT = Identity(bytes(range(32)))
OTHER = Identity(bytes(range(1, 33)))


def build_chain(length: int, name: str = "kitchen.temp") -> list[bytes]:
    records: list[bytes] = []
    previous = None
    for seq in range(length):
        _, signed = stream.seal_segment(
            AGENT,
            previous,
            stream=name,
            seq=seq,
            object_cid=cid.of(f"segment {seq}".encode()),
            count=10,
            first_time=1000.0 + seq * 60,
            last_time=1059.5 + seq * 60,
            sealed_at=1060 + seq * 60,
        )
        records.append(signed)
        previous = signed
    return records


def test_chain_verifies() -> None:
    chain = build_chain(5)
    segments = stream.verify_chain(chain, AGENT.public, stream="kitchen.temp")
    assert [s.seq for s in segments] == [0, 1, 2, 3, 4]
    assert segments[0].prev == stream.GENESIS
    assert segments[3].prev == stream.link(chain[2])


def test_a_tail_verifies_from_a_known_link() -> None:
    chain = build_chain(5)
    tail = stream.verify_chain(
        chain[2:],
        AGENT.public,
        stream="kitchen.temp",
        start_seq=2,
        start_prev=stream.link(chain[1]),
    )
    assert [s.seq for s in tail] == [2, 3, 4]


def test_removed_segment_is_detected() -> None:
    chain = build_chain(5)
    del chain[2]
    with pytest.raises(IntegrityError, match="expected segment 2, found 3"):
        stream.verify_chain(chain, AGENT.public, stream="kitchen.temp")


def test_reordered_segments_are_detected() -> None:
    chain = build_chain(5)
    chain[1], chain[2] = chain[2], chain[1]
    with pytest.raises(IntegrityError, match="removed or reordered"):
        stream.verify_chain(chain, AGENT.public, stream="kitchen.temp")


def test_replaced_segment_is_detected() -> None:
    chain = build_chain(3)
    # A writer key holder re-signs a different segment 1 (say, with other readings):
    # segment 2 still points at the original.
    _, forged = stream.seal_segment(
        AGENT,
        chain[0],
        stream="kitchen.temp",
        seq=1,
        object_cid=cid.of(b"other readings"),
        count=10,
        first_time=1060.0,
        last_time=1119.5,
        sealed_at=1120,
    )
    chain[1] = forged
    with pytest.raises(IntegrityError, match="segment 2 does not follow segment 1"):
        stream.verify_chain(chain, AGENT.public, stream="kitchen.temp")


def test_record_of_another_stream_or_writer_is_refused() -> None:
    with pytest.raises(IntegrityError, match="belongs to stream"):
        stream.verify_chain(build_chain(2, "garden.temp"), AGENT.public, stream="kitchen.temp")
    with pytest.raises(BadSignature):
        stream.verify_chain(build_chain(2), OTHER.public, stream="kitchen.temp")


def test_altered_record_is_refused() -> None:
    message = cbor.decode(build_chain(1)[0])
    payload = cbor.decode_map(message.value[2])
    payload[6] = 9  # fewer readings than were signed for
    message.value[2] = cbor.encode(payload)
    with pytest.raises(BadSignature):
        stream.verify_chain([cbor.encode(message)], AGENT.public, stream="kitchen.temp")


def test_malformed_record_fields_are_refused() -> None:
    good = cbor.decode_map(cose.parse(build_chain(1)[0]).payload)
    for key, value in [(7, "noon"), (7, True), (2, "../etc"), (6, 0), (4, b"short")]:
        payload = {**good, key: value}
        with pytest.raises(MalformedMessage):
            stream.open_segment(cose.sign1(cbor.encode(payload), AGENT), AGENT.public)


@pytest.mark.parametrize("name", ["", "-x", "a/b", "a b", "x" * 65, "über"])
def test_bad_stream_names_are_refused(name: str) -> None:
    with pytest.raises(MalformedMessage):
        stream.check_stream_name(name)


def test_sealing_refuses_a_broken_start() -> None:
    with pytest.raises(LocalProtocolError):
        stream.seal_segment(
            AGENT,
            None,
            stream="s",
            seq=3,
            object_cid=cid.of(b"x"),
            count=1,
            first_time=0,
            last_time=0,
            sealed_at=0,
        )


def test_segment_golden_vector() -> None:
    assert build_chain(1)[0].hex() == SEGMENT_HEX


SEGMENT_HEX = (
    "d28443a10127a1045456475aa75463474c0285df5dbf2bcab73da65135586faa"
    "00010105026c6b69746368656e2e74656d700300045820000000000000000000"
    "000000000000000000000000000000000000000000000005582401551220c0da"
    "fc1f67ee55a51c4920215b92cd209abb62615bff1ae83fd62f8d310d1289060a"
    "07f963d008fa44847000091904245840ef3f913467d9114c0b31a3d4a5c9cffd"
    "a5936ca07560dc506c6a4028fa0feb48946c178610ffcdd6c5dfaae60f425e2d"
    "6b628d36d27568cd5c5190483a01c400"
)
