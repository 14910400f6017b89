"""A relay's feeds, attacked by a key holder that attaches in another node's name (127.0.0.1)."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar

import pytest

from ka.transport import auth
from ka.transport.channel import Channel, initiate
from ka.transport.errors import ProtocolError
from ka.transport.frame import DATA, PREFIX, chunk_key, encode_frame, session_key, verify_frame
from ka.transport.messages import Attach, Message, No, Ok
from ka.transport.relay import Relay, SharedRing, listen

ROOT = session_key(os.urandom(32))
CHUNK = chunk_key(ROOT, bytes(16))
VICTIM, TICKET = "10.0.0.7:4000", "a1" * 16
Fixture = tuple[Relay, SharedRing, list[tuple[str, str]]]


@pytest.fixture
def relay() -> Iterator[Fixture]:
    notes: list[tuple[str, str]] = []
    ring = SharedRing(8 * 1024 * 1024)
    r = Relay(ring, ROOT, listen("127.0.0.1"), lambda kind, text: notes.append((kind, text)))
    r.allow({VICTIM: TICKET})
    try:
        yield r, ring, notes
    finally:
        r.close()
        ring.close()


@dataclass(frozen=True)
class AttachWithoutTicket(Message):
    """An attach as an old or forged son would send it: no ticket field at all."""

    kind: ClassVar[str] = "attach"
    id: str
    offset: int


def attach(relay: Relay, son: str, ticket: str | None) -> tuple[Channel, Message | None]:
    """The reply to an attach, None when the parent dropped the connection without one."""
    sock = socket.create_connection(("127.0.0.1", relay.port), timeout=5)
    chan = initiate(sock, ROOT, auth.DATA)  # the attacker holds the key: this passes
    if ticket is None:
        chan.send(AttachWithoutTicket(son, 0))  # not even a ticket field
    else:
        chan.send(Attach(son, 0, ticket))
    sock.settimeout(10)
    try:
        return chan, chan.recv()
    except ProtocolError:
        return chan, None


def read_frame(chan: Channel, offset: int) -> int:
    prefix = _exact(chan.sock, PREFIX)
    length = int.from_bytes(prefix[4:8], "little")
    frame = prefix + _exact(chan.sock, length)
    verify_frame(CHUNK, frame, offset)
    return offset + len(frame)


def _exact(sock: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        got = sock.recv(n - len(out))
        if not got:
            raise ProtocolError("closed")
        out += got
    return out


def put(ring: SharedRing, offset: int, payload: bytes) -> None:
    ring.put(encode_frame(CHUNK, DATA, payload, offset=offset))


def test_an_attach_without_the_ticket_is_refused_and_the_feed_goes_on(relay: Fixture) -> None:
    r, ring, notes = relay
    victim, reply = attach(r, VICTIM, TICKET)
    assert isinstance(reply, Ok)
    put(ring, 0, b"first")
    offset = read_frame(victim, 0)
    intruder, reply = attach(r, VICTIM, None)
    assert reply is None  # not even an attach: dropped unanswered
    intruder.close()
    for forged in ("", "00" * 16):
        intruder, reply = attach(r, VICTIM, forged)
        assert isinstance(reply, No) and "ticket" in reply.reason
        intruder.close()
    put(ring, offset, b"second")
    assert read_frame(victim, offset) > offset  # the victim still has its upstream
    assert r.feeding() == [VICTIM]
    assert any("without its ticket" in text for _, text in notes)
    assert any(kind == "stray" and "ticket" in text for kind, text in notes)
    victim.close()


def test_a_second_attach_is_refused_while_the_first_is_alive(relay: Fixture) -> None:
    # Whoever saw the ticket (a parent, a sniffer) still cannot take a live feed over.
    r, ring, _ = relay
    victim, reply = attach(r, VICTIM, TICKET)
    assert isinstance(reply, Ok)
    for _ in range(3):
        second, reply = attach(r, VICTIM, TICKET)
        assert isinstance(reply, No) and "fed already" in reply.reason
        second.close()
    put(ring, 0, b"still mine")
    assert read_frame(victim, 0) > 0
    victim.close()


def test_the_rightful_son_reattaches_once_its_old_link_is_gone(relay: Fixture) -> None:
    r, ring, _ = relay
    first, reply = attach(r, VICTIM, TICKET)
    assert isinstance(reply, Ok)
    first.close()  # its link broke: the relay's socket now reads EOF
    again, reply = attach(r, VICTIM, TICKET)
    assert isinstance(reply, Ok)
    put(ring, 0, b"resumed")
    assert read_frame(again, 0) > 0
    again.close()


def test_an_unassigned_id_is_refused(relay: Fixture, monkeypatch: pytest.MonkeyPatch) -> None:
    r, _, _ = relay
    monkeypatch.setattr("ka.transport.relay.ASSIGNMENT_WAIT", 0.2)
    chan, reply = attach(r, "10.0.0.9:4000", TICKET)
    assert isinstance(reply, No) and "not assigned" in reply.reason
    chan.close()
