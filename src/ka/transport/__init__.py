"""ka.transport: one producer's stream to N consumers through a self-healing TCP chain or tree.

`send(source, SendOptions(...))` runs the root of a session; `receive(sink, ReceiveOptions(...))`
runs one node. The stream travels as frames with a keyed BLAKE3 MAC each, checked on every
node before use; every node reports its byte count, whole-stream digest and consumer status.

Memory: every node (and the sender) retains up to `ring_size` bytes of the stream (default
32 MiB) plus one chunk and its socket buffers. The sender never lets production run more than
`ring_size` ahead of the slowest live node, so any ancestor still holds what a re-attaching
descendant needs: healing can never fail for lack of data.

`send` and `receive` are imported when first used: a node that imports `receive` does not
pay for the sender's modules (start-up is on the critical path of every session).
"""

from typing import TYPE_CHECKING, Any

from ka.transport.endpoints import (
    BytesSink,
    BytesSource,
    CommandSink,
    CommandSource,
    CompressedSource,
    FileSink,
    FileSource,
    Sink,
    Source,
)
from ka.transport.errors import (
    ConsumerFailed,
    DigestMismatch,
    Rejected,
    SenderNotFound,
    StreamCut,
    TransportError,
)
from ka.transport.options import (
    Event,
    NodeReport,
    ReceiveOptions,
    ReceiveReport,
    SendOptions,
    SessionReport,
)

if TYPE_CHECKING:
    from ka.transport.receiver import receive
    from ka.transport.sender import send


def __getattr__(name: str) -> Any:
    if name == "receive":
        from ka.transport.receiver import receive

        return receive
    if name == "send":
        from ka.transport.sender import send

        return send
    raise AttributeError(f"module 'ka.transport' has no attribute {name!r}")


__all__ = [
    "BytesSink",
    "BytesSource",
    "CommandSink",
    "CommandSource",
    "CompressedSource",
    "ConsumerFailed",
    "DigestMismatch",
    "Event",
    "FileSink",
    "FileSource",
    "NodeReport",
    "ReceiveOptions",
    "ReceiveReport",
    "Rejected",
    "SendOptions",
    "SenderNotFound",
    "SessionReport",
    "Sink",
    "Source",
    "StreamCut",
    "TransportError",
    "receive",
    "send",
]
