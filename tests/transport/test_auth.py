from __future__ import annotations

import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ka.transport import auth, discovery
from ka.transport.channel import Channel, KeyMismatch, initiate, respond
from ka.transport.errors import ProtocolError
from ka.transport.frame import session_key
from ka.transport.messages import Done, Pos, Sons, SonTicket

KEY = session_key(b"right key")


def in_thread(fn: Callable[[], Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["value"] = fn()
        except Exception as e:  # noqa: BLE001 - handed back to the test
            out["error"] = e

    t = threading.Thread(target=run)
    t.start()
    out["thread"] = t
    return out


def handshake(key_i: bytes, key_r: bytes) -> tuple[Any, Any]:
    a, b = socket.socketpair()
    r = in_thread(lambda: respond(b, key_r, (auth.CONTROL,)))
    try:
        i: Any = initiate(a, key_i, auth.CONTROL)
    except Exception as e:  # noqa: BLE001
        i = e
        a.close()
    r["thread"].join(5)
    if "error" in r:
        b.close()
    return i, r.get("value", r.get("error"))


def test_mutual_handshake_then_messages_both_ways() -> None:
    i, r = handshake(KEY, KEY)
    assert isinstance(i, Channel)
    kind, rc = r
    assert kind == auth.CONTROL
    i.send(Pos(1, 0, False))
    assert rc.recv() == Pos(1, 0, False)
    rc.send(Sons((SonTicket("a", "t1"), SonTicket("b", "t2"))))
    assert i.recv() == Sons((SonTicket("a", "t1"), SonTicket("b", "t2")))


def test_wrong_key_is_refused_on_both_sides() -> None:
    i, r = handshake(session_key(b"wrong key"), KEY)
    assert isinstance(i, KeyMismatch)
    assert isinstance(r, ProtocolError)


def test_keyless_node_cannot_join_keyed_session() -> None:
    i, _ = handshake(session_key(None), KEY)
    assert isinstance(i, KeyMismatch)


def test_random_bytes_are_dropped() -> None:
    a, b = socket.socketpair()
    a.sendall(os.urandom(auth.HELLO_LEN))
    with pytest.raises(ProtocolError):
        respond(b, KEY, (auth.CONTROL,))
    a.close()
    b.close()


def test_half_open_connection_times_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("ka.transport.channel.HANDSHAKE_TIMEOUT", 0.2)
    a, b = socket.socketpair()
    with pytest.raises((ProtocolError, OSError)):
        respond(b, KEY, (auth.CONTROL,))
    a.close()
    b.close()


def test_recorded_answer_cannot_be_replayed() -> None:
    nonce_i, nonce_r1, nonce_r2 = (os.urandom(16) for _ in range(3))
    recorded = auth.answer(KEY, auth.CONTROL, nonce_i, nonce_r1)
    assert auth.check_answer(KEY, auth.CONTROL, nonce_i, nonce_r1, recorded)
    assert not auth.check_answer(KEY, auth.CONTROL, nonce_i, nonce_r2, recorded)
    assert not auth.check_answer(KEY, auth.DATA, nonce_i, nonce_r1, recorded)


def test_tampered_or_replayed_messages_are_rejected() -> None:
    i, (_, rc) = handshake(KEY, KEY)
    i.send(Pos(1, 0, False))
    first = rc.sock.recv(4096)
    # replay the same bytes: the sequence number has moved on
    a, b = socket.socketpair()
    replay = Channel(b, rc._key, initiator=False)  # same connection key, fresh reader
    a.sendall(first)
    assert isinstance(replay.recv(), Pos)
    a.sendall(first)
    with pytest.raises(ProtocolError):
        replay.recv()
    c, d = socket.socketpair()
    forged = bytearray(first)
    forged[10] ^= 1
    c.sendall(bytes(forged))
    with pytest.raises(ProtocolError):
        Channel(d, rc._key, initiator=False).recv()


def test_control_messages_are_unreadable_on_the_wire_and_cannot_be_reflected() -> None:
    """A capture of the control channel shows no plan, report or log; a message sent back to
    its sender (same key, other direction) fails."""
    i, (_, rc) = handshake(KEY, KEY)
    secret = "root:$6$secret-hash-from-the-golden-shadow"
    i.send(Done(True, 1, "d1g", 0, None, 1.0, secret))
    wire = rc.sock.recv(65536)
    assert secret.encode() not in wire and b"done" not in wire
    a, b = socket.socketpair()
    mirror = Channel(b, rc._key, initiator=True)  # reads what an initiator would be sent
    a.sendall(wire)
    with pytest.raises(ProtocolError):
        mirror.recv()
    c, d = socket.socketpair()
    c.sendall(wire)
    got = Channel(d, rc._key, initiator=False).recv()
    assert isinstance(got, Done) and got.attachment == secret


def test_discovery_reply_is_bound_to_key_nonce_and_session() -> None:
    nonce = os.urandom(16)
    req = discovery.encode_request(nonce, "lab-1")
    assert discovery.parse_request(req) == (nonce, "lab-1")
    assert discovery.parse_request(b"garbage") is None
    reply = discovery.encode_reply(KEY, nonce, 30765, "lab-1", "10.9.0.1")
    assert discovery.parse_reply(KEY, nonce, "lab-1", reply, "10.9.0.1") == 30765
    assert discovery.parse_reply(KEY, os.urandom(16), "lab-1", reply,
                                 "10.9.0.1") is None  # old answer
    assert discovery.parse_reply(KEY, nonce, "lab-2", reply, "10.9.0.1") is None  # another
    assert discovery.parse_reply(session_key(b"x"), nonce, "lab-1", reply, "10.9.0.1") is None
    # A genuine answer repeated from another host: the node would connect there. Refused.
    assert discovery.parse_reply(KEY, nonce, "lab-1", reply, "10.9.0.66") is None
    # Nor can the repeater rewrite the address: the MAC covers it.
    moved = reply[:6] + bytes([10, 9, 0, 66]) + reply[10:]
    assert discovery.parse_reply(KEY, nonce, "lab-1", moved, "10.9.0.66") is None


def test_a_node_pinning_the_golden_key_follows_only_its_signed_discovery_reply(
        tmp_path: Path) -> None:
    """A key holder answers discovery first (it has the key, so its MAC is right): a node
    that pins the golden identity ignores it; the golden node's signed reply is taken."""
    from ka.keys import read_golden_key, read_identity, write_identity

    key, pub = write_identity(str(tmp_path / "golden"))
    golden, public = read_identity(str(key)), read_golden_key(str(pub))
    nonce = os.urandom(16)
    forged = discovery.encode_reply(KEY, nonce, 4444, "lab-1", "10.9.0.66")  # key holder
    assert discovery.parse_reply(KEY, nonce, "lab-1", forged, "10.9.0.66") == 4444
    assert discovery.parse_reply(KEY, nonce, "lab-1", forged, "10.9.0.66", public) is None
    signed = discovery.encode_reply(KEY, nonce, 30765, "lab-1", "10.9.0.1", golden)
    assert discovery.parse_reply(KEY, nonce, "lab-1", signed, "10.9.0.1", public) == 30765
    other = discovery.encode_reply(KEY, os.urandom(16), 30765, "lab-1", "10.9.0.1", golden)
    assert discovery.parse_reply(KEY, nonce, "lab-1", other, "10.9.0.1", public) is None
