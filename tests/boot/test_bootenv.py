"""`ka bootenv build` with a stand-in kernel and modules: the archive holds a working ka."""

from __future__ import annotations

import gzip
import lzma
import os
import shutil
import stat
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from ka.boot import bootenv, init_script
from ka.boot.bootenv import BootEnvError, find_kernel, requirement_names
from needs import need

CPIO = shutil.which("cpio") or "cpio"


def test_find_kernel_takes_newest_with_modules(tmp_path: os.PathLike[str]) -> None:
    boot, mods = os.path.join(tmp_path, "boot"), os.path.join(tmp_path, "modules")
    for version, with_modules in (("6.1.0-9-amd64", True), ("6.1.0-10-amd64", True),
                                  ("6.12.0-1-amd64", False)):
        os.makedirs(boot, exist_ok=True)
        open(os.path.join(boot, f"vmlinuz-{version}"), "w").close()
        if with_modules:
            os.makedirs(os.path.join(mods, version))
    assert find_kernel(boot, mods) == (os.path.join(boot, "vmlinuz-6.1.0-10-amd64"),
                                       os.path.join(mods, "6.1.0-10-amd64"))


def test_no_kernel_names_the_package(tmp_path: os.PathLike[str]) -> None:
    with pytest.raises(BootEnvError) as info:
        find_kernel(os.fspath(tmp_path), os.fspath(tmp_path))
    assert "linux-image-amd64" in str(info.value.hint)


def test_requirement_names_leave_out_extras() -> None:
    assert requirement_names(["blake3>=0.4", "rich (>=13)", "pytest>=8; extra == 'test'",
                              "typing-extensions>=4; python_version < '3.11'"]) == [
        "blake3", "rich", "typing-extensions"]


@dataclass(frozen=True)
class Built:
    output: str
    report: bootenv.BootEnvReport


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    need("cpio", "cpio")
    need("busybox", "busybox-static")
    tmp = tmp_path_factory.mktemp("bootenv")
    kernel = os.path.join(tmp, "vmlinuz-6.1.0-99-amd64")
    with open(kernel, "wb") as f:
        f.write(b"stand-in kernel")
    mods = os.path.join(tmp, "modules", "6.1.0-99-amd64")
    os.makedirs(os.path.join(mods, "kernel/drivers/net"))
    for name in ("virtio_net", "net_failover"):
        with open(os.path.join(mods, f"kernel/drivers/net/{name}.ko.xz"), "wb") as f:
            f.write(lzma.compress(f"\x7fELF {name}".encode()))
    with open(os.path.join(mods, "modules.dep"), "w") as f:
        f.write("kernel/drivers/net/virtio_net.ko.xz: kernel/drivers/net/net_failover.ko.xz\n"
                "kernel/drivers/net/net_failover.ko.xz:\n")
    with open(os.path.join(mods, "modules.builtin"), "w") as f:
        f.write("kernel/fs/ext4/ext4.ko\n")
    key = os.path.join(tmp, "key")
    with open(key, "wb") as f:
        f.write(os.urandom(32))
    output = os.path.join(tmp, "out")
    report = bootenv.build(output, kernel=kernel, modules_dir=mods, key_file=key,
                           golden_key=GOLDEN_PUB)
    yield Built(output, report)


GOLDEN_PUB = bytes(range(32))


def archive(built: Built) -> bytes:
    with gzip.open(os.path.join(built.output, "initrd.img")) as f:
        return f.read()


def member(built: Built, name: str) -> str:
    return subprocess.run([CPIO, "-i", "--quiet", "--to-stdout", name], input=archive(built),
                          capture_output=True, check=True).stdout.decode()


@pytest.mark.slow  # builds a whole boot environment
def test_output_files(built: Built) -> None:
    with open(os.path.join(built.output, "vmlinuz"), "rb") as f:
        assert f.read() == b"stand-in kernel"
    mode = os.stat(os.path.join(built.output, "initrd.img")).st_mode
    assert stat.S_IMODE(mode) == 0o600, "it holds the key"
    assert built.report.modules == ("kernel/drivers/net/net_failover.ko.xz",
                                    "kernel/drivers/net/virtio_net.ko.xz")
    assert "ext4" not in built.report.missing_modules, "built in"
    assert "e1000" in built.report.missing_modules


@pytest.mark.slow
def test_archive_contents(built: Built) -> None:
    listing = subprocess.run([CPIO, "-itv", "--quiet"], input=archive(built),
                             capture_output=True, check=True).stdout.decode().splitlines()
    names = {line.split()[-1] if " -> " not in line else line.split()[-3]: line.split()[0]
             for line in listing}
    assert names["init"] == "-rwxr-xr-x"
    assert names["etc/ka/key"] == "-rw-------"
    assert names["etc/ka/golden.pub"] == "-rw-r--r--"  # public by design
    assert member(built, "etc/ka/golden.pub") == GOLDEN_PUB.hex() + "\n"
    assert names["bin/busybox"].startswith("-rwx")
    assert names["bin/udhcpc"].startswith("l")
    assert names["usr/local/bin/ka"] == "-rwxr-xr-x"
    assert names["dev/console"].startswith("c")
    assert "usr/lib/ka/site/ka/boot/bootenv.py" in names
    assert any(n.startswith("usr/lib/ka/site/blake3") for n in names)
    tar = os.path.realpath(shutil.which("tar") or "").lstrip("/")
    assert tar in names
    assert member(built, "init") == init_script.INIT
    assert member(built, "etc/ka/modules") == (
        "/usr/lib/modules/6.1.0-99-amd64/kernel/drivers/net/net_failover.ko\n"
        "/usr/lib/modules/6.1.0-99-amd64/kernel/drivers/net/virtio_net.ko\n")
    assert member(built, "usr/lib/modules/6.1.0-99-amd64/kernel/drivers/net/virtio_net.ko") == (
        "\x7fELF virtio_net")


@pytest.fixture
def unpacked(built: Built, tmp_path: os.PathLike[str]) -> str:
    root = os.path.join(tmp_path, "root")
    os.mkdir(root)
    subprocess.run([CPIO, "-idm", "--quiet"], input=archive(built), cwd=root, check=True)
    return root


@pytest.mark.root
@pytest.mark.slow
def test_ka_runs_inside_the_initramfs(unpacked: str) -> None:
    """The Python closure is complete: ka and its native dependencies load in a chroot."""
    def jail(*argv: str) -> subprocess.CompletedProcess[str]:
        # New network and PID namespaces: nothing run inside can reach this machine's network.
        return subprocess.run(["unshare", "--net", "--pid", "--fork", "chroot", unpacked, *argv],
                              capture_output=True, text=True, timeout=60, check=False)

    result = jail("/usr/local/bin/ka", "--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().startswith("ka ")
    result = jail("/usr/local/bin/ka", "install", "--help")
    assert result.returncode == 0 and "--session-prefix" in result.stdout, result.stderr
    result = jail("/bin/sh", "-c", '. /etc/ka/boot.sh; ka_fetch_key; echo "$KA_KEY_FILE"; '
                  'tar --version | head -1; mkfs.ext4 -V 2>&1 | head -1')
    lines = result.stdout.splitlines()
    assert lines[0] == "/etc/ka/key"
    assert lines[1].startswith("tar (GNU tar)")
    assert lines[2].startswith("mke2fs")
    py = bootenv.SITE
    result = jail("/bin/sh", "-c", f"PYTHONPATH={py} {built_python(unpacked)} -c "
                  "'import blake3, zstandard, rich; print(blake3.blake3(b\"\").hexdigest()[:8])'")
    assert result.stdout.strip() == "af1349b9", result.stderr


@pytest.mark.root
@pytest.mark.slow
def test_every_included_tool_finds_its_libraries(unpacked: str) -> None:
    tools = [t for t in (*bootenv.REQUIRED_TOOLS, *bootenv.OPTIONAL_TOOLS)
             if any(os.path.lexists(os.path.join(unpacked, d, t)) for d in ("usr/bin", "usr/sbin"))]
    assert {"tar", "sfdisk", "mount", "blkid", "mkfs.ext4"} <= set(tools)
    for tool in tools:
        result = subprocess.run(["unshare", "--net", "--pid", "--fork", "chroot", unpacked,
                                 "/bin/sh", "-c", f"{tool} --version </dev/null"],
                                capture_output=True, text=True, timeout=30, check=False)
        assert "error while loading shared libraries" not in result.stderr, result.stderr
        assert "not found" not in result.stderr, (tool, result.stderr)


def built_python(root: str) -> str:
    with open(os.path.join(root, "usr/local/bin/ka")) as f:
        return f.read().split("exec ")[1].split()[0]
