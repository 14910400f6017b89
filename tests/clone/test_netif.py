"""The node's interfaces and the one it reaches the golden node through (what --pxe needs)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ka.clone import netif
from ka.clone.netif import Interface, Uplink, parse_ip_json, uplink

IP_JSON = [
    {"ifname": "lo", "link_type": "loopback", "address": "00:00:00:00:00:00",
     "addr_info": [{"family": "inet", "local": "127.0.0.1"}, {"family": "inet6", "local": "::1"}]},
    {"ifname": "eth0", "link_type": "ether", "address": "52:54:00:AB:CD:01",
     "addr_info": [{"family": "inet", "local": "10.9.0.11"}, {"family": "inet6",
                                                             "local": "fe80::1"}]},
    {"ifname": "wg0", "link_type": "none", "addr_info": [{"family": "inet", "local": "10.7.0.2"}]},
]


def test_parse_ip_json() -> None:
    assert parse_ip_json(IP_JSON) == [
        Interface("lo", None, ("127.0.0.1", "::1"), loopback=True),
        Interface("eth0", "52:54:00:ab:cd:01", ("10.9.0.11", "fe80::1")),
        Interface("wg0", None, ("10.7.0.2",)),
    ]
    assert netif.local_interfaces(parse_ip_json(IP_JSON)) == (
        ["52:54:00:ab:cd:01"], ["10.9.0.11", "fe80::1", "10.7.0.2"])


@pytest.mark.parametrize(("address", "mac"), [
    ("52:54:00:AB:CD:01", "52:54:00:ab:cd:01"),
    (" 52:54:00:ab:cd:02\n", "52:54:00:ab:cd:02"),
    ("00:00:00:00:00:00", None),  # a link without a MAC of its own
    ("0.0.0.0", None),  # a tunnel
    ("80:00:02:08:fe:80:00:00:00:00:00:00:00:11:22:33:44:55:66:77", None),  # InfiniBand
    ("", None),
])
def test_an_interface_mac_is_written_as_the_node_table_writes_it(address: str,
                                                                  mac: str | None) -> None:
    assert netif._link_mac(address) == mac


def test_source_address_is_the_kernels_route_choice() -> None:
    # Connecting a UDP socket sends nothing: no packet leaves the machine.
    assert netif.source_address("127.0.0.1") == "127.0.0.1"


def test_uplink_is_the_interface_holding_the_source_address(
        monkeypatch: pytest.MonkeyPatch) -> None:
    found = parse_ip_json(IP_JSON)
    routes = {"10.9.0.1": "10.9.0.11", "10.7.0.1": "10.7.0.2", "127.0.0.1": "127.0.0.1",
              "192.0.2.1": "192.0.2.7"}
    monkeypatch.setattr(netif, "source_address", routes.get)
    assert uplink("10.9.0.1:30765", found) == Uplink("eth0", "52:54:00:ab:cd:01", "10.9.0.11")
    assert uplink("10.7.0.1", found) == Uplink("wg0", None, "10.7.0.2")
    assert uplink("127.0.0.1:1", found) == Uplink("lo", None, "127.0.0.1")
    assert uplink("192.0.2.1:1", found) == Uplink(None, None, "192.0.2.7")
    assert uplink("198.51.100.1:1", found) == Uplink(None, None, None)


@pytest.mark.parametrize(("peer", "host"), [
    ("10.0.0.1:30765", "10.0.0.1"), ("10.0.0.1", "10.0.0.1"), ("[fd00::1]:30765", "fd00::1"),
    ("fd00::1", "fd00::1"), ("golden:30765", "golden"), ("golden", "golden")])
def test_host_of_a_sender(peer: str, host: str) -> None:
    assert netif._host(peer) == host


def test_sysfs_fallback_without_ip(tmp_path: Path) -> None:
    for name, kind, mac in (("lo", "772", "00:00:00:00:00:00"), ("ka-none0", "1",
                                                                  "52:54:00:00:00:0A")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "type").write_text(kind + "\n")
        (tmp_path / name / "address").write_text(mac + "\n")
    found = netif._from_sysfs(str(tmp_path))
    assert [(i.name, i.mac, i.loopback) for i in found] == [
        ("ka-none0", "52:54:00:00:00:0a", False), ("lo", None, True)]
    assert found[0].addresses == (), "no such interface here: no address"
