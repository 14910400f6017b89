import contextlib
import itertools
import socket
import threading
import time

from ka.transport.discovery import (
    RETRY,
    DiscoveryResponder,
    encode_reply,
    find_sender,
    retry_intervals,
)
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


def test_requests_come_at_once_then_further_apart() -> None:
    waits = list(itertools.islice(retry_intervals(), 8))
    assert waits[:5] == [0.02, 0.04, 0.08, 0.16, 0.32]
    assert waits[5:] == [RETRY] * 3  # a node that waits long does not flood the network


def _silent_sender(port: int, seen: list, count: int) -> socket.socket:
    """A UDP socket on `port` that notes the first `count` requests and answers none."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", port))
    sock.settimeout(3.0)

    def note() -> None:
        with contextlib.suppress(OSError):
            while len(seen) < count:
                data, peer = sock.recvfrom(512)
                seen.append((time.monotonic(), data, peer))

    threading.Thread(target=note, daemon=True).start()
    return sock


def test_a_node_asks_again_within_a_fraction_of_the_old_interval() -> None:
    # The second request follows the first after 20 ms (it followed after RETRY = 0.5 s): a
    # sender that starts just after its nodes is found without losing half a second.
    port = _free_udp_port()
    seen: list = []
    with _silent_sender(port, seen, 3):
        assert find_sender(session_key(b"k"), "s", port, "127.0.0.1", timeout=0.4) is None
    assert len(seen) >= 3
    assert seen[1][0] - seen[0][0] < RETRY / 2  # the one bound where time is the point


def test_a_late_answer_to_an_earlier_request_is_taken_but_not_a_forged_one() -> None:
    port = _free_udp_port()
    key = session_key(b"k")
    seen: list = []
    result: list = []
    with _silent_sender(port, seen, 2) as sock:
        finder = threading.Thread(
            target=lambda: result.append(find_sender(key, "s", port, "127.0.0.1", timeout=3.0))
        )
        finder.start()
        while len(seen) < 2:
            time.sleep(0.01)
        (_, first, peer), (_, second, _) = seen
        assert first != second  # every request has a nonce of its own
        nonce = first[4:20]
        # made with another key, naming another port: taken, it would be the result
        sock.sendto(encode_reply(session_key(b"x"), nonce, port + 1, "s", "127.0.0.1"), peer)
        sock.sendto(encode_reply(key, nonce, port, "s", "127.0.0.1"), peer)
        finder.join(timeout=5)
    assert result == [("127.0.0.1", port)]
