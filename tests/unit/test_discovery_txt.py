"""The mDNS TXT record of an advert: its exact form, and refusal of every bad value."""

from __future__ import annotations

import asyncio

import pytest
from zeroconf import IPVersion
from zeroconf.asyncio import AsyncServiceInfo

from edge_agent.discovery import (
    MAX_TXT_ENTRIES,
    MAX_TXT_VALUE,
    SERVICE_TYPE,
    Discovery,
    TxtFields,
    build_txt,
    encode_public_key,
    local_addresses,
    parse_txt,
)
from lichen.errors import IntegrityError, LocalProtocolError, MalformedMessage, UnsupportedVersion
from lichen.identity import Identity

IDENTITY = Identity(bytes(range(32)))
OTHER = Identity(bytes(range(1, 33)))
PK = IDENTITY.public.public_key
NODE_ID = "kzdvvj2umnduyauf35o36k6kw462mujv"
PK_TEXT = "A6EHv_POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg"


def good() -> dict[bytes, bytes | None]:
    return dict(build_txt(PK, 5683, 5684))


def with_(**changes: bytes | None) -> dict[bytes, bytes | None]:
    return {**good(), **{k.encode(): v for k, v in changes.items()}}


def without(key: bytes) -> dict[bytes, bytes | None]:
    fields = good()
    del fields[key]
    return fields


def test_golden_txt_record() -> None:
    assert build_txt(PK, 5683, 5684) == {
        b"txtvers": b"1",
        b"id": NODE_ID.encode(),
        b"pk": PK_TEXT.encode(),
        b"coap": b"5683",
        b"tcp": b"5684",
    }
    info = AsyncServiceInfo(
        SERVICE_TYPE, f"x.{SERVICE_TYPE}", port=5683, properties=build_txt(PK, 5683, 5684)
    )
    # RFC 6763 §6.1: each entry is a length byte, then "key=value".
    assert info.text.hex() == (
        "09" "747874766572733d31"  # "txtvers=1"
        "23" "69643d6b7a6476766a32756d6e6475796175663335"
        "6f33366b366b773436326d756a76"  # "id=kzdvvj2umnduyauf35o36k6kw462mujv"
        "2e" "706b3d41364548765f504f454c3464634e3059353076416d57666b316a436270"
        "513166486479475a424a564d6267"  # "pk=A6EHv_POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg"
        "09" "636f61703d35363833"  # "coap=5683"
        "08" "7463703d35363834"  # "tcp=5684"
    )  # fmt: skip


def test_parse_returns_the_fields() -> None:
    assert parse_txt(good()) == TxtFields(NODE_ID, PK, 5683, 5684)
    assert encode_public_key(PK) == PK_TEXT


def test_keys_are_case_insensitive_and_the_first_wins() -> None:
    upper = {k.upper(): v for k, v in good().items()}
    assert parse_txt(upper) == TxtFields(NODE_ID, PK, 5683, 5684)
    first_wins = {**good(), b"COAP": b"9"}
    assert parse_txt(first_wins).coap_port == 5683


def test_unknown_keys_are_ignored() -> None:
    assert parse_txt({**good(), b"future": b"x", b"flag": None}).node_id == NODE_ID


@pytest.mark.parametrize("key", [b"txtvers", b"id", b"pk", b"coap", b"tcp"])
def test_missing_field(key: bytes) -> None:
    with pytest.raises(MalformedMessage, match=key.decode()):
        parse_txt(without(key))


@pytest.mark.parametrize("key", ["txtvers", "id", "pk", "coap", "tcp"])
def test_field_without_value(key: str) -> None:
    with pytest.raises(MalformedMessage, match="without value"):
        parse_txt(with_(**{key: None}))


@pytest.mark.parametrize(
    "port",
    [b"", b"http", b"0", b"65536", b"99999", b"123456", b"-1", b"+80", b" 80", b"80 ", b"080",
     b"8.0", b"\xd9\xa8\xd9\xa0", b"\xef\xbc\x98\xef\xbc\x90"],
)  # fmt: skip
@pytest.mark.parametrize("key", ["coap", "tcp"])
def test_bad_port(key: str, port: bytes) -> None:
    with pytest.raises(MalformedMessage):
        parse_txt(with_(**{key: port}))


@pytest.mark.parametrize("port", [b"1", b"65535"])
def test_port_bounds_are_inclusive(port: bytes) -> None:
    assert parse_txt(with_(coap=port, tcp=port)).tcp_port == int(port)


@pytest.mark.parametrize("key", ["txtvers", "id", "pk", "coap", "tcp", "future"])
def test_oversized_value(key: str) -> None:
    fields = with_(**{key: b"1" * (MAX_TXT_VALUE + 1)})
    if key == "future":
        assert parse_txt(fields).node_id == NODE_ID  # unknown keys are not even read
        return
    with pytest.raises(MalformedMessage, match="over"):
        parse_txt(fields)


def test_too_many_entries() -> None:
    fields = {**good(), **{f"x{i}".encode(): b"" for i in range(MAX_TXT_ENTRIES)}}
    with pytest.raises(MalformedMessage, match="entries"):
        parse_txt(fields)


@pytest.mark.parametrize("value", [b"\xff\xfe", b"caf\xc3\xa9", b"a\x00b", b"a\nb"])
def test_non_ascii_or_control_characters(value: bytes) -> None:
    with pytest.raises(MalformedMessage):
        parse_txt(with_(id=value))


@pytest.mark.parametrize("version", [b"2", b"0", b"1.0", b"01"])
def test_unknown_txtvers(version: bytes) -> None:
    with pytest.raises(UnsupportedVersion):
        parse_txt(with_(txtvers=version))


@pytest.mark.parametrize(
    "node_id",
    [b"", b"kzdvvj2umnduyauf35o36k6kw462muj", b"kzdvvj2umnduyauf35o36k6kw462mujvv"],
)
def test_id_of_the_wrong_length(node_id: bytes) -> None:
    with pytest.raises(MalformedMessage, match="'id'"):
        parse_txt(with_(id=node_id))


@pytest.mark.parametrize(
    "pk",
    [
        PK_TEXT[:-1],  # truncated
        PK_TEXT + "A",  # too long
        PK_TEXT + "=",  # padded
        PK_TEXT[:-1] + "h",  # non-canonical: stray low bits in the last character
        PK_TEXT.replace("_", "/"),  # standard base64, not base64url
        PK_TEXT[:-2] + "!!",
    ],
)
def test_bad_public_key(pk: str) -> None:
    with pytest.raises(MalformedMessage, match="'pk'"):
        parse_txt(with_(pk=pk.encode()))


def test_id_not_derived_from_the_key_is_forged() -> None:
    with pytest.raises(IntegrityError, match="not the node id"):
        parse_txt(with_(id=OTHER.node_id.encode()))
    with pytest.raises(IntegrityError):
        parse_txt(with_(pk=encode_public_key(OTHER.public.public_key).encode()))
    with pytest.raises(IntegrityError):  # a well-formed key, but not the one the id names
        parse_txt(with_(pk=b"A" * 43))
    with pytest.raises(IntegrityError):  # ids are lowercase; no second spelling
        parse_txt(with_(id=NODE_ID.upper().encode()))


@pytest.mark.parametrize("port", [0, -1, 65536])
def test_we_never_advertise_a_bad_port(port: int) -> None:
    with pytest.raises(LocalProtocolError):
        build_txt(PK, port, 5684)
    with pytest.raises(LocalProtocolError):
        Discovery(PK, coap_port=5683, tcp_port=port, on_advert=print, on_gone=print)


def test_advertised_addresses_prefer_routable_ones() -> None:
    v4 = IPVersion.V4Only
    assert local_addresses(["127.0.0.1"], v4) == ["127.0.0.1"]
    assert local_addresses(["127.0.0.1", "10.213.0.1", "169.254.1.1"], v4) == ["10.213.0.1"]
    assert local_addresses(["10.0.0.1", "fd00::1"], v4) == ["10.0.0.1"]
    assert local_addresses(["10.0.0.1", "fd00::1"], IPVersion.V6Only) == ["fd00::1"]
    assert local_addresses(["10.0.0.1", "fd00::1", "10.0.0.1"], IPVersion.All) == [
        "10.0.0.1",
        "fd00::1",
    ]
    assert local_addresses(None, v4)  # this host has at least a loopback address


def test_constructor_refuses_a_zero_bound() -> None:
    with pytest.raises(LocalProtocolError):
        Discovery(PK, coap_port=1, tcp_port=2, on_advert=print, on_gone=print, max_adverts=0)


def test_start_refuses_when_there_is_no_address_to_advertise() -> None:
    discovery = Discovery(
        PK,
        coap_port=1,
        tcp_port=2,
        on_advert=print,
        on_gone=print,
        interfaces=["127.0.0.1"],
        ip_version=IPVersion.V6Only,
    )
    with pytest.raises(LocalProtocolError, match="no V6Only address"):
        asyncio.run(discovery.start())
