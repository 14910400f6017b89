"""Authenticated connections: the handshake on a socket, then length-prefixed JSON messages.

Every message is `length(4) | sealed JSON | tag(16)`: the JSON encrypted with
ChaCha20-Poly1305 under the connection key, the nonce its direction and sequence number, the
length prefix authenticated with it (see ka.transport.auth). Plans, reports, console logs and
exec output are thus unreadable to whoever lacks the key. Anything that does not follow the
protocol raises ProtocolError, which callers turn into "drop this connection".
"""

from __future__ import annotations

import os
import select
import socket
import struct
import threading
import time

from cryptography.exceptions import InvalidTag

from ka.transport import auth
from ka.transport.codec import Catalogue, Message, encode
from ka.transport.errors import ProtocolError
from ka.transport.messages import CONTROL

HANDSHAKE_TIMEOUT = 3.0
MAX_MESSAGE = 4 * 1024 * 1024
LOWAT_MAX = 1024 * 1024  # well under half of any data socket's receive buffer (tune())
_LEN = struct.Struct("<I")


def shut(sock: socket.socket) -> None:
    """Shut both directions, which wakes a thread blocked on the socket (recv, accept);
    a socket that is not connected (or already reset) has nothing left to shut."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


class KeyMismatch(ProtocolError):
    """The peer answered the handshake but does not hold our session key."""


def recv_exact(sock: socket.socket, n: int, deadline: float | None = None) -> bytes:
    """Exactly `n` bytes; with `deadline` (time.monotonic()) all of them by then, however
    slowly they trickle in (a timeout per recv would let a byte every few seconds hold the
    connection for ever)."""
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ProtocolError("the peer took too long")
            sock.settimeout(left)
        try:
            k = sock.recv_into(view[got:])
        except TimeoutError:
            if deadline is not None and time.monotonic() >= deadline:
                raise ProtocolError("the peer took too long") from None
            raise
        if k == 0:
            raise ProtocolError("connection closed by peer")
        got += k
    return bytes(buf)


class WholeReader:
    """Fills buffers from a data socket with one wake-up per buffer, not one per packet.

    On a paced link (a shaped or busy network) segments arrive a few KiB at a time; a plain
    recv returns each of them, and every return is a context switch plus a round through the
    interpreter and its lock. With SO_RCVLOWAT = what is still missing, poll(2) does not
    return before that much has arrived (it does at once on EOF, reset or shutdown, and the
    kernel acknowledges in time by itself, so the sender is never held up); the recv after it
    then takes it all in one copy. poll first, not a recv that sleeps: a recv that already
    copied part and then sleeps is woken only by a whole mark of *new* bytes (on a shaped link
    that stalled nodes at the end of the stream). The mark never exceeds what is missing, or a
    short last frame would wait for bytes that never come.
    """

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._lowat = 1
        self._poll: select.poll | None = None
        if hasattr(socket, "SO_RCVLOWAT") and hasattr(select, "poll"):
            self._poll = select.poll()
            self._poll.register(sock, select.POLLIN)

    def fill(self, view: memoryview) -> None:
        got, n = 0, len(view)
        sock = self._sock
        while got < n:
            if self._poll is not None:
                self._await(min(n - got, LOWAT_MAX))
            k = sock.recv_into(view[got:])
            if k == 0:
                raise ProtocolError("connection closed by peer")
            got += k

    def _await(self, want: int) -> None:
        if want != self._lowat:
            try:
                self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, want)
                self._lowat = want
            except OSError:
                self._poll = None  # not supported here: plain reads, just more of them
                return
        assert self._poll is not None
        self._poll.poll()


class Channel:
    """One authenticated, ordered message stream over a connected socket (thread-safe send),
    carrying the messages of one catalogue (the control plane's unless told otherwise)."""

    def __init__(self, sock: socket.socket, conn_key: bytes, initiator: bool,
                 catalogue: Catalogue = CONTROL) -> None:
        self.sock = sock
        self._catalogue = catalogue
        self._key = conn_key
        self._aead = auth.message_cipher(conn_key)
        self._out_dir, self._in_dir = (b">", b"<") if initiator else (b"<", b">")
        self._out_seq = 0
        self._in_seq = 0
        self._lock = threading.Lock()
        self.closed = False

    def send(self, msg: Message) -> None:
        self._send_payload(encode(msg))

    def recv(self, deadline: float | None = None) -> Message:
        """Next message, validated by the channel's catalogue (ka.transport.codec); raises
        ProtocolError on EOF, forgery or garbage (MessageError for a message that is not one
        of ours) or when it is not all in by `deadline`, OSError/timeout as is."""
        return self._catalogue.decode(self._recv_payload(deadline))

    def _send_payload(self, payload: bytes) -> None:
        head = _LEN.pack(len(payload))
        with self._lock:
            sealed = self._aead.encrypt(auth.message_nonce(self._out_dir, self._out_seq),
                                        payload, head)
            self._out_seq += 1
            self.sock.sendall(head + sealed)

    def _recv_payload(self, deadline: float | None) -> bytes:
        head = recv_exact(self.sock, _LEN.size, deadline)
        (length,) = _LEN.unpack(head)
        if length > MAX_MESSAGE:
            raise ProtocolError(f"control message of {length} bytes")
        body = recv_exact(self.sock, length + auth.MSG_MAC_LEN, deadline)
        try:
            payload = self._aead.decrypt(auth.message_nonce(self._in_dir, self._in_seq), body,
                                         head)
        except InvalidTag:
            raise ProtocolError("control message failed authentication") from None
        self._in_seq += 1
        return payload

    def close(self) -> None:
        self.closed = True
        shut(self.sock)
        self.sock.close()


def initiate(sock: socket.socket, root: bytes, kind: bytes,
             catalogue: Catalogue = CONTROL) -> Channel:
    """Client side of the handshake, all of it within HANDSHAKE_TIMEOUT. Raises KeyMismatch
    or ProtocolError."""
    deadline = time.monotonic() + HANDSHAKE_TIMEOUT
    nonce_i = os.urandom(auth.NONCE_LEN)
    sock.settimeout(HANDSHAKE_TIMEOUT)
    sock.sendall(auth.hello(kind, nonce_i))
    nonce_r = auth.check_challenge(root, kind, nonce_i,
                                   recv_exact(sock, auth.CHALLENGE_LEN, deadline))
    if nonce_r is None:
        raise KeyMismatch("the peer does not hold the same session key")
    sock.sendall(auth.answer(root, kind, nonce_i, nonce_r))
    sock.settimeout(None)
    return Channel(sock, auth.connection_key(root, kind, nonce_i, nonce_r), initiator=True,
                   catalogue=catalogue)


def respond(sock: socket.socket, root: bytes, kinds: tuple[bytes, ...],
            deadline: float | None = None, catalogue: Catalogue = CONTROL
            ) -> tuple[bytes, Channel]:
    """Server side: all of it within HANDSHAKE_TIMEOUT (or by `deadline`, when the caller
    bounds more than the handshake), or ProtocolError (stray, slow or keyless peer)."""
    deadline = deadline or time.monotonic() + HANDSHAKE_TIMEOUT
    sock.settimeout(HANDSHAKE_TIMEOUT)
    parsed = auth.parse_hello(recv_exact(sock, auth.HELLO_LEN, deadline))
    if parsed is None or parsed[0] not in kinds:
        raise ProtocolError("not a ka connection")
    kind, nonce_i = parsed
    nonce_r = os.urandom(auth.NONCE_LEN)
    sock.sendall(auth.challenge(root, kind, nonce_i, nonce_r))
    if not auth.check_answer(root, kind, nonce_i, nonce_r,
                             recv_exact(sock, auth.PROOF_LEN, deadline)):
        raise KeyMismatch("the peer does not hold the session key")
    sock.settimeout(None)
    return kind, Channel(sock, auth.connection_key(root, kind, nonce_i, nonce_r),
                         initiator=False, catalogue=catalogue)
