"""Finding a sender by session name over UDP, on the same port number as its TCP control port.

Request: `KA?2 | nonce(16) | session`. Reply (unicast to the requester's address and port):
`KA!2 | tcp port(2) | address(4) | mac(16) | signature length(1) | signature | session`,
the MAC keyed with the session key over the nonce, the port and the address the reply is
sent from: with a key only the real sender can answer, an old answer cannot be replayed, and
a genuine answer repeated from another address is refused (the node connects where the reply
came from). A sender with the golden identity signs the reply (all of it, and the nonce): a
node pinning the golden's key follows no other reply, whoever holds the session key.
Each node uses its own ephemeral UDP port, so many nodes on one host can look at once.
"""

from __future__ import annotations

import hmac
import os
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Iterator

from ka.transport import auth, identity

REQUEST = b"KA?2"
REPLY = b"KA!2"
RETRY = 0.5  # the longest wait between two requests
FIRST_RETRY = 0.02  # then doubling up to RETRY: a sender already there answers at once
NONCES_KEPT = 8  # a late answer to one of our last requests is still taken
MAX_SESSION = 200


def encode_request(nonce: bytes, session: str) -> bytes:
    return REQUEST + nonce + session.encode()


def parse_request(data: bytes) -> tuple[bytes, str] | None:
    if not data.startswith(REQUEST) or len(data) > len(REQUEST) + auth.NONCE_LEN + MAX_SESSION:
        return None
    nonce = data[len(REQUEST) : len(REQUEST) + auth.NONCE_LEN]
    if len(nonce) != auth.NONCE_LEN:
        return None
    try:
        return nonce, data[len(REQUEST) + auth.NONCE_LEN :].decode()
    except UnicodeDecodeError:
        return None


def encode_reply(root: bytes, nonce: bytes, port: int, session: str, address: str,
                 signer: bytes | None = None) -> bytes:
    """With `signer` (the golden identity), the reply is signed too: a node that pins the
    golden's key follows no reply of anyone else, key holders included."""
    name = session.encode()
    where = socket.inet_aton(address)
    body = (REPLY + struct.pack("<H", port) + where
            + auth.discovery_mac(root, nonce, port, name, where))
    signature = identity.sign(signer, body + nonce + name) if signer is not None else b""
    return body + bytes([len(signature)]) + signature + name


def parse_reply(root: bytes, nonce: bytes, session: str, data: bytes,
                peer: str, golden_key: bytes | None = None) -> int | None:
    """The sender's TCP port if `data` is an authentic answer to our request, sent from the
    address it names (`peer`: where it came from), and signed by `golden_key` if given."""
    head = len(REPLY) + 2 + 4 + auth.MSG_MAC_LEN
    if not data.startswith(REPLY) or len(data) < head + 1:
        return None
    (port,) = struct.unpack_from("<H", data, len(REPLY))
    where = data[len(REPLY) + 2 : len(REPLY) + 6]
    mac = data[len(REPLY) + 6 : head]
    signature = data[head + 1 : head + 1 + data[head]]
    name = data[head + 1 + data[head]:]
    if name != session.encode():
        return None
    if not hmac.compare_digest(mac, auth.discovery_mac(root, nonce, port, name, where)):
        return None
    if golden_key is not None and not identity.verify(golden_key, data[:head] + nonce + name,
                                                      signature):
        return None
    try:
        if where != socket.inet_aton(peer):
            return None  # a genuine answer, repeated from another address
    except OSError:
        return None
    return port


def source_address(peer: tuple[str, int]) -> str:
    """The address this host sends from to reach `peer` (a routing lookup, nothing sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(peer)
        return str(probe.getsockname()[0])


class DiscoveryResponder:
    """Answers requests for our session name until closed."""

    def __init__(self, root: bytes, session: str, port: int, bind: str,
                 signer: bytes | None = None) -> None:
        self._signer = signer
        self._root = root
        self._session = session
        self._port = port
        self._closed = False
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((bind, port))
        self.sock.settimeout(RETRY)
        self._thread = threading.Thread(target=self._loop, name="discovery", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._closed:
            try:
                data, peer = self.sock.recvfrom(512)
            except TimeoutError:
                continue
            except OSError:
                return
            req = parse_request(data)
            if req is None or req[1] != self._session:
                continue  # another session's request, or noise
            try:
                bound = self.sock.getsockname()[0]
                here = bound if bound != "0.0.0.0" else source_address(peer)
                self.sock.sendto(encode_reply(self._root, req[0], self._port, self._session,
                                              here, self._signer), peer)
            except OSError:
                pass

    def close(self) -> None:
        # A thread blocked in recvfrom holds the socket (and its port) open after close()
        # until its timeout; an empty datagram to ourselves (over loopback when bound to
        # every address) wakes it at once, so the next session can bind the port.
        self._closed = True
        address, port = self.sock.getsockname()
        try:
            self.sock.sendto(b"", ("127.0.0.1" if address == "0.0.0.0" else address, port))
        except OSError:
            pass
        self._thread.join(timeout=2 * RETRY)
        self.sock.close()


def retry_intervals() -> Iterator[float]:
    """How long to wait for an answer after each request: 20 ms, doubling up to RETRY.

    A node is often started before its sender (the boot environment, a lab, the benchmark):
    a fixed interval lost up to RETRY seconds on the first try, a short first one loses
    nothing, and the doubling keeps N nodes that wait long from flooding the network."""
    wait = FIRST_RETRY
    while True:
        yield wait
        wait = min(RETRY, 2 * wait)


def find_sender(
    root: bytes, session: str, port: int, address: str, timeout: float,
    golden_key: bytes | None = None,
) -> tuple[str, int] | None:
    """(sender address, TCP port), or None after `timeout` seconds of silence."""
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        sock.bind(("", 0))
        nonces: deque[bytes] = deque(maxlen=NONCES_KEPT)
        for wait in retry_intervals():
            if time.monotonic() >= deadline:
                break
            nonces.append(os.urandom(auth.NONCE_LEN))
            try:
                sock.sendto(encode_request(nonces[-1], session), (address, port))
            except OSError:
                pass  # no route yet (interface still coming up): retry
            until = min(deadline, time.monotonic() + wait)
            while (left := until - time.monotonic()) > 0:
                sock.settimeout(left)
                try:
                    data, peer = sock.recvfrom(512)
                except TimeoutError:
                    break
                except OSError:  # e.g. ICMP port unreachable: nobody there yet
                    time.sleep(max(0.0, until - time.monotonic()))
                    break
                for nonce in reversed(nonces):
                    tcp_port = parse_reply(root, nonce, session, data, peer[0], golden_key)
                    if tcp_port is not None:
                        return peer[0], tcp_port
    return None
