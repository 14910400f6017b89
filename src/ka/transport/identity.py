"""The golden node's identity: an Ed25519 key pair whose private half never leaves it.

The shared session key decides who may join and what is encrypted; anyone who holds it (a
node of the chain, or whoever read it from a TFTP-served boot environment) could otherwise
pose as the golden node or feed its sons frames they accept. So the sender signs the end of
every stream: the byte and frame totals, the whole-stream digest and the session id. A node
that pins the golden's public key (`--golden-key`) refuses a stream whose end is not signed
by it, and since a node acts on a stream only once its end checked (the plan is parsed, the
fix-ups run, success is reported only after every stream's digest matched), nothing that a
key holder injected is ever acted upon: at worst it was written to a disk whose install then
fails. One signature per stream: its cost does not grow with the stream.
"""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

SIGNATURE_LEN = 64
KEY_LEN = 32
_CONTEXT = b"ka end of stream 2026\0"


def public_key(private: bytes) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return Ed25519PrivateKey.from_private_bytes(private).public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def sign(private: bytes, message: bytes) -> bytes:
    return Ed25519PrivateKey.from_private_bytes(private).sign(_CONTEXT + message)


def verify(public: bytes, message: bytes, signature: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(signature, _CONTEXT + message)
    except (InvalidSignature, ValueError):
        return False
    return True
