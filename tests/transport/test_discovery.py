import socket
import time

from ka.transport.discovery import DiscoveryResponder, find_sender
from ka.transport.frame import session_key


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_closed_responder_frees_its_port_at_once() -> None:
    # The next session of a clone binds the same port right after the previous one ends.
    port = _free_udp_port()
    for _ in range(3):
        responder = DiscoveryResponder(session_key(b"k"), "s", port, "127.0.0.1")
        time.sleep(0.05)
        responder.close()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", port))


def test_found_by_session_name_and_key_only() -> None:
    port = _free_udp_port()
    key = session_key(b"k")
    responder = DiscoveryResponder(key, "lab-a", port, "127.0.0.1")
    try:
        assert find_sender(key, "lab-a", port, "127.0.0.1", timeout=2.0) == ("127.0.0.1", port)
        assert find_sender(key, "lab-b", port, "127.0.0.1", timeout=0.6) is None
        # A reply made with another key is not trusted.
        assert find_sender(session_key(b"x"), "lab-a", port, "127.0.0.1", timeout=0.6) is None
    finally:
        responder.close()
