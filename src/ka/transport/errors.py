"""Errors of the transport layer, each with the exit status `ka receive` / `ka send` use."""

from __future__ import annotations

from ka.errors import KaError


class _ExitStatus(KaError):
    """Takes the exit status from the class line (`class X(_ExitStatus, status=10)`), so each
    error below is one declaration of what it means and how the command ends."""

    def __init_subclass__(cls, *, status: int | None = None, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if status is not None:
            cls.exit_code = status


class TransportError(_ExitStatus, status=1):
    """A sender-side failure: the producer failed, the port is taken, nobody joined."""


class SenderNotFound(_ExitStatus, status=10):
    """No sender answered for the session in time."""


class Rejected(_ExitStatus, status=11):
    """The sender refused us: wrong key, late joiner, duplicate."""


class DigestMismatch(_ExitStatus, status=12):
    """Our copy's length or digest differs from the sender's."""


class StreamCut(_ExitStatus, status=13):
    """The stream stopped: sender lost or silent, evicted, session aborted."""


class ConsumerFailed(_ExitStatus, status=14):
    """The consumer exited non-zero, stopped reading early, or a write failed."""


class ProtocolError(Exception):
    """A peer broke the protocol (bad magic, bad MAC, short read). Internal, never escapes."""
