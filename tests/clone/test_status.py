"""The node status service and `ka console`, in one process on 127.0.0.1."""

from __future__ import annotations

import os
import socket
import sys
import threading
from collections.abc import Iterator

import pytest

from ka.clone.status import ConsoleError, StatusService, console, status_key
from ka.errors import KaError
from ka.transport import auth
from ka.transport.channel import Channel, initiate
from ka.transport.errors import ProtocolError
from ka.transport.status_messages import STATUS, Exec, ExecResult, Hello, LogLine

KEY = os.urandom(32)


@pytest.fixture
def service() -> Iterator[StatusService]:
    s = StatusService("node07", KEY, port=0, bind="127.0.0.1", allow_exec=True)
    try:
        yield s
    finally:
        s.close()


def test_console_sees_backlog_and_new_lines_until_the_end(service: StatusService) -> None:
    service.step("extract /")
    service.log("first")
    seen: list[str] = []
    got_first = threading.Event()

    def on_line(line: str) -> None:
        seen.append(line)
        if line == "first":
            got_first.set()

    t = threading.Thread(target=lambda: console("127.0.0.1", service.port, KEY, on_line))
    t.start()
    assert got_first.wait(10)
    service.log("second")
    service.close()
    t.join(10)
    assert not t.is_alive()
    assert seen == ["node07: online, current step: extract /", "first", "second"]


def test_exec_runs_with_the_key(service: StatusService) -> None:
    reply = console("127.0.0.1", service.port, KEY, lambda line: None,
                    exec_argv=[sys.executable, "-c", "print('hi from the node')"])
    assert reply is not None and reply.status == 0 and reply.stdout == "hi from the node\n"


def test_wrong_key_gets_nothing(service: StatusService) -> None:
    with pytest.raises(ConsoleError, match="refused"):
        console("127.0.0.1", service.port, b"x" * 32, lambda line: None)


def test_exec_refused_without_allow_exec() -> None:
    s = StatusService("n", KEY, port=0, bind="127.0.0.1")
    try:
        reply = console("127.0.0.1", s.port, KEY, lambda line: None, exec_argv=["true"])
        assert reply is not None and reply.status is None
        assert reply.refused is not None and "--allow-exec" in reply.refused
    finally:
        s.close()


def test_allow_exec_needs_a_key() -> None:
    with pytest.raises(KaError, match="needs a session key"):
        StatusService("n", None, port=0, bind="127.0.0.1", allow_exec=True)


def test_stray_connection_does_not_disturb(service: StatusService) -> None:
    with socket.create_connection(("127.0.0.1", service.port)) as s:
        s.sendall(b"GET / HTTP/1.0\r\n\r\n" + b"\x00" * 64)
    service.log("still here")
    lines: list[str] = []
    t = threading.Thread(target=lambda: console("127.0.0.1", service.port, KEY, lines.append))
    t.start()
    for _ in range(100):
        if "still here" in lines:
            break
        threading.Event().wait(0.05)
    service.close()
    t.join(10)
    assert "still here" in lines


def test_exec_cut_off_before_its_result_is_an_error(service: StatusService) -> None:
    errors: list[BaseException] = []

    def run_console() -> None:
        try:
            console("127.0.0.1", service.port, KEY, lambda line: None,
                    exec_argv=[sys.executable, "-c", "import time; time.sleep(2)"])
        except BaseException as e:  # noqa: BLE001 - handed to the test thread
            errors.append(e)

    t = threading.Thread(target=run_console)
    t.start()
    for _ in range(200):
        if any("console: exec" in line for _seq, line in service._lines):
            break
        threading.Event().wait(0.05)
    service.close()  # the install ends while the command still runs
    t.join(10)
    assert not t.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], ConsoleError)
    assert "before the command's result" in errors[0].message


def _connect(service: StatusService) -> Channel:
    sock = socket.create_connection(("127.0.0.1", service.port), timeout=10)
    return initiate(sock, status_key(KEY), auth.CONTROL, catalogue=STATUS)


def test_a_key_holder_sending_what_is_not_a_request_is_dropped_and_logged(
        service: StatusService) -> None:
    """A console (it holds the key) that sends a log line to the node, as if it were the node:
    nothing is run, its connection ends, and the node's log says why."""
    chan = _connect(service)
    try:
        assert isinstance(chan.recv(), Hello)
        chan.send(LogLine("rm -rf /", "forged"))
        with pytest.raises(ProtocolError):
            for _ in range(10):
                chan.recv()  # the node's backlog, then the end of the connection
    finally:
        chan.close()
    assert any("dropped a console: a 'log' message is not a console's request" in line
               for _seq, line in service._lines)


def test_an_empty_command_is_refused(service: StatusService) -> None:
    chan = _connect(service)
    try:
        assert isinstance(chan.recv(), Hello)
        chan.send(Exec(()))
        reply = chan.recv()
        while not isinstance(reply, ExecResult):
            reply = chan.recv()
        assert reply.status is None and reply.refused == "exec needs a command"
    finally:
        chan.close()
