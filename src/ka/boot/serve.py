"""`ka pxe serve`: check the network, then run dnsmasq in the foreground.

The checks turn dnsmasq's terse failures into errors that say what to fix: the interface has no
IPv4 address, the DHCP range is not inside the interface's subnet, or another program already
holds UDP port 67 (DHCP) or 69 (TFTP).
"""

from __future__ import annotations

import errno
import ipaddress
import json
import os
import socket
import stat
import subprocess

from ka import run
from ka.boot.pxe import DNSMASQ_CONF, PxeConfig
from ka.errors import KaError
from ka.ports import DHCP_PORT, TFTP_PORT

STARTUP_SECONDS = 1.0  # dnsmasq fails at once on a bad configuration or a taken port


class ServeError(KaError):
    """`ka pxe serve` cannot serve on this interface as configured."""


def interface_addresses(interface: str) -> list[ipaddress.IPv4Interface]:
    """The IPv4 addresses (with prefix) of `interface` in this network namespace."""
    result = run.run(["ip", "-json", "-4", "address", "show", "dev", interface], check=False)
    if result.returncode != 0:
        raise ServeError(f"network interface {interface!r} does not exist here",
                         hint="list interfaces with: ip -br link")
    out: list[ipaddress.IPv4Interface] = []
    for link in json.loads(result.stdout or "[]"):
        for a in link.get("addr_info", []):
            if a.get("family") == "inet":
                out.append(ipaddress.IPv4Interface(f"{a['local']}/{a['prefixlen']}"))
    return out


def check_network(config: PxeConfig, addresses: list[ipaddress.IPv4Interface]) -> None:
    """Refuse an interface without an address, and a range or subnet it is not on. Pure."""
    if not addresses:
        raise ServeError(
            f"interface {config.interface} has no IPv4 address",
            hint=f"give it one on the deployment network, e.g. ip address add 10.0.0.1/24 dev "
                 f"{config.interface}",
        )
    networks = ", ".join(str(a.network) for a in addresses)
    if config.range is not None:
        first, last = (ipaddress.IPv4Address(a) for a in config.range)
        home = [a for a in addresses if first in a.network and last in a.network]
        if not home:
            raise ServeError(
                f"DHCP range {first},{last} is not inside the subnet of {config.interface} "
                f"({networks})",
                hint="choose a range inside that subnet, or serve on the right interface",
            )
        net = home[0].network
        if first == net.network_address or last == net.broadcast_address:
            raise ServeError(f"DHCP range {first},{last} includes the network or broadcast "
                             f"address of {net}")
        for a in addresses:
            if first <= a.ip <= last:
                raise ServeError(f"DHCP range {first},{last} includes this machine's own "
                                 f"address {a.ip}", hint="start the range above it")
    if config.subnet is not None:
        subnet = ipaddress.IPv4Network(config.subnet, strict=False)
        if not any(a.network == subnet for a in addresses):
            raise ServeError(f"proxy-DHCP subnet {subnet} is not the subnet of "
                             f"{config.interface} ({networks})")


def check_port_free(port: int, address: str = "0.0.0.0") -> None:
    """Bind (and release) a UDP port, to name the conflict before dnsmasq meets it."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.bind((address, port))
    except OSError as e:
        service = {DHCP_PORT: "DHCP", TFTP_PORT: "TFTP"}.get(port, "")
        if e.errno == errno.EADDRINUSE:
            raise ServeError(
                f"UDP port {port} ({service}) is already in use on this machine",
                hint=f"see who holds it: ss -ulpn 'sport = :{port}'; stop that server, or use "
                     "--proxy-dhcp beside an existing DHCP server",
            ) from e
        if e.errno == errno.EACCES:
            raise ServeError(f"binding UDP port {port} ({service}) needs root",
                             hint="run ka pxe serve as root") from e
        raise ServeError(f"cannot bind UDP port {port}: {e.strerror}") from e
    finally:
        s.close()


def check_tftp_readable(root: str) -> None:
    """dnsmasq serves TFTP as an unprivileged user: every directory above the TFTP root must
    let others through, or every request fails with a bare "file not found"."""
    if not os.path.isdir(root):
        raise ServeError(f"TFTP root {root} does not exist",
                         hint="create it with ka pxe config")
    path = os.path.abspath(root)
    while True:
        mode = os.stat(path).st_mode
        if not mode & stat.S_IXOTH or (path == os.path.abspath(root) and not mode & stat.S_IROTH):
            raise ServeError(
                f"dnsmasq cannot read the TFTP root {root}: {path} is not open to other users "
                f"(mode {stat.S_IMODE(mode):o})",
                hint=f"chmod o+rx {path}, or put the PXE directory (--dir) somewhere readable, "
                     "such as /var/lib/ka/pxe")
        if path == "/":
            return
        path = os.path.dirname(path)


def dnsmasq_argv(config: PxeConfig) -> list[str]:
    # --pid-file= (empty) writes no pid file: the caller owns the process by its Popen.
    return ["dnsmasq", "--keep-in-foreground", "--log-facility=-", "--pid-file=",
            f"--conf-file={os.path.join(config.state_dir, DNSMASQ_CONF)}"]


def start(config: PxeConfig) -> subprocess.Popen[bytes]:
    """Check everything, start dnsmasq, and return it once it has survived its start-up."""
    run.require("dnsmasq")
    check_network(config, interface_addresses(config.interface))
    check_tftp_readable(config.tftp_root)
    if config.dhcp != "tftp-only":
        check_port_free(DHCP_PORT)
    check_port_free(TFTP_PORT)
    proc = run.spawn(dnsmasq_argv(config))
    try:
        status = proc.wait(timeout=STARTUP_SECONDS)
    except subprocess.TimeoutExpired:
        return proc
    raise ServeError(f"dnsmasq stopped at start-up with status {status} (its message is above)",
                     hint="check the configuration: dnsmasq --test --conf-file="
                          f"{os.path.join(config.state_dir, DNSMASQ_CONF)}")
