"""The node's status service and `ka console`: the original's port-12345 log server, made safe.

A holder of the session key sees the node's log and current step as they happen. Running a
command on the node needs the key *and* `--allow-exec` on the node, and is refused outright
when the session has no key (anyone could then hold the public open-session key).
Connections use the transport's authenticated channel under a key derived for this service
only, so a status connection can never pass for a transport one or the other way round.
"""

from __future__ import annotations

import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence

from ka import run
from ka.errors import KaError
from ka.keys import check_key
from ka.ports import STATUS_PORT as STATUS_PORT
from ka.transport import auth
from ka.transport.channel import Channel, initiate, respond
from ka.transport.codec import Message, MessageError
from ka.transport.errors import ProtocolError
from ka.transport.frame import session_key, subkey
from ka.transport.gate import Gate, accept_loop
from ka.transport.status_messages import STATUS, Bye, Exec, ExecResult, Hello, LogLine

BACKLOG = 5000  # log lines kept for a console that connects late
EXEC_TIMEOUT = 120.0
OUTPUT_LIMIT = 256 * 1024


class ConsoleError(KaError):
    exit_code = 15


def status_key(key: bytes | None) -> bytes:
    return subkey(session_key(key), b"ka node status service")


class StatusService:
    """Serves the log of one node; `log()` and `step()` are called as the install runs."""

    def __init__(self, node: str, key: bytes | None, *, port: int = STATUS_PORT,
                 bind: str = "0.0.0.0", allow_exec: bool = False) -> None:
        check_key(key)
        if allow_exec and key is None:
            raise KaError("--allow-exec needs a session key (--key-file)",
                          hint="without a key anyone on the network could run commands")
        self.node = node
        self.current = ""
        self._root = status_key(key)
        # Never with the open-session key, which anyone can derive (checked again per request).
        self._allow_exec = allow_exec and key is not None
        self._lines: deque[tuple[int, str]] = deque(maxlen=BACKLOG)
        self._seq = 0  # lines ever logged; the deque forgets the oldest
        self._cond = threading.Condition()
        self._closed = False
        self._sock = socket.create_server((bind, port))
        self.port = int(self._sock.getsockname()[1])
        threading.Thread(target=accept_loop, name="status", daemon=True, args=(
            self._sock, self._greet, self._serve, lambda: self._closed,
            lambda kind, text: self.log(f"status service: {text}"), Gate(), "status-conn",
        )).start()

    def log(self, line: str) -> None:
        with self._cond:
            self._seq += 1
            self._lines.append((self._seq, line))
            self._cond.notify_all()

    def step(self, name: str) -> None:
        self.current = name

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()

    def _greet(self, sock: socket.socket, _peer: tuple[str, int]) -> Channel | None:
        try:
            return respond(sock, self._root, (auth.CONTROL,), catalogue=STATUS)[1]
        except (ProtocolError, OSError):
            sock.close()  # a stray, slow or keyless peer: it gets nothing
            return None

    def _serve(self, chan: Channel) -> None:
        try:
            chan.send(Hello(self.node, self.current, self._allow_exec))
            threading.Thread(target=self._requests, args=(chan,), daemon=True).start()
            self._follow(chan)
        except OSError:
            pass
        finally:
            chan.close()

    def _follow(self, chan: Channel) -> None:
        sent = 0
        while True:
            with self._cond:
                while not self._closed and not chan.closed and self._seq == sent:
                    self._cond.wait(0.5)
                if chan.closed:
                    return
                new = [line for seq, line in self._lines if seq > sent]
                sent = self._seq
                closed = self._closed
            for line in new:
                chan.send(LogLine(line, self.current))
            if closed:
                chan.send(Bye())
                return

    def _requests(self, chan: Channel) -> None:
        try:
            while True:
                self._answer(chan, chan.recv())
        except (ProtocolError, OSError) as e:
            # The console went away (or sent what is not a console's request), or the log
            # stream ended and closed the channel while a command ran: nobody is left to read
            # an answer.
            if isinstance(e, MessageError):
                self.log(f"status service: dropped a console: {e}")
            chan.closed = True
            with self._cond:
                self._cond.notify_all()

    def _answer(self, chan: Channel, msg: Message) -> None:
        if not isinstance(msg, Exec):
            raise MessageError(f"a {msg.kind!r} message is not a console's request")
        if not self._allow_exec:
            chan.send(ExecResult(None, refused="this node was started without --allow-exec"))
            return
        if not msg.argv:
            chan.send(ExecResult(None, refused="exec needs a command"))
            return
        self.log(f"console: exec {' '.join(msg.argv)}")
        try:
            r = run.run(list(msg.argv), check=False, timeout=EXEC_TIMEOUT)
        except KaError as e:
            chan.send(ExecResult(None, refused=str(e)))
            return
        chan.send(ExecResult(r.returncode, r.stdout[-OUTPUT_LIMIT:], r.stderr[-OUTPUT_LIMIT:]))


def console(
    host: str,
    port: int,
    key: bytes | None,
    on_line: Callable[[str], None],
    *,
    exec_argv: Sequence[str] | None = None,
    connect_timeout: float = 10.0,
) -> ExecResult | None:
    """Show a node's log (until it ends), or run one command there and return its result."""
    deadline = time.monotonic() + connect_timeout
    while True:
        try:
            sock = socket.create_connection((host, port), timeout=3.0)
            break
        except OSError as e:
            if time.monotonic() >= deadline:
                raise ConsoleError(f"cannot reach the status service of {host}:{port}: "
                                   f"{e.strerror or e}",
                                   hint="is `ka install` running there, on this --port?") from e
            time.sleep(0.5)
    try:
        chan = initiate(sock, status_key(key), auth.CONTROL, catalogue=STATUS)
    except ProtocolError as e:
        sock.close()
        raise ConsoleError(f"{host}:{port} refused us: {e}",
                           hint="use the same --key-file as the node") from e
    cut = ""
    try:
        hello = expect_hello(chan.recv())
        on_line(f"{hello.node}: online, current step: {hello.step or '-'}")
        if exec_argv is not None:
            chan.send(Exec(tuple(exec_argv)))
        while True:
            msg = chan.recv()
            if isinstance(msg, LogLine) and exec_argv is None:
                on_line(msg.line)
            elif isinstance(msg, ExecResult) and exec_argv is not None:
                return msg
            elif isinstance(msg, Bye):
                break
    except ProtocolError as e:
        cut = str(e)
    finally:
        chan.close()
    if exec_argv is not None:
        # Without its result the command's outcome is unknown: never report it as status 0.
        raise ConsoleError(
            f"{host}:{port} went away before the command's result" + (f" ({cut})" if cut else ""),
            hint="the install may have ended meanwhile; run the command again",
        )
    if cut:
        on_line(f"{host}:{port}: the status service went away ({cut})")
    return None


def expect_hello(msg: Message) -> Hello:
    if not isinstance(msg, Hello):
        raise ProtocolError(f"the status service began with {msg.kind!r}, not 'hello'")
    return msg


def recent_log(host: str, port: int, key: bytes | None, *, wait: float = 1.0,
               limit: int = BACKLOG, connect_timeout: float = 2.0) -> tuple[str, list[str]]:
    """The node's current step and the log lines it sends within `wait` s (its backlog comes
    at once): a bounded look, for a dashboard that cannot follow a log for ever."""
    try:
        sock = socket.create_connection((host, port), timeout=connect_timeout)
    except OSError as e:
        raise ConsoleError(f"cannot reach the status service of {host}:{port}: "
                           f"{e.strerror or e}",
                           hint="the node may have rebooted, or runs without one") from e
    try:
        chan = initiate(sock, status_key(key), auth.CONTROL, catalogue=STATUS)
    except (ProtocolError, OSError) as e:
        sock.close()
        raise ConsoleError(f"{host}:{port} refused us: {e}",
                           hint="the dashboard needs the session's --key-file") from e
    lines: list[str] = []
    deadline = time.monotonic() + wait
    step = ""
    try:
        step = expect_hello(chan.recv(deadline)).step
        while len(lines) < limit:
            msg = chan.recv(deadline)
            if isinstance(msg, LogLine):
                lines.append(msg.line)
                step = msg.step or step
            elif isinstance(msg, Bye):
                break
    except (ProtocolError, OSError):
        pass  # the wait is over, or the node went away: what came is what there is
    finally:
        chan.close()
    return step, lines
