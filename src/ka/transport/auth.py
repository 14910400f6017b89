"""Mutual challenge-response and message authentication (pure: no sockets here).

Both ends of every connection prove they hold the session key over fresh nonces from both
sides, so a recorded exchange is worthless (no replay). The connection key derived from both
nonces then authenticates every control message together with its sequence number, so
messages can be neither forged, replayed nor reordered.
"""

from __future__ import annotations

import hmac
import struct

import blake3
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

MAGIC = b"KA/1"
NONCE_LEN = 16
PROOF_LEN = 32
MSG_MAC_LEN = 16
CONTROL = b"C"
DATA = b"D"
HELLO_LEN = len(MAGIC) + 1 + NONCE_LEN  # magic, kind, initiator nonce
CHALLENGE_LEN = len(MAGIC) + NONCE_LEN + PROOF_LEN  # magic, responder nonce, responder proof


def proof(root: bytes, role: bytes, kind: bytes, nonce_i: bytes, nonce_r: bytes) -> bytes:
    material = b"proof|" + role + b"|" + kind + b"|" + nonce_i + nonce_r
    return blake3.blake3(material, key=root).digest()


def connection_key(root: bytes, kind: bytes, nonce_i: bytes, nonce_r: bytes) -> bytes:
    return blake3.blake3(b"conn|" + kind + b"|" + nonce_i + nonce_r, key=root).digest()


def hello(kind: bytes, nonce_i: bytes) -> bytes:
    return MAGIC + kind + nonce_i


def parse_hello(data: bytes) -> tuple[bytes, bytes] | None:
    """(kind, initiator nonce) or None for anything that is not a ka hello."""
    if len(data) != HELLO_LEN or not data.startswith(MAGIC):
        return None
    kind = data[len(MAGIC) : len(MAGIC) + 1]
    if kind not in (CONTROL, DATA):
        return None
    return kind, data[len(MAGIC) + 1 :]


def challenge(root: bytes, kind: bytes, nonce_i: bytes, nonce_r: bytes) -> bytes:
    return MAGIC + nonce_r + proof(root, b"responder", kind, nonce_i, nonce_r)


def check_challenge(root: bytes, kind: bytes, nonce_i: bytes, data: bytes) -> bytes | None:
    """The responder nonce if the responder proved the key, else None."""
    if len(data) != CHALLENGE_LEN or not data.startswith(MAGIC):
        return None
    nonce_r = data[len(MAGIC) : len(MAGIC) + NONCE_LEN]
    got = data[len(MAGIC) + NONCE_LEN :]
    if not hmac.compare_digest(got, proof(root, b"responder", kind, nonce_i, nonce_r)):
        return None
    return nonce_r


def answer(root: bytes, kind: bytes, nonce_i: bytes, nonce_r: bytes) -> bytes:
    return proof(root, b"initiator", kind, nonce_i, nonce_r)


def check_answer(root: bytes, kind: bytes, nonce_i: bytes, nonce_r: bytes, data: bytes) -> bool:
    return hmac.compare_digest(data, answer(root, kind, nonce_i, nonce_r))


_SEQ = struct.Struct("<cQ")


def message_cipher(conn_key: bytes) -> ChaCha20Poly1305:
    """The AEAD of a connection's control messages: ChaCha20-Poly1305 under the connection
    key (fresh per connection: both nonces of its handshake go into it)."""
    return ChaCha20Poly1305(conn_key)


def message_nonce(direction: bytes, seq: int) -> bytes:
    """Direction and sequence number: unique per message and per key, so no nonce is ever
    used twice, and a message replayed, reordered or reflected fails its tag."""
    return _SEQ.pack(direction, seq) + bytes(3)


def discovery_mac(root: bytes, nonce: bytes, port: int, session: bytes,
                  address: bytes = bytes(4)) -> bytes:
    h = blake3.blake3(b"discovery|" + nonce + struct.pack("<H", port) + address, key=root)
    h.update(session)
    return h.digest(length=MSG_MAC_LEN)
