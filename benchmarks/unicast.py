"""Naive unicast, the baseline ka is measured against: the sender serves every node its own TCP
stream of the whole file, so N nodes share the sender's one link.

    python unicast.py serve FILE PORT NODES     # prints "ready", serves NODES connections
    python unicast.py fetch HOST PORT OUTPUT    # writes the stream to OUTPUT, prints its size

Both sides keep per-byte work in the kernel or in C (sendfile, recv_into a reused buffer), so
the baseline is limited by the network, not by Python.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time

BUFFER = 1 << 20


def serve(path: str, port: int, nodes: int) -> None:
    size = os.path.getsize(path)
    server = socket.create_server(("0.0.0.0", port), backlog=nodes)
    server.settimeout(120)
    print("ready", flush=True)
    workers = []
    for index in range(nodes):
        conn, _peer = server.accept()
        if index == 0:
            print("start", flush=True)  # the benchmark times the stream from here
        worker = threading.Thread(target=_send_file, args=(conn, path, size))
        worker.start()
        workers.append(worker)
    for worker in workers:
        worker.join()


def _send_file(conn: socket.socket, path: str, size: int) -> None:
    with conn, open(path, "rb") as f:
        offset = 0
        while offset < size:
            sent = os.sendfile(conn.fileno(), f.fileno(), offset, size - offset)
            if sent == 0:
                raise OSError("connection closed by the node")
            offset += sent
        conn.shutdown(socket.SHUT_WR)


def fetch(host: str, port: int, output: str) -> None:
    for attempt in range(300):  # the server may still be starting: retry for up to ~30 s
        try:
            conn = socket.create_connection((host, port), timeout=60)
            break
        except OSError:
            if attempt == 299:
                raise
            time.sleep(0.1)
    buffer = bytearray(BUFFER)
    view = memoryview(buffer)
    total = 0
    with conn, open(output, "wb") as out:
        while received := conn.recv_into(view):
            out.write(view[:received])
            total += received
    print(total, flush=True)


def main(argv: list[str]) -> None:
    if argv[:1] == ["serve"] and len(argv) == 4:
        serve(argv[1], int(argv[2]), int(argv[3]))
    elif argv[:1] == ["fetch"] and len(argv) == 4:
        fetch(argv[1], int(argv[2]), argv[3])
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
