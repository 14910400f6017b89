"""`ka clone` to three `ka install` nodes on 127.0.0.1, each onto its own loop disk (root only).

Two disks are large enough and must become verified clones; the third is too small: that node
must fail with the reason, stay in the chain as a relay, and hand its report over.

The golden disk is a small GPT loop disk (ext4 /, swap, ext4 /srv) probed by `ka clone`
itself; the swap partition goes raw (--raw), /tmp is excluded, and --pxe switches the nodes
that installed to local boot in a `ka pxe` state directory; the nodes are found with --host.
Everything made here (loops, mounts, processes) is removed at the end, also when an assertion
fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from ka.run import run
from needs import need

from .support import end_all, free_port, start_ka, wait_all

if TYPE_CHECKING:
    from ka.boot.pxe import PxeConfig

pytestmark = pytest.mark.root

MiB = 1024 * 1024
GOLDEN_DESC = (
    "label gpt\n"
    "linux 120MiB fs=ext4 mount=/ label=groot\n"
    "swap 8MiB\n"
    "linux fill fs=ext4 mount=/srv label=gsrv\n"
)
TIMEOUT = 120
# vfs_cap_data revision 2, effective, permitted = CAP_NET_RAW (13): a file capability.
CAP_NET_RAW = struct.pack("<5I", 0x02000001, 1 << 13, 0, 0, 0)


def _read(dev: str, size: int) -> bytes:
    with open(dev, "rb") as f:
        return f.read(size)


def _blkid(dev: str, tag: str) -> str:
    return run(["blkid", "-p", "-o", "value", "-s", tag, dev]).stdout.strip()


@contextlib.contextmanager
def _mounted(dev: str, path: Path, ro: bool = False) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    run(["mount", *(["-o", "ro"] if ro else []), dev, str(path)])
    try:
        yield path
    finally:
        run(["umount", str(path)], check=False)


def _populate(root: Path, srv: Path, golden_dev: str) -> None:
    from ka.disk import partition_device

    (root / "etc/ssh").mkdir(parents=True)
    (root / "boot/grub").mkdir(parents=True)
    (root / "var/lib/dhcp").mkdir(parents=True)
    (root / "usr/share/doc").mkdir(parents=True)
    (root / "tmp").mkdir()
    os.chmod(root / "tmp", 0o1777)
    (root / "tmp/junk").write_text("must not be copied")
    for i in range(200):
        (root / "usr/share/doc" / f"f{i:03d}.txt").write_text(f"file {i}\n" * (i + 1))
    (root / "usr/share/doc/naïve ✓.txt").write_text("non-ASCII name\n")
    big = root / "usr/big.bin"
    big.write_bytes(os.urandom(3 * MiB))
    os.link(big, root / "usr/big.hardlink")
    os.symlink("big.bin", root / "usr/big.symlink")
    sparse = root / "usr/sparse.img"
    with open(sparse, "wb") as f:
        f.seek(20 * MiB)
        f.write(b"end")
    os.mkfifo(root / "usr/fifo")
    os.mknod(root / "usr/null", 0o666 | 0o020000, os.makedev(1, 3))
    suid = root / "usr/suid"
    suid.write_text("#!/bin/sh\n")
    os.chown(suid, 0, 0)
    os.chmod(suid, 0o4755)
    os.setxattr(big, "user.ka.test", b"golden-xattr")
    ping = root / "usr/ping"
    ping.write_text("#!/bin/sh\n")
    os.setxattr(ping, "security.capability", CAP_NET_RAW)
    os.chown(root / "usr/share/doc/f001.txt", 1234, 5678)
    (root / "etc/hostname").write_text("golden\n")
    (root / "etc/hosts").write_text("127.0.0.1\tlocalhost\n127.0.1.1\tgolden\n")
    (root / "etc/machine-id").write_text("0123456789abcdef0123456789abcdef\n")
    (root / "var/lib/dhcp/dhclient.eth0.leases").write_text("lease {}\n")
    subprocess.run([need("ssh-keygen", "openssh-client"), "-q", "-t", "ed25519", "-N", "", "-f",
                    str(root / "etc/ssh/ssh_host_ed25519_key")], check=True)
    root_uuid = _blkid(partition_device(golden_dev, 1), "UUID")
    swap_uuid = _blkid(partition_device(golden_dev, 2), "UUID")
    (root / "etc/fstab").write_text(
        "# golden fstab\n"
        f"UUID={root_uuid} / ext4 errors=remount-ro 0 1\n"
        f"UUID={swap_uuid} none swap sw 0 0\n"
        "LABEL=gsrv /srv ext4 defaults 0 2\n"
        "tmpfs /run/shm tmpfs defaults 0 0\n"
    )
    (root / "boot/grub/grub.cfg").write_text(
        f"search --no-floppy --fs-uuid --set=root {root_uuid}\n"
        f"linux /vmlinuz root=UUID={root_uuid} ro\n"
    )
    (srv / "data.txt").write_text("on /srv\n")
    run([need("setfacl", "acl"), "-m", "u:4321:r", str(srv / "data.txt")])


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[dict[str, object]]:
    from ka.disk import LoopDevice, apply_plan, parse_desc, plan_layout, unmount_tree

    procs: list[subprocess.Popen[bytes]] = []
    with contextlib.ExitStack() as stack:
        images = {}
        for name, size in (("golden", 200 * MiB), ("n1", 256 * MiB), ("n2", 200 * MiB),
                           ("n3", 64 * MiB)):
            img = tmp_path / f"{name}.img"
            with open(img, "wb") as f:
                f.truncate(size)
            images[name] = stack.enter_context(LoopDevice(img))
        golden = images["golden"].device
        mnt = tmp_path / "golden"
        mnt.mkdir()
        stack.callback(unmount_tree, str(mnt))
        apply_plan(plan_layout(parse_desc(GOLDEN_DESC), 200 * MiB), golden, target=str(mnt))
        _populate(mnt, mnt / "srv", golden)
        targets = [tmp_path / "t1", tmp_path / "t2", tmp_path / "t3"]
        for t in targets:
            t.mkdir()
            stack.callback(lambda t=t: unmount_tree(str(t)) if t.exists() else None)

        stack.callback(end_all, procs)
        yield {"golden": golden, "mnt": mnt,
               "nodes": [images["n1"].device, images["n2"].device, images["n3"].device],
               "targets": targets, "procs": procs, "tmp": tmp_path}


PXE_MACS = {f"node{i:02d}": f"52:54:00:00:00:0{i}" for i in (1, 2, 3)}


def _pxe_state(state: Path) -> PxeConfig:
    """A `ka pxe` state directory (menus only, no loader files) whose table names the nodes."""
    from ka.boot.cmdline import BootOptions
    from ka.boot.nodes import NodeEntry
    from ka.boot.pxe import PxeConfig, menu_files
    from ka.boot.state import save_state, write_text

    config = PxeConfig(interface="lo", state_dir=str(state), tftp_root=str(state / "tftp"),
                       range=("10.9.0.100", "10.9.0.199"), bios="pxelinux", uefi="none",
                       boot=BootOptions(host="127.0.0.1"),
                       nodes=tuple(NodeEntry(mac, None, name) for name, mac in PXE_MACS.items()))
    for f in menu_files(config, "ka", None):
        write_text(os.path.join(config.tftp_root, f.target), f.text)
    save_state(config)
    return config


def test_clone_on_loopback_with_a_too_small_node(rig: dict[str, object]) -> None:
    tmp: Path = rig["tmp"]  # type: ignore[assignment]
    golden: str = rig["golden"]  # type: ignore[assignment]
    mnt: Path = rig["mnt"]  # type: ignore[assignment]
    nodes: list[str] = rig["nodes"]  # type: ignore[assignment]
    targets: list[Path] = rig["targets"]  # type: ignore[assignment]
    procs: list[subprocess.Popen[bytes]] = rig["procs"]  # type: ignore[assignment]
    port = free_port()
    drive = os.path.basename(golden)
    status_port = free_port()
    key = tmp / "session.key"
    key.write_bytes(os.urandom(32))
    keyed = ["--key-file", str(key)]
    installs = [
        start_ka(["install", "--host", "127.0.0.1", "--port", str(port), "--disk", f"{drive}={dev}",
             "--target", str(t), "--find-timeout", "30",
             "--status-port", str(status_port if i == 1 else 0), *keyed],
            tmp / f"node{i}.log", procs)
        for i, (dev, t) in enumerate(zip(nodes, targets, strict=True), 1)
    ]
    watcher = start_ka(["console", f"127.0.0.1:{status_port}", "--connect-timeout", "30", *keyed],
                  tmp / "console.log", procs)
    logs = tmp / "logs"
    pxe = _pxe_state(tmp / "pxe")
    clone = start_ka(["clone", "--nodes", "3", "--root", str(mnt), "--port", str(port),
                 "--bind", "127.0.0.1", "--hostnames", "node{n:02d}", "--exclude", "/tmp",
                 "--logs", str(logs), "--session-prefix", "t", "--join-timeout", "60",
                 "--compress", "zstd", "--pxe", pxe.state_dir, "--raw", f"{drive}:2",
                 *keyed],
                tmp / "golden.log", procs)
    wait_all([clone, *installs, watcher], TIMEOUT)
    names = ("golden", "node1", "node2", "node3")
    texts = {name: (tmp / f"{name}.log").read_text() for name in names}
    assert clone.returncode == 1, texts  # one node failed
    # 21: no local disk for the golden disk (the exit-status table of ka.errors).
    assert [p.returncode for p in installs] == [0, 0, 21], texts
    assert "too small" in texts["node3"].splitlines()[-1], texts["node3"]
    # The console followed node 1's install log live until the node ended it.
    watched = (tmp / "console.log").read_text()
    assert watcher.returncode == 0, watched
    assert "receive plan: ok" in watched and "sync and unmount: ok" in watched

    from ka.disk import ensure_partition_nodes, partition_device

    golden_files = mnt / "usr"
    machine_ids = set()
    hostnames = set()
    for i, dev in enumerate(nodes[:2], 1):
        check = tmp / f"check{i}"
        ensure_partition_nodes(dev)  # /dev is shared: a node name may be stale (no udev)
        root_dev, swap_dev, srv_dev = (partition_device(dev, n) for n in (1, 2, 3))
        # Read-write: a namespace made meanwhile by a concurrent `ip netns exec` may still
        # hold a copy of the install's mount, and a read-only mount of a superblock mounted
        # read-write elsewhere is refused.
        with _mounted(root_dev, check) as root, _mounted(srv_dev, check / "srv") as srv:
            # content and metadata
            assert (root / "usr/big.bin").read_bytes() == (golden_files / "big.bin").read_bytes()
            assert os.stat(root / "usr/big.bin").st_ino == os.stat(root / "usr/big.hardlink").st_ino
            assert os.readlink(root / "usr/big.symlink") == "big.bin"
            assert os.getxattr(root / "usr/big.bin", "user.ka.test") == b"golden-xattr"
            assert os.stat(root / "usr/null").st_rdev == os.makedev(1, 3)
            assert stat.S_ISFIFO(os.stat(root / "usr/fifo").st_mode)
            assert os.getxattr(root / "usr/ping", "security.capability") == CAP_NET_RAW
            assert os.stat(root / "usr/suid").st_mode & 0o7777 == 0o4755
            st = os.stat(root / "usr/share/doc/f001.txt")
            assert (st.st_uid, st.st_gid) == (1234, 5678)
            assert (root / "usr/share/doc/naïve ✓.txt").exists()
            assert os.stat(root / "usr/sparse.img").st_blocks * 512 < 1 * MiB
            assert len(list((root / "usr/share/doc").iterdir())) == 201
            assert (srv / "data.txt").read_text() == "on /srv\n"
            acl = run([need("getfacl", "acl"), "-n", str(srv / "data.txt")]).stdout
            assert "user:4321:r--" in acl
            # excluded /tmp: re-created empty with its mode
            assert list((root / "tmp").iterdir()) == []
            assert os.stat(root / "tmp").st_mode & 0o7777 == 0o1777
            # fstab follows the node's own UUIDs; every line kept
            fstab = (root / "etc/fstab").read_text()
            assert f"UUID={_blkid(root_dev, 'UUID')} / ext4" in fstab
            assert f"UUID={_blkid(swap_dev, 'UUID')} none swap" in fstab
            assert "LABEL=gsrv /srv" in fstab and "tmpfs /run/shm" in fstab
            assert fstab.startswith("# golden fstab\n")
            assert _blkid(root_dev, "UUID") != _blkid(partition_device(golden, 1), "UUID")
            # --raw DRIVE:2: the swap partition came byte for byte, its identity with it
            assert _read(swap_dev, 8 * MiB) == _read(partition_device(golden, 2), 8 * MiB)
            grub = (root / "boot/grub/grub.cfg").read_text()
            assert f"root=UUID={_blkid(root_dev, 'UUID')}" in grub
            # identity
            machine_ids.add((root / "etc/machine-id").read_text().strip())
            hostnames.add((root / "etc/hostname").read_text().strip())
            assert not (root / "var/lib/dhcp/dhclient.eth0.leases").exists()
            assert (root / "etc/ssh/ssh_host_ed25519_key").read_bytes() != (
                mnt / "etc/ssh/ssh_host_ed25519_key").read_bytes()
            report = json.loads((root / "var/log/ka-install.json").read_text())
            assert report["result"] == "ok"
    assert len(machine_ids) == 2 and "0123456789abcdef0123456789abcdef" not in machine_ids
    assert len(hostnames) == 2 and hostnames < {"node01", "node02", "node03"}
    stored = sorted(p.name for p in (logs / "t").iterdir())
    assert stored == ["node01.json", "node02.json", "node03.json", "summary.json"]
    results = {json.loads((logs / "t" / f"{n}.json").read_text())["result"]
               for n in ("node01", "node02", "node03")}
    assert sorted(results) == ["failed", "ok"]
    summary = json.loads((logs / "t/summary.json").read_text())
    failed = [n for n in summary["nodes"] if n["result"] == "failed"]
    assert len(failed) == 1 and "too small" in failed[0]["reason"]
    assert failed[0]["name"] not in hostnames
    for t in targets:
        assert not os.path.ismount(t)
    # --pxe: on 127.0.0.1 the nodes report no MAC (loopback), so the node table matched
    # them by name; the two that installed boot their disk next, the failed one stays on ka.
    from ka.boot.switch import boot_states

    assert boot_states(pxe) == {PXE_MACS[name]: "local" for name in hostnames}
    assert summary["before_release"]["failed_on_ka"] == [failed[0]["name"]]
    assert "matched by node table, by its name" in texts["golden"]
    shutil.rmtree(logs)
