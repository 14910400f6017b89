"""A node installed by the boot environment, in two stages: its /init (PID 1 of a new PID
namespace, chrooted into the built stage1, in a lab node's network namespace) gets a lease from
`ka pxe serve`, receives stage2 from `ka clone` in the session ka-stage2 (signed by the golden
identity pinned in stage1, with the key baked into it), unpacks it, then joins `ka clone` at the
DHCP next-server, installs a loop disk with the boot environment's own Python and disk tools,
and reboots."""

from __future__ import annotations

import contextlib
import lzma
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from test_pxe_lab import start_serve, stop  # tests/boot is on sys.path (no __init__.py)

from ka.keys import write_identity
from ka.lab.disks import (
    attached_image,
    expected_partitions,
    fill_esp,
    format_golden,
    fstab_entries,
    golden_desc,
    mounted_tree,
)
from ka.lab.golden import GoldenSpec, build_tree, write_fstab
from ka.lab.network import LabNetwork
from ka.run import run
from needs import need

pytestmark = [pytest.mark.lab, pytest.mark.slow, pytest.mark.timeout(600)]  # ka clone: 300 s
MiB = 1024 * 1024
SIZE = 640 * MiB


@pytest.fixture
def workdir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="ka-bootenv-install-", dir="/var/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_boot_environment_installs_a_node(workdir: Path,
                                          ka_boot: Callable[[list[str]], int]) -> None:
    need("busybox", "busybox-static")
    need("/usr/lib/PXELINUX/pxelinux.0", "pxelinux")
    desc = golden_desc(SIZE)
    (workdir / "golden.desc").write_text(desc)
    key = workdir / "session.key"
    key.write_bytes(os.urandom(32))
    key.chmod(0o600)
    kernel = workdir / "vmlinuz-stand-in"
    kernel.write_bytes(b"not booted in this test")
    env_dir = workdir / "env"
    _private, golden_pub = write_identity(str(workdir / "identity"))
    assert ka_boot(["bootenv", "build", "--output", str(env_dir), "--kernel", str(kernel),
                    "--key-file", str(key), "--golden-key", str(golden_pub)]) == 0
    root = workdir / "root"
    root.mkdir()
    subprocess.run(["cpio", "-idm", "--quiet"],
                   input=lzma.decompress((env_dir / "initrd.img").read_bytes()), cwd=root,
                   check=True)
    assert not (root / "usr/lib/ka/site/ka/clone/install.py").exists(), "stage1 only"

    with contextlib.ExitStack() as stack:
        expected = expected_partitions(desc, SIZE)
        golden = stack.enter_context(attached_image(workdir / "golden.img", SIZE))
        format_golden(golden, desc)
        tree = stack.enter_context(mounted_tree(golden, expected, workdir / "golden",
                                                read_only=False))
        build_tree(tree, GoldenSpec(data_bytes=2 * MiB, small_files=100))
        esp = next(p for p in expected if p.fstype == "vfat")
        fill_esp(golden.partition(esp.number))
        write_fstab(tree, fstab_entries(golden, expected))
        os.sync()
        node_disk = stack.enter_context(attached_image(workdir / "node1.img", SIZE))
        drive = os.path.basename(golden.device)
        (root / "etc/ka/test-cmdline").write_text(
            f"console=ttyS0 ka.retries=1 ka.disk={drive}={node_disk.device}\n")

        lab = stack.enter_context(LabNetwork(nodes=1))
        net = lab.hosts[0].address.rsplit(".", 1)[0]
        state = str(workdir / "pxe")
        assert ka_boot(["pxe", "config", "--interface", "eth0", "--range",
                        f"{net}.100,{net}.150", "--dir", state, "--bootenv", str(env_dir)]) == 0
        serve = start_serve(lab, state, str(workdir / "serve.log"))
        stack.callback(stop, serve)
        node_log = open(workdir / "node.log", "wb")
        stack.callback(node_log.close)
        node = lab.spawn(1, ["unshare", "--pid", "--mount", "--fork", "--kill-child", "chroot",
                             str(root), "/init"],
                         env={"KA_REBOOT": "echo REBOOT", "KA_RETRY_DELAY": "0",
                              "KA_GIVE_UP_DELAY": "0", "KA_FIND_TIMEOUT": "60",
                              "KA_CMDLINE_FILE": "/etc/ka/test-cmdline"},
                         stdout=node_log, stderr=subprocess.STDOUT)
        stack.callback(lambda: node.poll() is None and node.kill())
        clone = subprocess.run(lab.argv(0, [
            sys.executable, "-m", "ka", "clone", "--nodes", "1", "--root", str(tree),
            "--desc", f"{drive}={workdir / 'golden.desc'}", "--hostnames", "node{n:02d}",
            "--logs", str(workdir / "logs"), "--join-timeout", "90",
            "--key-file", str(key), "--identity", str(workdir / "identity"),
            "--stage2", os.path.join(state, "tftp", "ka", "stage2.cpio.gz"),
            "--raw", golden.partition(esp.number)]),
            capture_output=True, text=True, timeout=300, check=False)
        status = node.wait(timeout=120)
        log = (workdir / "node.log").read_text(errors="replace")
        assert clone.returncode == 0, clone.stdout + clone.stderr + log
        assert status == 0, log
        lines = [line for line in log.splitlines() if line.startswith(("ka: ", "REBOOT"))]
        assert lines[-2:] == ["ka: install succeeded; rebooting", "REBOOT"], log
        assert "ka: install attempt 1 of 1" in lines
        assert lines.index("ka: stage2 received and unpacked") < lines.index(
            "ka: install attempt 1 of 1"), log
        assert "stage2: 1 node(s) received it in 1 session(s)" in clone.stderr, clone.stderr
        labels = run(["blkid", "-p", "-s", "LABEL", "-o", "value",
                      node_disk.partition(2)], check=False).stdout.strip()
        assert labels == "root"
