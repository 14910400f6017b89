"""Errors of the transport layer, each with the exit status `ka receive` / `ka send` use."""

from __future__ import annotations

from ka.errors import KaError


class TransportError(KaError):
    """A sender-side failure: the producer failed, the port is taken, nobody joined."""

    exit_code = 1


class SenderNotFound(KaError):
    exit_code = 10


class Rejected(KaError):
    exit_code = 11


class DigestMismatch(KaError):
    exit_code = 12


class StreamCut(KaError):
    exit_code = 13


class ConsumerFailed(KaError):
    exit_code = 14


class ProtocolError(Exception):
    """A peer broke the protocol (bad magic, bad MAC, short read). Internal, never escapes."""
