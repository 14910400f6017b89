"""Small network probes run inside lab hosts by the lab tests (`python netprobe.py CMD ...`).

Every probe is bounded in time and count.
"""

from __future__ import annotations

import socket
import sys
import time


def listen_tcp(port: int, count: int, timeout: float) -> None:
    """Accept `count` connections; print each peer address; give up after `timeout` s."""
    server = socket.create_server(("0.0.0.0", port), reuse_port=False)
    server.settimeout(timeout)
    print("ready", flush=True)
    for _ in range(count):
        conn, peer = server.accept()
        conn.sendall(conn.getsockname()[0].encode() + b"\n")
        conn.close()
        print(peer[0], flush=True)


def connect(host: str, port: int, attempts: int) -> None:
    """Connect to host:port (retrying while the listener starts) and print what it says."""
    for attempt in range(attempts):
        try:
            with socket.create_connection((host, port), timeout=2) as conn:
                print(conn.recv(100).decode().strip())
                return
        except OSError:
            if attempt == attempts - 1:
                raise
            time.sleep(0.1)


def listen_udp(port: int, timeout: float) -> None:
    """Print the source address of every datagram received on `port` within `timeout` s."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("", port))
    print("ready", flush=True)
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            data, peer = sock.recvfrom(2048)
        except TimeoutError:
            break
        print(peer[0], data.decode(errors="replace"), flush=True)


def broadcast(port: int, message: str, count: int) -> None:
    """Send `count` datagrams to 255.255.255.255:port (only ever run inside a lab host)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    for _ in range(count):
        sock.sendto(message.encode(), ("255.255.255.255", port))
        time.sleep(0.05)


def main(argv: list[str]) -> None:
    command, *rest = argv
    if command == "listen-tcp":
        listen_tcp(int(rest[0]), int(rest[1]), float(rest[2]))
    elif command == "connect":
        connect(rest[0], int(rest[1]), int(rest[2]))
    elif command == "listen-udp":
        listen_udp(int(rest[0]), float(rest[1]))
    elif command == "broadcast":
        broadcast(int(rest[0]), rest[1], int(rest[2]))
    else:
        raise SystemExit(f"unknown probe {command}")


if __name__ == "__main__":
    main(sys.argv[1:])
