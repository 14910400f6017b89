"""The library API in one process: send() and receive() in threads on 127.0.0.1."""

from __future__ import annotations

import contextlib
import os
import threading
from typing import Any

import blake3
import pytest
import zstandard
from transport_cluster import free_port

from ka.errors import ToolMissingError, UsageError
from ka.transport import (
    BytesSink,
    BytesSource,
    CommandSink,
    CommandSource,
    CompressedSource,
    ConsumerFailed,
    DigestMismatch,
    Event,
    FileSink,
    FileSource,
    ReceiveOptions,
    Rejected,
    SenderNotFound,
    SendOptions,
    TransportError,
    receive,
    send,
)

KEY = os.urandom(32)
OTHER_KEY = os.urandom(32)


def run_session(source: Any, sinks: list[Any], send_opts: dict[str, Any],
                recv_opts: list[dict[str, Any]], first_alone: int = 0) -> tuple[Any, list[Any]]:
    """Run a sender and its nodes in threads; nodes start once the sender listens, the
    first `first_alone` of them one after the other, to completion, before the rest."""
    port = free_port()
    results: list[Any] = [None] * len(sinks)
    listening = threading.Event()
    outcome: dict[str, Any] = {}

    def on_event(ev: Event) -> None:
        if ev.kind == "listening":
            listening.set()

    def sender() -> None:
        try:
            outcome["report"] = send(source, SendOptions(port=port, bind="127.0.0.1",
                                                         **send_opts), on_event)
        except Exception as e:  # noqa: BLE001 - handed back to the test
            outcome["error"] = e
        finally:
            listening.set()

    def node(i: int) -> None:
        try:
            results[i] = receive(sinks[i], ReceiveOptions(host="127.0.0.1", port=port,
                                                          find_timeout=10, **recv_opts[i]))
        except Exception as e:  # noqa: BLE001
            results[i] = e

    main = threading.Thread(target=sender)
    main.start()
    assert listening.wait(10)
    threads = [threading.Thread(target=node, args=(i,)) for i in range(len(sinks))]
    for i, t in enumerate(threads):
        t.start()
        if i < first_alone:
            t.join(30)
    for t in (main, *threads):
        t.join(30)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["report"], results


def test_bytes_to_bytes_with_attachments_and_names() -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    sinks = [BytesSink() for _ in range(3)]
    report, results = run_session(
        BytesSource(data), sinks, {"nodes": 3, "key": KEY},
        [{"key": KEY, "name": f"n{i}", "attachment": f"install report {i}".encode()}
         for i in range(3)],
    )
    assert report.ok
    assert report.digest == results[0].digest
    assert report.bytes == len(data)
    for sink, res in zip(sinks, results, strict=True):
        assert sink.data == data
        assert res.bytes == len(data) and res.consumer_status == 0
    by_name = {n.name: n for n in report.nodes}
    assert by_name["n1"].attachment == b"install report 1"
    assert sorted(n.position for n in report.nodes) == [1, 2, 3]
    assert sorted(r.position for r in results) == [1, 2, 3]


def test_command_source_and_file_sink(tmp_path: Any) -> None:
    out = [tmp_path / f"out{i}" for i in range(2)]
    report, results = run_session(
        CommandSource("seq 1 200000"), [FileSink(p) for p in out], {"nodes": 2},
        [{}, {}],
    )
    assert report.ok
    expected = "".join(f"{i}\n" for i in range(1, 200001)).encode()
    for p in out:
        assert p.read_bytes() == expected
    assert report.digest == results[1].digest


def test_small_chunks_reach_every_node(monkeypatch: pytest.MonkeyPatch) -> None:
    from ka.transport import producer, sender
    sizes: list[int] = []

    class Recording(producer.Producer):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            sizes.append(args[3])  # source, ring, chunk key, chunk size
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(sender, "Producer", Recording)
    data = os.urandom(1024 * 1024 + 5)
    sinks = [BytesSink(), BytesSink()]
    report, _ = run_session(BytesSource(data), sinks,
                            {"nodes": 2, "key": KEY, "chunk_size": 16 * 1024},
                            [{"key": KEY}, {"key": KEY}])
    assert sizes == [16 * 1024]
    assert report.ok and all(s.data == data for s in sinks)


@pytest.mark.parametrize(("chunk", "ring", "wrong"), [
    (1024, 64 * 1024 * 1024, "--chunk-size"),
    (8 * 1024 * 1024, 64 * 1024 * 1024, "--chunk-size"),
    (1024 * 1024, 2 * 1024 * 1024, "--ring-size"),
])
def test_chunk_size_and_ring_size_are_checked_together(chunk: int, ring: int,
                                                       wrong: str) -> None:
    from ka.transport.sender import validate
    with pytest.raises(UsageError, match=wrong):
        validate(SendOptions(nodes=1, chunk_size=chunk, ring_size=ring))


def test_empty_stream() -> None:
    sinks = [BytesSink(), BytesSink()]
    report, results = run_session(BytesSource(b""), sinks, {"nodes": 2}, [{}, {}])
    assert report.ok and report.bytes == 0
    assert all(s.data == b"" for s in sinks)


def test_failing_producer_raises_and_nodes_are_cut() -> None:
    with pytest.raises(TransportError, match="status 5"):
        run_session(CommandSource("head -c 100000 /dev/zero; exit 5"),
                    [CommandSink("sha256sum >/dev/null"), BytesSink()], {"nodes": 2}, [{}, {}])


def test_consumer_failure_is_reported_to_both_ends() -> None:
    report, results = run_session(
        BytesSource(os.urandom(2 * 1024 * 1024)),
        [CommandSink("cat >/dev/null; exit 3"), BytesSink()], {"nodes": 2}, [{}, {}],
    )
    assert not report.ok
    failed = [n for n in report.nodes if n.state == "failed"]
    assert len(failed) == 1 and failed[0].consumer_status == 3
    assert any(isinstance(r, ConsumerFailed) for r in results)
    assert sum(1 for r in results if not isinstance(r, Exception)) == 1


def test_no_sender() -> None:
    with pytest.raises(SenderNotFound):
        receive(BytesSink(), ReceiveOptions(host="127.0.0.1", port=free_port(), find_timeout=1))


def test_wrong_key_is_rejected_by_the_library() -> None:
    sinks = [BytesSink(), BytesSink()]
    _, results = run_session(BytesSource(b"x" * 1000), sinks, {"nodes": 1, "key": KEY},
                             [{"key": OTHER_KEY}, {"key": KEY}], first_alone=1)
    assert isinstance(results[0], Rejected)
    assert sinks[0].data == b"" and sinks[1].data == b"x" * 1000


def test_digest_is_blake3_of_the_stream() -> None:
    import blake3

    data = b"known content\n" * 1000
    report, _ = run_session(BytesSource(data), [BytesSink()], {"nodes": 1, "compress": "zstd:5"},
                            [{}])
    assert report.digest == blake3.blake3(data).hexdigest()


def test_file_sink_on_a_character_device() -> None:
    report, results = run_session(BytesSource(b"z" * 5000), [FileSink("/dev/null")],
                                  {"nodes": 1}, [{}])
    assert report.ok and results[0].bytes == 5000


class _UnstartableSink(BytesSink):
    """A consumer whose program is missing: open raises the project's error, not OSError."""

    def open(self) -> None:
        raise ToolMissingError("no-such-consumer")


class _CrashingSink(BytesSink):
    """A consumer that fails in an unforeseen way half-way through."""

    def write(self, data: memoryview) -> None:
        if len(self.data) >= 512 * 1024:
            raise RuntimeError("unforeseen failure in the consumer")
        super().write(data)


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
@pytest.mark.parametrize("sink_type", [_UnstartableSink, _CrashingSink])
def test_a_consumer_that_never_finished_is_not_reported_as_a_success(sink_type: type) -> None:
    data = os.urandom(2 * 1024 * 1024)
    report, results = run_session(BytesSource(data), [sink_type(), BytesSink()], {"nodes": 2},
                                  [{}, {}])
    assert not report.ok
    assert isinstance(results[0], ConsumerFailed)
    assert not isinstance(results[1], Exception) and results[1].bytes == len(data)
    failed = [n for n in report.nodes if n.state == "failed"]
    assert len(failed) == 1
    if sink_type is _UnstartableSink:  # no consumer ever ran: no exit status, not a made-up 0
        assert failed[0].consumer_status is None


def test_sealed_and_compressed_stream_arrives_intact() -> None:
    # Many chunks, so every node decrypts several of them through its one reused buffer.
    data = b"".join(b"record %d, sealed then compressed\n" % i for i in range(100000))
    data += os.urandom(600 * 1024)  # chunks that do not compress travel sealed only
    sinks = [BytesSink() for _ in range(2)]
    report, results = run_session(BytesSource(data), sinks,
                                  {"nodes": 2, "key": KEY, "compress": "zstd"},
                                  [{"key": KEY}, {"key": KEY}])
    assert report.ok and report.bytes == len(data)
    assert [s.data == data for s in sinks] == [True, True]
    assert all(r.digest == report.digest for r in results)


def test_a_fifo_input_delivers_what_its_writer_puts_in(tmp_path: Any) -> None:
    # The check before the session must not open the FIFO: that would take the writer's
    # only open, and the real open would wait for a writer that never comes again.
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    data = os.urandom(3 * 1024 * 1024 + 5)  # more than a pipe holds
    wrote: list[BaseException | None] = []

    def writer() -> None:
        try:
            with open(fifo, "wb") as f:
                f.write(data)
            wrote.append(None)
        except OSError as e:
            wrote.append(e)

    def unblock() -> None:  # bounds the test should the sender wait for a writer for ever
        with contextlib.suppress(OSError):
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))

    threading.Thread(target=writer, daemon=True).start()
    watchdog = threading.Timer(15, unblock)
    watchdog.start()
    try:
        sinks = [BytesSink(), BytesSink()]
        report, results = run_session(FileSource(fifo), sinks, {"nodes": 2}, [{}, {}])
    finally:
        watchdog.cancel()
    assert wrote == [None]
    assert report.ok and report.bytes == len(data)
    assert all(s.data == data for s in sinks)


def test_file_source_check_refuses_what_cannot_be_read_without_opening(tmp_path: Any) -> None:
    with pytest.raises(TransportError, match="No such file"):
        FileSource(tmp_path / "missing").check()
    with pytest.raises(TransportError, match="is a directory"):
        FileSource(tmp_path).check()
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    checked = threading.Thread(target=FileSource(fifo).check, daemon=True)
    checked.start()
    checked.join(5)
    assert not checked.is_alive(), "the check opened a FIFO that has no writer"


class _Chunks(CompressedSource):
    """Chunks compressed ahead of time, as an image's stream file gives them."""

    def __init__(self, raw: list[bytes], digest: bytes | None = None) -> None:
        cctx = zstandard.ZstdCompressor(level=3)
        self._frames = [(cctx.compress(c), len(c)) for c in raw]
        self.digest = digest if digest is not None else blake3.blake3(b"".join(raw)).digest()
        self.description = "test chunks"
        self.taken = 0

    def next_chunk(self) -> tuple[bytes, int] | None:
        if self.taken == len(self._frames):
            return None
        self.taken += 1
        return self._frames[self.taken - 1]


def test_a_compressed_source_is_sent_as_stored_and_decompressed_on_every_node() -> None:
    raw = [os.urandom(100_000) + bytes(156_144), b"x" * 5000, os.urandom(77)]
    sinks = [BytesSink() for _ in range(3)]
    source = _Chunks(raw)
    report, results = run_session(source, sinks, {"nodes": 3, "key": KEY},
                                  [{"key": KEY} for _ in range(3)])
    assert report.ok and source.taken == 3
    assert report.digest == blake3.blake3(b"".join(raw)).hexdigest()
    for sink, res in zip(sinks, results, strict=True):
        assert sink.data == b"".join(raw)
        assert res.digest == report.digest


def test_a_compressed_source_whose_recorded_digest_differs_fails_on_every_node() -> None:
    """A stream file changed after its digest was recorded: no node reports success."""
    raw = [os.urandom(50_000), os.urandom(50_000)]
    sinks = [BytesSink() for _ in range(2)]
    report, results = run_session(_Chunks(raw, digest=bytes(32)), sinks, {"nodes": 2},
                                  [{}, {}])
    assert not report.ok
    assert all(isinstance(r, DigestMismatch) for r in results), results
    assert all(not n.digest_ok for n in report.nodes)
