"""A TCP port of the machine running the lab, forwarded into one of the lab's namespaces.

`ka lab clone --web` serves the dashboard inside the golden node's namespace, where the
machine's own browser cannot reach it: nothing of the lab is routed to the root namespace.
The forward listens on 127.0.0.1 of the machine and, for each connection, opens one inside
the namespace. Its sockets are made by a thread that has joined the namespace (setns(2) moves
the calling thread only, and a socket stays in the namespace it was made in), and an asyncio
loop in a thread of its own copies the bytes both ways as they come, so an event stream stays
live. Leaving the `with` closes the port and every connection and joins both threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType

from ka.errors import KaError, UsageError

CLONE_NEWNET = 0x40000000
NETNS_DIR = "/run/netns"  # where `ip netns add` names its namespaces
STOP_TIMEOUT = 5.0
CHUNK = 64 * 1024


class ForwardError(KaError):
    """The forward into a lab namespace could not be set up."""


def join_netns(netns: str) -> None:
    """Move the calling thread into the network namespace `netns` (named by `ip netns`)."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(os.path.join(NETNS_DIR, netns), os.O_RDONLY | os.O_CLOEXEC)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"setns into {netns}: {os.strerror(errno)}")
    finally:
        os.close(fd)


class PortForward:
    """`with PortForward(port, netns) as f:` forwards 127.0.0.1:`port` (0: any free one,
    then `f.port`) to `host:target_port` as seen from inside `netns` (by default the same
    port on the namespace's own loopback)."""

    def __init__(self, port: int, netns: str, host: str = "127.0.0.1",
                 target_port: int | None = None) -> None:
        self.port, self.netns = port, netns
        self.host, self.target_port = host, target_port
        self.target: tuple[str, int] = (host, target_port or port)
        self._sock: socket.socket | None = None
        self._inside: ThreadPoolExecutor | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._ready = threading.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    def __enter__(self) -> PortForward:
        try:
            self._sock = socket.create_server(("127.0.0.1", self.port), backlog=64)
        except OSError as e:
            raise UsageError(f"cannot listen on 127.0.0.1:{self.port} for the dashboard: "
                             f"{e.strerror or e}", hint="choose another --web port") from e
        self.port = int(self._sock.getsockname()[1])
        self.target = (self.host, self.target_port or self.port)
        try:
            self._inside = ThreadPoolExecutor(1, thread_name_prefix="ka-lab-netns",
                                              initializer=join_netns, initargs=(self.netns,))
            try:
                self._inside.submit(lambda: None).result()
            except Exception as e:  # noqa: BLE001 - the initializer's error, said here
                raise ForwardError(f"cannot enter the lab namespace {self.netns}: {e}",
                                   hint="the lab needs root and `ip netns`") from e
            self._thread = threading.Thread(target=self._run, name="ka-lab-forward",
                                            daemon=True)
            self._thread.start()
            if not self._ready.wait(STOP_TIMEOUT):
                raise ForwardError("the dashboard's forward did not start")
        except BaseException:
            self._close()
            raise
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._close()

    def _close(self) -> None:
        if self._loop is not None and self._stopping is not None:
            with contextlib.suppress(RuntimeError):  # the loop has ended already
                self._loop.call_soon_threadsafe(self._stopping.set)
        if self._thread is not None:
            self._thread.join(STOP_TIMEOUT)
        if self._inside is not None:
            self._inside.shutdown(wait=True)
        if self._sock is not None:
            self._sock.close()

    def _run(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        server = await asyncio.start_server(self._connection, sock=self._sock)
        self._ready.set()
        async with server:
            await self._stopping.wait()
            server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _connection(self, outer_r: asyncio.StreamReader,
                          outer_w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        inner_w: asyncio.StreamWriter | None = None
        try:
            loop = asyncio.get_running_loop()
            inner = await loop.run_in_executor(self._inside, socket.socket)
            inner.setblocking(False)
            try:
                await asyncio.wait_for(loop.sock_connect(inner, self.target), STOP_TIMEOUT)
            except OSError:  # refused, or TimeoutError
                inner.close()
                return  # not served yet, or no more: the client sees the connection closed
            inner_r, inner_w = await asyncio.open_connection(sock=inner)
            await asyncio.gather(_copy(outer_r, inner_w), _copy(inner_r, outer_w))
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            for w in (outer_w, inner_w):
                if w is not None:
                    w.close()
            self._tasks.discard(task)


async def _copy(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    try:
        while data := await src.read(CHUNK):
            dst.write(data)
            await dst.drain()
        if dst.can_write_eof():
            dst.write_eof()  # a half-close: the other way may still be talking
    except OSError:
        dst.close()
