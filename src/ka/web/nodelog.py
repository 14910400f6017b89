"""A node's log, followed: its status service (`ka install --status-port`) read for as long
as the dashboard's client wants it, through the golden node (the browser never talks to the
nodes).

`follow_log` runs in a worker thread of the server's event loop (which joins it when the
server stops) and hands what it reads to `put`, a callable that is safe to call from that
thread: ("step", STEP) once, ("line", STEP, TEXT) for every line (the node's backlog first),
and ("end", WHY) last. It asks `stopped()` every POLL seconds, so a client that goes away,
or a server that stops, frees its thread within that time.
"""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Callable
from typing import Any

from ka.clone.status import expect_hello, status_key
from ka.transport import auth
from ka.transport.channel import initiate
from ka.transport.errors import ProtocolError
from ka.transport.status_messages import STATUS, Bye, LogLine

POLL = 0.5
CONNECT_TIMEOUT = 2.0
MESSAGE_TIMEOUT = 10.0  # a message whose first bytes came is all in by then

Put = Callable[[tuple[Any, ...]], None]


def follow_log(host: str, port: int, key: bytes | None, put: Put,
               stopped: Callable[[], bool]) -> None:
    try:
        sock = socket.create_connection((host, port), timeout=CONNECT_TIMEOUT)
    except OSError as e:
        put(("end", f"cannot reach the status service of {host}:{port}: {e.strerror or e} "
                    "(the node may have rebooted, or runs without one)"))
        return
    try:
        chan = initiate(sock, status_key(key), auth.CONTROL, catalogue=STATUS)
    except (ProtocolError, OSError) as e:
        sock.close()
        put(("end", f"{host}:{port} refused us: {e}"))
        return
    why = "the dashboard stopped following"
    try:
        put(("step", expect_hello(chan.recv(time.monotonic() + CONNECT_TIMEOUT)).step))
        while not stopped():
            # A deadline inside a message would cut it: wait for its first bytes here.
            ready, _, _ = select.select([sock], [], [], POLL)
            if not ready:
                continue
            msg = chan.recv(time.monotonic() + MESSAGE_TIMEOUT)
            if isinstance(msg, LogLine):
                put(("line", msg.step, msg.line))
            elif isinstance(msg, Bye):
                why = "the install has ended: its status service said goodbye"
                break
    except (ProtocolError, OSError) as e:
        why = f"the node's status service went away ({e})"
    finally:
        chan.close()
    put(("end", why))
