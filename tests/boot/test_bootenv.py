"""`ka bootenv build` with a stand-in kernel and modules: the archive holds a working ka."""

from __future__ import annotations

import gzip
import lzma
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass

import pytest

from ka.boot import bootenv, init_script
from ka.boot.bootenv import BootEnvError, find_kernel, requirement_names
from ka.keys import new_key, read_golden_key, write_identity, write_key_file
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
    identity: str  # DIR with golden.key / golden.pub (the pinned identity)
    key: str


def standin_kernel(tmp: str) -> tuple[str, str]:
    """A kernel that is never booted and modules that are never loaded: a network driver
    (with a dependency) for stage1, a disk driver for stage2."""
    kernel = os.path.join(tmp, "vmlinuz-6.1.0-99-amd64")
    with open(kernel, "wb") as f:
        f.write(b"stand-in kernel")
    mods = os.path.join(tmp, "modules", "6.1.0-99-amd64")
    os.makedirs(os.path.join(mods, "kernel/drivers/net"))
    os.makedirs(os.path.join(mods, "kernel/drivers/block"))
    for rel in ("net/virtio_net", "net/net_failover", "block/virtio_blk"):
        with open(os.path.join(mods, f"kernel/drivers/{rel}.ko.xz"), "wb") as f:
            f.write(lzma.compress(f"\x7fELF {rel.split('/')[1]}".encode()))
    with open(os.path.join(mods, "modules.dep"), "w") as f:
        f.write("kernel/drivers/net/virtio_net.ko.xz: kernel/drivers/net/net_failover.ko.xz\n"
                "kernel/drivers/net/net_failover.ko.xz:\n"
                "kernel/drivers/block/virtio_blk.ko.xz:\n")
    with open(os.path.join(mods, "modules.builtin"), "w") as f:
        f.write("kernel/fs/ext4/ext4.ko\n")
    return kernel, mods


def _build(tmp: str, single: bool) -> Built:
    need("cpio", "cpio")
    need("busybox", "busybox-static")
    need("strip", "binutils")
    kernel, mods = standin_kernel(tmp)
    key = os.path.join(tmp, "key")
    write_key_file(key, new_key())
    identity = os.path.join(tmp, "identity")
    _private, public = write_identity(identity)
    output = os.path.join(tmp, "out")
    report = bootenv.build(output, kernel=kernel, modules_dir=mods, key_file=key,
                           golden_key=read_golden_key(str(public)), single=single)
    return Built(output, report, identity, key)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """Two stages, as `ka bootenv build` makes them by default."""
    return _build(os.fspath(tmp_path_factory.mktemp("bootenv")), single=False)


@pytest.fixture(scope="module")
def built_single(tmp_path_factory: pytest.TempPathFactory) -> Built:
    return _build(os.fspath(tmp_path_factory.mktemp("bootenv-single")), single=True)


def golden_pub(built: Built) -> str:
    with open(os.path.join(built.identity, "golden.pub")) as f:
        return f.read()


def unpack(data: bytes) -> bytes:
    return lzma.decompress(data) if data[:6] == b"\xfd7zXZ\x00" else gzip.decompress(data)


def archive(built: Built, name: str = "initrd.img") -> bytes:
    with open(os.path.join(built.output, name), "rb") as f:
        return unpack(f.read())


def member(built: Built, name: str, archive_name: str = "initrd.img") -> str:
    return subprocess.run([CPIO, "-i", "--quiet", "--to-stdout", name],
                          input=archive(built, archive_name),
                          capture_output=True, check=True).stdout.decode()


def listing(data: bytes) -> dict[str, str]:
    lines = subprocess.run([CPIO, "-itv", "--quiet"], input=data, capture_output=True,
                           check=True).stdout.decode().splitlines()
    return {line.split()[-1] if " -> " not in line else line.split()[-3]: line.split()[0]
            for line in lines}


@pytest.mark.slow  # builds a whole boot environment
def test_output_files(built: Built) -> None:
    with open(os.path.join(built.output, "vmlinuz"), "rb") as f:
        assert f.read() == b"stand-in kernel"
    mode = os.stat(os.path.join(built.output, "initrd.img")).st_mode
    assert stat.S_IMODE(mode) == 0o600, "it holds the key"
    assert stat.S_IMODE(os.stat(built.report.stage2 or "").st_mode) == 0o644, "it holds none"
    assert built.report.modules == ("kernel/drivers/net/net_failover.ko.xz",
                                    "kernel/drivers/net/virtio_net.ko.xz",
                                    "kernel/drivers/block/virtio_blk.ko.xz")
    assert "ext4" not in built.report.missing_modules, "built in"
    assert "e1000" in built.report.missing_modules
    assert built.report.stripped


@pytest.mark.slow
def test_stage1_is_small_and_holds_only_what_receiving_needs(built: Built) -> None:
    with open(os.path.join(built.output, "initrd.img"), "rb") as f:
        assert f.read(6) == b"\xfd7zXZ\x00", "xz: the kernel unpacks it, and it is smaller"
    assert built.report.initrd_bytes <= bootenv.STAGE1_TARGET_BYTES
    names = listing(archive(built))
    assert names["init"] == "-rwxr-xr-x"
    assert names["etc/ka/key"] == "-rw-------"
    assert names["etc/ka/golden.pub"] == "-rw-r--r--"  # public by design
    assert member(built, "etc/ka/golden.pub") == golden_pub(built)
    assert "etc/ka/stage2" in names, "the marker: /init fetches stage2"
    assert names["bin/busybox"].startswith("-rwx")
    assert names["bin/udhcpc"].startswith("l")
    assert names["usr/local/bin/ka"] == "-rwxr-xr-x"
    assert names["dev/console"].startswith("c")
    assert "usr/lib/ka/site/ka/transport/receiver.py" in names
    assert any(n.startswith("usr/lib/ka/site/blake3") for n in names)
    assert any(n.startswith("usr/lib/ka/site/cryptography") for n in names)
    # What only `ka install` needs comes with stage2.
    assert "usr/lib/ka/site/ka/clone/install.py" not in names
    assert not any(n.startswith("usr/lib/ka/site/rich") for n in names)
    tar = os.path.realpath(shutil.which("tar") or "").lstrip("/")
    assert tar not in names
    assert not any(n.endswith("/libcrypto.so.3") for n in names)
    assert member(built, "init") == init_script.INIT
    assert member(built, "etc/ka/modules") == (
        "/usr/lib/modules/6.1.0-99-amd64/kernel/drivers/net/net_failover.ko\n"
        "/usr/lib/modules/6.1.0-99-amd64/kernel/drivers/net/virtio_net.ko\n")
    assert member(built, "usr/lib/modules/6.1.0-99-amd64/kernel/drivers/net/virtio_net.ko") == (
        "\x7fELF virtio_net")


@pytest.mark.slow
def test_stage2_holds_the_rest_and_no_secret(built: Built) -> None:
    stage1 = listing(archive(built))
    stage2 = listing(archive(built, bootenv.STAGE2_NAME))
    files = {n for n, mode in stage2.items() if not mode.startswith("d")}
    assert not files & set(stage1), "nothing is sent twice"
    assert "usr/lib/ka/site/ka/clone/install.py" in stage2
    assert os.path.realpath(shutil.which("tar") or "").lstrip("/") in stage2
    assert any(n.startswith("usr/lib/ka/site/rich") for n in stage2)
    assert "etc/ka/key" not in stage2 and "etc/ka/golden.pub" not in stage2
    assert "init" not in stage2
    assert member(built, "etc/ka/modules.stage2", bootenv.STAGE2_NAME) == (
        "/usr/lib/modules/6.1.0-99-amd64/kernel/drivers/block/virtio_blk.ko\n")
    # The interpreter is stage1's: receiving stage2 needs it.
    python = os.path.realpath(sys.executable).lstrip("/")
    assert python in stage1


@pytest.mark.slow
def test_single_initramfs_holds_everything(built_single: Built) -> None:
    assert built_single.report.stage2 is None
    assert not os.path.exists(os.path.join(built_single.output, bootenv.STAGE2_NAME))
    names = listing(archive(built_single))
    assert "etc/ka/stage2" not in names, "no stage2 to wait for"
    assert "usr/lib/ka/site/ka/clone/install.py" in names
    assert "usr/lib/ka/site/ka/transport/receiver.py" in names
    assert member(built_single, "etc/ka/modules").splitlines()[-1].endswith("virtio_blk.ko")


def extract(data: bytes, root: str) -> None:
    os.makedirs(root, exist_ok=True)
    subprocess.run([CPIO, "-idmu", "--quiet"], input=data, cwd=root, check=True)


@pytest.fixture
def unpacked(built_single: Built, tmp_path: os.PathLike[str]) -> str:
    root = os.path.join(tmp_path, "root")
    extract(archive(built_single), root)
    return root


@pytest.fixture
def stage1_root(built: Built, tmp_path: os.PathLike[str]) -> str:
    root = os.path.join(tmp_path, "stage1")
    extract(archive(built), root)
    return root


def jail(root: str, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    # New network and PID namespaces: nothing run inside can reach this machine's network.
    return subprocess.run(["unshare", "--net", "--pid", "--fork", "chroot", root, *argv],
                          capture_output=True, text=True, timeout=timeout, check=False)


@pytest.mark.root
@pytest.mark.slow
def test_ka_runs_inside_the_initramfs(unpacked: str) -> None:
    """The Python closure is complete: ka and its native dependencies load in a chroot."""
    result = jail(unpacked, "/usr/local/bin/ka", "--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().startswith("ka ")
    result = jail(unpacked, "/usr/local/bin/ka", "install", "--help")
    assert result.returncode == 0 and "--session-prefix" in result.stdout, result.stderr
    result = jail(unpacked, "/bin/sh", "-c", '. /etc/ka/boot.sh; ka_fetch_key; '
                  'echo "$KA_KEY_FILE"; tar --version | head -1; mkfs.ext4 -V 2>&1 | head -1')
    lines = result.stdout.splitlines()
    assert lines[0] == "/etc/ka/key"
    assert lines[1].startswith("tar (GNU tar)")
    assert lines[2].startswith("mke2fs")
    py = bootenv.SITE
    result = jail(unpacked, "/bin/sh", "-c", f"PYTHONPATH={py} {built_python(unpacked)} -c "
                  "'import blake3, zstandard, rich; print(blake3.blake3(b\"\").hexdigest()[:8])'")
    assert result.stdout.strip() == "af1349b9", result.stderr


@pytest.mark.root
@pytest.mark.slow
def test_every_included_tool_finds_its_libraries(unpacked: str) -> None:
    tools = [t for t in (*bootenv.REQUIRED_TOOLS, *bootenv.OPTIONAL_TOOLS)
             if any(os.path.lexists(os.path.join(unpacked, d, t)) for d in ("usr/bin", "usr/sbin"))]
    assert {"tar", "sfdisk", "mount", "blkid", "mkfs.ext4"} <= set(tools)
    for tool in tools:
        result = jail(unpacked, "/bin/sh", "-c", f"{tool} --version </dev/null", timeout=30)
        assert "error while loading shared libraries" not in result.stderr, result.stderr
        assert "not found" not in result.stderr, (tool, result.stderr)


def built_python(root: str) -> str:
    with open(os.path.join(root, "usr/local/bin/ka")) as f:
        return f.read().split("exec ")[1].split()[0]


def two_stage(built: Built, root: str, stage2: str | None, identity: str | None = None,
              retries: int = 1, find_timeout: int = 20) -> str:
    """stage1's own ka_fetch_stage2 in a chroot of stage1, against `ka send` of `stage2`
    (signed with `identity`, default the pinned one), both alone on the loopback of a new
    network namespace; then whether `ka install` runs. Returns what they printed."""
    fetch = (". /etc/ka/boot.sh; mkdir -p /run/ka; KA_HOST=127.0.0.1; KA_KEY_FILE=/etc/ka/key;"
             f" KA_RETRIES={retries}; KA_RETRY_DELAY=0; KA_FIND_TIMEOUT={find_timeout};"
             " ka_fetch_stage2; echo \"fetch=$?\"; /usr/local/bin/ka install --help >/dev/null"
             " 2>&1; echo \"install=$?\"; ls /run/ka")
    sender = ""
    if stage2 is not None:
        sender = " ".join(shlex.quote(a) for a in [
            sys.executable, "-m", "ka", "send", "--input", stage2, "--nodes", "1",
            "--session", "ka-stage2", "--port", str(init_script.STAGE2_PORT), "--bind",
            "127.0.0.1", "--key-file", built.key, "--identity", identity or built.identity,
            "--wait-timeout", "40"]) + " >/dev/null 2>&1 &"
    script = (f"ip link set lo up; {sender} chroot {shlex.quote(root)} /bin/sh -c "
              f"{shlex.quote(fetch)}; wait; echo \"sender=$?\"")
    result = subprocess.run(["unshare", "--net", "--pid", "--fork", "sh", "-c", script],
                            capture_output=True, text=True, timeout=150, check=False)
    return result.stdout + result.stderr


@pytest.mark.root
@pytest.mark.slow
def test_stage1_receives_stage2_through_a_session_and_can_then_install(
        built: Built, stage1_root: str) -> None:
    before = jail(stage1_root, "/usr/local/bin/ka", "install", "--help")
    assert before.returncode != 0, "stage1 alone cannot install: that is stage2's part"
    out = two_stage(built, stage1_root, built.report.stage2)
    assert "ka: stage2 received and unpacked" in out, out
    assert "fetch=0" in out and "install=0" in out and "sender=0" in out, out
    assert not os.path.exists(os.path.join(stage1_root, "run/ka/stage2")), "removed once unpacked"
    assert not os.path.exists(os.path.join(stage1_root, "etc/ka/stage2"))


@pytest.mark.root
@pytest.mark.slow
def test_stage2_signed_by_another_golden_is_refused(built: Built, stage1_root: str,
                                                    tmp_path: os.PathLike[str]) -> None:
    other = os.path.join(tmp_path, "other")
    write_identity(other)
    out = two_stage(built, stage1_root, built.report.stage2, identity=other)
    assert "ka: stage2 was not received or was refused" in out, out
    assert "sign" in out.lower(), out  # ka receive's own reason, on the console
    assert "fetch=1" in out and "install=1" in out, out
    assert not os.path.exists(os.path.join(stage1_root, "usr/lib/ka/site/ka/clone/install.py"))


@pytest.mark.root
@pytest.mark.slow
def test_a_truncated_stage2_is_not_unpacked(built: Built, stage1_root: str,
                                            tmp_path: os.PathLike[str]) -> None:
    cut = os.path.join(tmp_path, "cut.cpio.gz")
    with open(built.report.stage2 or "", "rb") as f:
        data = f.read()
    with open(cut, "wb") as f:
        f.write(data[: len(data) // 2])
    out = two_stage(built, stage1_root, cut)
    assert "ka: stage2 could not be unpacked" in out, out
    assert "fetch=1" in out and "install=1" in out, out


@pytest.mark.root
@pytest.mark.slow
def test_no_stage2_session_retries_then_gives_up(built: Built, stage1_root: str) -> None:
    out = two_stage(built, stage1_root, None, retries=2, find_timeout=2)
    attempts = [line for line in out.splitlines() if "receiving stage2" in line]
    assert attempts == ["ka: receiving stage2 through the chain (attempt 1 of 2)",
                        "ka: receiving stage2 through the chain (attempt 2 of 2)"], out
    assert out.count("ka: stage2 was not received or was refused") == 2, out
    assert "fetch=1" in out, out


@pytest.mark.root
@pytest.mark.slow
def test_stage1_imports_ka_receive_from_its_bytecode_without_compiling(stage1_root: str) -> None:
    # A node unpacks stage1 afresh at each boot: without bytecode in the archive its Python
    # compiles every module `ka receive` imports, each time (PYTHONDONTWRITEBYTECODE or not).
    site = bootenv.SITE
    result = jail(stage1_root, "/bin/sh", "-c",
                  f"PYTHONDONTWRITEBYTECODE=1 PYTHONPATH={site} {built_python(stage1_root)} -v "
                  "-c 'import ka.transport.receiver, ka.transport.endpoints'")
    assert result.returncode == 0, result.stderr[-2000:]
    tag = sys.implementation.cache_tag
    loaded = re.findall(r"# code object from '?([^' ]+\.pyc)", result.stderr)
    assert f"{site}/ka/transport/__pycache__/receiver.{tag}.pyc" in loaded
    assert any("/lib/python3." in p and "/site/" not in p for p in loaded), "the stdlib too"
    # No module of ka or the standard library was compiled from its source on the node.
    compiled = [line for line in result.stderr.splitlines()
                if line.startswith("# code object from") and line.rstrip("'").endswith(".py")]
    assert not compiled, compiled[:5]
