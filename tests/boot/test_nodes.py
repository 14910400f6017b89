from __future__ import annotations

import pytest

from ka.boot.nodes import NodeEntry, format_nodes, normalize_mac, parse_nodes, resolve_node
from ka.errors import UsageError

TABLE = """\
# lab nodes
52:54:00:AA:00:01 10.0.0.11 node01
52-54-00-aa-00-02 node02   # no fixed address
52:54:00:aa:00:03 10.0.0.13
"""


def test_parse_table() -> None:
    assert parse_nodes(TABLE) == (
        NodeEntry("52:54:00:aa:00:01", "10.0.0.11", "node01"),
        NodeEntry("52:54:00:aa:00:02", None, "node02"),
        NodeEntry("52:54:00:aa:00:03", "10.0.0.13", None),
    )


def test_format_round_trips() -> None:
    entries = parse_nodes(TABLE)
    assert parse_nodes(format_nodes(entries)) == entries


@pytest.mark.parametrize(
    "text, message",
    [
        ("52:54:00:aa:00\n", "nodes:1: '52:54:00:aa:00' is not a MAC"),
        ("52:54:00:aa:00:01 10.0.0.1 10.0.0.2\n", "two IP addresses"),
        ("52:54:00:aa:00:01 a b\n", "neither an IPv4 address nor a host name"),
        ("52:54:00:aa:00:01 n1\n52:54:00:aa:00:02 n1\n", "nodes:2: n1 is already on line 1"),
        ("52:54:00:aa:00:01\n52-54-00-AA-00-01\n", "already on line 1"),
    ],
)
def test_parse_errors_name_the_line(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_nodes(text, "nodes")


def test_resolve_by_mac_ip_or_name() -> None:
    table = parse_nodes(TABLE)
    assert resolve_node("52-54-00-AA-00-09", table) == "52:54:00:aa:00:09"
    assert resolve_node("10.0.0.13", table) == "52:54:00:aa:00:03"
    assert resolve_node("node02", table) == "52:54:00:aa:00:02"
    with pytest.raises(UsageError, match="'node09' is not a MAC address and is not in"):
        resolve_node("node09", table)


def test_normalize_mac() -> None:
    assert normalize_mac("AA-BB-CC-DD-EE-FF") == "aa:bb:cc:dd:ee:ff"
    assert normalize_mac("aabbccddeeff") is None
