"""`ka pxe serve` checks, without root: pure network checks and a port-in-use probe on loopback."""

from __future__ import annotations

import ipaddress
import os
import shutil
import socket
import tempfile

import pytest

from ka.boot.cmdline import BootOptions
from ka.boot.pxe import PxeConfig
from ka.boot.serve import (
    ServeError,
    check_network,
    check_port_free,
    check_tftp_readable,
    dnsmasq_argv,
)

ADDR = [ipaddress.IPv4Interface("10.9.0.1/24")]


def config(**kw: object) -> PxeConfig:
    base: dict[str, object] = dict(interface="eth1", state_dir="/srv/ka", tftp_root="/srv/t",
                                   range=("10.9.0.100", "10.9.0.199"), boot=BootOptions())
    base.update(kw)
    return PxeConfig(**base)  # type: ignore[arg-type]


def test_range_inside_subnet_is_accepted() -> None:
    check_network(config(), ADDR)
    check_network(config(), [ipaddress.IPv4Interface("192.168.5.5/24"), *ADDR])


@pytest.mark.parametrize(
    "kw, addresses, message",
    [
        ({}, [], "interface eth1 has no IPv4 address"),
        ({"range": ("10.9.1.100", "10.9.1.199")}, ADDR,
         r"DHCP range 10.9.1.100,10.9.1.199 is not inside the subnet of eth1 \(10.9.0.0/24\)"),
        ({"range": ("10.9.0.100", "10.9.1.5")}, ADDR, "is not inside the subnet"),
        ({"range": ("10.9.0.0", "10.9.0.10")}, ADDR, "network or broadcast address"),
        ({"range": ("10.9.0.200", "10.9.0.255")}, ADDR, "network or broadcast address"),
        ({"range": ("10.9.0.1", "10.9.0.10")}, ADDR, "own address 10.9.0.1"),
        ({"dhcp": "proxy", "range": None, "subnet": "10.8.0.0/24"}, ADDR,
         "proxy-DHCP subnet 10.8.0.0/24 is not the subnet of eth1"),
    ],
)
def test_conflicting_network_is_refused(kw: dict, addresses: list, message: str) -> None:
    with pytest.raises(ServeError, match=message):
        check_network(config(**kw), addresses)


def test_port_in_use_is_named() -> None:
    holder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        holder.bind(("127.0.0.1", 0))
        port = holder.getsockname()[1]
        with pytest.raises(ServeError, match=f"UDP port {port} .*already in use") as info:
            check_port_free(port, "127.0.0.1")
        assert "ss -ulpn" in str(info.value.hint)
    finally:
        holder.close()
    check_port_free(port, "127.0.0.1")  # free again once released


def test_dnsmasq_runs_in_foreground_with_the_saved_configuration() -> None:
    assert dnsmasq_argv(config()) == [
        "dnsmasq", "--keep-in-foreground", "--log-facility=-", "--pid-file=",
        "--conf-file=/srv/ka/dnsmasq.conf",
    ]


def test_tftp_root_must_be_readable_by_others() -> None:
    # Not under pytest's tmp_path, whose parent is private to its owner.
    base = tempfile.mkdtemp(prefix="ka-tftp-")
    try:
        os.chmod(base, 0o755)
        top = os.path.join(base, "top")
        root = os.path.join(top, "pxe", "tftp")
        os.makedirs(root)
        for d in (top, os.path.dirname(root), root):
            os.chmod(d, 0o755)
        check_tftp_readable(root)
        os.chmod(top, 0o700)
        with pytest.raises(ServeError, match=f"{top} is not open to other users \\(mode 700\\)"):
            check_tftp_readable(root)
        os.chmod(top, 0o755)
        os.chmod(root, 0o711)
        with pytest.raises(ServeError, match=f"{root} is not open to other users"):
            check_tftp_readable(root)
        with pytest.raises(ServeError, match="does not exist"):
            check_tftp_readable(os.path.join(top, "nowhere"))
    finally:
        shutil.rmtree(base)
