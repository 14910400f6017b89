"""`ka pxe serve` on a lab network: a node gets an address and its boot file by DHCP, and fetches
the boot loader and its own menu by TFTP. Everything runs inside the lab's namespaces."""

from __future__ import annotations

import lzma
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator

import pytest

from ka.boot.cmdline import BootOptions
from ka.boot.menus import pxelinux_menu
from ka.lab.network import LabNetwork
from needs import need

pytestmark = pytest.mark.lab

UDHCPC_SCRIPT = """#!/bin/sh
# Record what the server offered; configure nothing.
if [ "$1" = bound ]; then
    printf 'ip=%s\\nboot_file=%s\\nsiaddr=%s\\n' "$ip" "$boot_file" "$siaddr" > "$0.out"
fi
exit 0
"""


@pytest.fixture
def workdir() -> Iterator[str]:
    # Not under pytest's 0700 tmp: dnsmasq reads the TFTP tree after dropping root.
    path = tempfile.mkdtemp(prefix="ka-pxe-lab-")
    os.chmod(path, 0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def lab() -> Iterator[LabNetwork]:
    need("busybox", "busybox-static")
    need("tftp", "tftp-hpa")
    need("/usr/lib/PXELINUX/pxelinux.0", "pxelinux")
    with LabNetwork(nodes=1) as network:
        yield network


def ka(lab: LabNetwork, host: int, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(lab.argv(host, [sys.executable, "-m", "ka", *args]), text=True,
                          capture_output=True, timeout=timeout, check=False)


def start_serve(lab: LabNetwork, state: str, log: str) -> subprocess.Popen[bytes]:
    with open(log, "wb") as err:
        proc = lab.spawn(0, [sys.executable, "-m", "ka", "pxe", "serve", "--dir", state],
                         stderr=err)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and proc.poll() is None:
        with open(log) as f:
            if "serving on eth0" in f.read():
                return proc
        time.sleep(0.1)
    stop(proc)
    with open(log) as f:
        raise AssertionError(f"ka pxe serve did not start: {f.read()}")


def stop(proc: subprocess.Popen[bytes]) -> int:
    proc.terminate()
    try:
        return proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def dhcp(lab: LabNetwork, workdir: str, arch: str) -> dict[str, str]:
    script = os.path.join(workdir, f"udhcpc-{arch}.sh")
    with open(script, "w") as f:
        f.write(UDHCPC_SCRIPT)
    os.chmod(script, 0o755)
    lab.run(1, ["busybox", "udhcpc", "-i", "eth0", "-f", "-q", "-n", "-t", "4", "-T", "2",
                "-s", script, "-V", f"PXEClient:Arch:{arch}:UNDI:002001",
                "-x", f"0x5d:{int(arch):04x}"], timeout=30)
    with open(f"{script}.out") as f:
        return dict(line.split("=", 1) for line in f.read().splitlines())


def tftp_get(lab: LabNetwork, server: str, remote: str, local: str) -> bytes:
    lab.run(1, ["tftp", "-m", "binary", server, "-c", "get", remote, local], timeout=30)
    with open(local, "rb") as f:
        return f.read()


def test_node_gets_address_boot_file_and_menus(lab: LabNetwork, workdir: str,
                                               ka_boot: Callable[[list[str]], int]) -> None:
    golden = lab.hosts[0].address
    net = golden.rsplit(".", 1)[0]
    state = os.path.join(workdir, "pxe")
    assert ka_boot(["pxe", "config", "--interface", "eth0", "--range", f"{net}.100,{net}.150",
                    "--dir", state, "--host", golden]) == 0
    mac = lab.run(1, ["cat", "/sys/class/net/eth0/address"]).stdout.strip()
    assert ka_boot(["pxe", "set", mac, "local", "--dir", state]) == 0

    serve = start_serve(lab, state, os.path.join(workdir, "serve.log"))
    try:
        bios = dhcp(lab, workdir, "00000")
        assert bios["boot_file"] == "pxelinux.0"
        assert bios["siaddr"] == golden
        assert int(bios["ip"].rsplit(".", 1)[1]) in range(100, 151)
        assert bios["ip"].startswith(f"{net}.")
        uefi = dhcp(lab, workdir, "00007")
        assert uefi["boot_file"] == "grub/grubx64.efi"

        got = tftp_get(lab, golden, "pxelinux.0", os.path.join(workdir, "got.0"))
        with open("/usr/lib/PXELINUX/pxelinux.0", "rb") as f:
            assert got == f.read()
        menu = tftp_get(lab, golden, f"pxelinux.cfg/01-{mac.replace(':', '-')}",
                        os.path.join(workdir, "got.cfg"))
        assert menu.decode() == pxelinux_menu(BootOptions(host=golden), "local")

        # A second server on the same interface is refused before dnsmasq starts: by the
        # preflight, which names the holder, and without it by ka pxe serve's own bind.
        second = ka(lab, 0, "pxe", "serve", "--dir", state)
        assert second.returncode == 5, second.stderr
        assert "missing  port 67/udp: " in second.stderr and "dnsmasq" in second.stderr
        second = ka(lab, 0, "pxe", "serve", "--dir", state, "--no-preflight")
        assert second.returncode == 1
        assert "is already in use" in second.stderr
        assert serve.poll() is None, "the first server is unharmed"
    finally:
        status = stop(serve)
    assert status == 0, "SIGTERM to ka pxe serve ends dnsmasq cleanly"
    with open(os.path.join(workdir, "serve.log")) as f:
        log = f.read()
    assert f"DHCPACK(eth0) {bios['ip']} {mac}" in log


def test_serve_refuses_bad_network(lab: LabNetwork, workdir: str,
                                   ka_boot: Callable[[list[str]], int]) -> None:
    state = os.path.join(workdir, "outside")
    assert ka_boot(["pxe", "config", "--interface", "eth0", "--range", "10.253.7.10,10.253.7.20",
                    "--dir", state]) == 0
    result = ka(lab, 0, "pxe", "serve", "--dir", state)
    assert result.returncode == 1
    assert "DHCP range 10.253.7.10,10.253.7.20 is not inside the subnet of eth0" in result.stderr

    lab.run(1, ["ip", "link", "add", "bare0", "type", "veth", "peer", "name", "bare1"])
    lab.run(1, ["ip", "link", "set", "bare0", "up"])
    state = os.path.join(workdir, "bare")
    assert ka_boot(["pxe", "config", "--interface", "bare0", "--range", "10.1.0.10,10.1.0.20",
                    "--dir", state]) == 0
    result = ka(lab, 1, "pxe", "serve", "--dir", state)
    assert result.returncode == 1
    assert "interface bare0 has no IPv4 address" in result.stderr
    assert "ip address add" in result.stderr


def test_boot_environment_gets_a_lease_and_retries(lab: LabNetwork, workdir: str,
                                                   ka_boot: Callable[[list[str]], int]) -> None:
    """The built initramfs's /init, run as PID 1 of a new PID namespace in a node's network
    namespace (chroot, no kernel boot): it mounts what it needs, its busybox DHCP client gets a
    lease from `ka pxe serve`, its real `ka install` finds no golden session on each attempt,
    and the node gives up with the console message and "reboots" (a stand-in command)."""
    golden = lab.hosts[0].address
    net = golden.rsplit(".", 1)[0]
    kernel = os.path.join(workdir, "vmlinuz-stand-in")
    with open(kernel, "wb") as f:
        f.write(b"not booted in this test")
    key = os.path.join(workdir, "key")
    with open(key, "wb") as f:
        f.write(os.urandom(32))
    env_dir = os.path.join(workdir, "env")
    assert ka_boot(["bootenv", "build", "--output", env_dir, "--kernel", kernel,
                    "--key-file", key]) == 0
    state = os.path.join(workdir, "pxe")
    assert ka_boot(["pxe", "config", "--interface", "eth0", "--range", f"{net}.100,{net}.150",
                    "--dir", state, "--bootenv", env_dir]) == 0
    root = os.path.join(workdir, "root")
    os.mkdir(root)
    with open(os.path.join(state, "tftp/ka/initrd.img"), "rb") as f:
        subprocess.run(["cpio", "-idm", "--quiet"], input=lzma.decompress(f.read()), cwd=root,
                       check=True)
    with open(os.path.join(root, "etc/ka/test-cmdline"), "w") as f:
        f.write("BOOT_IMAGE=/ka/vmlinuz initrd=initrd.img console=ttyS0 ka.retries=2\n")
    mac = lab.run(1, ["cat", "/sys/class/net/eth0/address"]).stdout.strip()

    serve = start_serve(lab, state, os.path.join(workdir, "serve.log"))
    try:
        # New PID and mount namespaces: /init is PID 1 there, its mounts vanish with it, and
        # even a real `reboot -f` would only end the namespace.
        node = lab.run(1, ["unshare", "--pid", "--mount", "--fork", "--kill-child", "chroot",
                           root, "/init"],
                       env={"KA_REBOOT": "echo REBOOT", "KA_RETRY_DELAY": "0",
                            "KA_GIVE_UP_DELAY": "0", "KA_FIND_TIMEOUT": "2",
                            "KA_CMDLINE_FILE": "/etc/ka/test-cmdline"},
                       check=False, timeout=180)
    finally:
        stop(serve)
    lines = node.stdout.splitlines()
    leased = [line for line in lines if line.startswith("ka: eth0 is ")]
    assert leased, node.stdout + node.stderr
    address = leased[0].split()[3].rstrip(",")
    assert address.startswith(f"{net}.") and 100 <= int(address.rsplit(".", 1)[1]) <= 150
    assert leased[0] == f"ka: eth0 is {address}, boot server {golden}, name {mac}"
    attempts = [line for line in lines if line.startswith("ka: receiving stage2")]
    assert attempts == ["ka: receiving stage2 through the chain (attempt 1 of 2)",
                        "ka: receiving stage2 through the chain (attempt 2 of 2)"], node.stdout
    failures = [line for line in lines if "was not received or was refused" in line]
    assert len(failures) == 2, node.stdout
    assert all(f.endswith("(ka exit status 10)") for f in failures), "10: sender not found"
    assert not any("install attempt" in line for line in lines), "no install without stage2"
    assert lines[-3:] == ["ka: !!! could not receive stage2 after 2 attempts !!!",
                          "ka: rebooting in 0 seconds", "REBOOT"]
    assert node.returncode == 1


def test_proxy_dhcp_serves_tftp_beside_another_dhcp_server(
        lab: LabNetwork, workdir: str, ka_boot: Callable[[list[str]], int]) -> None:
    """Proxy mode hands out no addresses; dnsmasq starts with it and still serves TFTP."""
    golden = lab.hosts[0].address
    subnet = golden.rsplit(".", 1)[0] + ".0/24"
    state = os.path.join(workdir, "proxy")
    assert ka_boot(["pxe", "config", "--interface", "eth0", "--proxy-dhcp", subnet,
                    "--dir", state, "--uefi", "ipxe"]) == 0
    serve = start_serve(lab, state, os.path.join(workdir, "proxy.log"))
    try:
        got = tftp_get(lab, golden, "ipxe/snponly.efi", os.path.join(workdir, "snp.efi"))
        with open("/usr/lib/ipxe/snponly.efi", "rb") as f:
            assert got == f.read()
    finally:
        assert stop(serve) == 0
    with open(os.path.join(workdir, "proxy.log")) as f:
        assert "proxy on subnet" in f.read()
