"""WholeReader: a buffer is filled exactly, whatever the pieces it arrives in, and a reader
waiting for more never outlives EOF or a shutdown (healing relies on both). TCP on 127.0.0.1,
since SO_RCVLOWAT is a TCP receive-path setting."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from ka.transport.channel import LOWAT_MAX, WholeReader
from ka.transport.errors import ProtocolError

LIVENESS = 10.0  # a reader still blocked after this long is hung (bound only, not a speed test)


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    writer = socket.create_connection(listener.getsockname(), timeout=5.0)
    reader, _ = listener.accept()
    listener.close()
    try:
        yield reader, writer
    finally:
        writer.close()
        reader.close()


def _fill_in_thread(reader: WholeReader, views: list[memoryview]) -> tuple[threading.Thread,
                                                                         list[BaseException]]:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            for view in views:
                reader.fill(view)
        except BaseException as e:  # noqa: BLE001 - handed to the test
            errors.append(e)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, errors


def test_fills_frames_sent_in_pieces_and_a_short_last_one(pair: tuple[socket.socket,
                                                                       socket.socket]) -> None:
    rx, tx = pair
    # Two buffers larger than the low-water cap, then a 36-byte one: the mark must follow
    # what is still missing, or the last buffer would wait for bytes that never come.
    sizes = [LOWAT_MAX + 12345, 2 * LOWAT_MAX + 1, 36]
    data = os.urandom(sum(sizes))
    bufs = [bytearray(n) for n in sizes]
    thread, errors = _fill_in_thread(WholeReader(rx), [memoryview(b) for b in bufs])
    pos = 0
    for piece in (1000, 70000, 5, LOWAT_MAX, 300000):  # uneven pieces, some pauses between
        tx.sendall(data[pos : pos + piece])
        pos += piece
        time.sleep(0.01)
    tx.sendall(data[pos:])
    thread.join(LIVENESS)
    assert not thread.is_alive(), "reader hung although every byte was sent"
    assert errors == []
    assert b"".join(bufs) == data


def test_fill_that_starts_with_part_of_its_bytes_already_queued(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    """The usual case between frames: some of the next frame came with the previous one, the
    rest comes later. The fill must wait for exactly the rest, no more."""
    rx, tx = pair
    data = os.urandom(100000)
    tx.sendall(data[:60000])
    time.sleep(0.1)  # queued at the reader before it starts
    buf = bytearray(len(data))
    thread, errors = _fill_in_thread(WholeReader(rx), [memoryview(buf)])
    time.sleep(0.1)
    tx.sendall(data[60000:])
    thread.join(LIVENESS)
    assert not thread.is_alive(), "reader hung waiting for bytes beyond its buffer"
    assert errors == []
    assert buf == data


def test_eof_before_the_buffer_is_full_raises(pair: tuple[socket.socket, socket.socket]) -> None:
    rx, tx = pair
    buf = bytearray(100000)
    thread, errors = _fill_in_thread(WholeReader(rx), [memoryview(buf)])
    tx.sendall(b"x" * 4000)
    tx.shutdown(socket.SHUT_WR)
    thread.join(LIVENESS)
    assert not thread.is_alive(), "reader hung after the peer's EOF"
    assert len(errors) == 1 and isinstance(errors[0], ProtocolError)
    assert bytes(buf[:4000]) == b"x" * 4000


def test_local_shutdown_wakes_a_waiting_reader(pair: tuple[socket.socket, socket.socket]) -> None:
    """What a retarget does to the upstream socket of a node whose parent went silent."""
    rx, tx = pair
    buf = bytearray(50000)
    thread, errors = _fill_in_thread(WholeReader(rx), [memoryview(buf)])
    tx.sendall(b"y" * 100)
    time.sleep(0.1)  # let the reader block in its wait
    assert thread.is_alive()
    rx.shutdown(socket.SHUT_RDWR)
    thread.join(LIVENESS)
    assert not thread.is_alive(), "shutdown did not wake the reader"
    assert len(errors) == 1 and isinstance(errors[0], (ProtocolError, OSError))
