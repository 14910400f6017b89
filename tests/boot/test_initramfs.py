from __future__ import annotations

import gzip
import io
import lzma
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import zstandard

from ka.boot import kmodules
from ka.boot.bootenv import add_modules, kernel_config_of
from ka.boot.initramfs import FileTree, InitramfsError, parse_ldd, write_initramfs, write_newc
from needs import need

CPIO = shutil.which("cpio") or "cpio"
needs_cpio = pytest.mark.usefixtures("cpio")


@pytest.fixture
def cpio() -> None:
    need("cpio", "cpio")


def test_parents_come_first_and_kinds_cannot_clash() -> None:
    tree = FileTree()
    tree.text("/etc/ka/boot.sh", "x")
    tree.symlink("/lib", "usr/lib")
    paths = [e.path for e in tree.sorted_entries()]
    assert paths == ["/etc", "/etc/ka", "/etc/ka/boot.sh", "/lib"]
    with pytest.raises(InitramfsError, match="/lib is both a symlink and a dir"):
        tree.directory("/lib")


def test_add_host_path_keeps_symlinks(tmp_path: os.PathLike[str]) -> None:
    root = os.fspath(tmp_path)
    os.makedirs(f"{root}/usr/lib/x")
    with open(f"{root}/usr/lib/x/libz.so.1.3", "w") as f:
        f.write("lib")
    os.symlink("libz.so.1.3", f"{root}/usr/lib/x/libz.so.1")
    os.symlink("usr/lib", f"{root}/lib")
    tree = FileTree()
    tree.add_host_path(f"{root}/lib/x/libz.so.1")
    kinds = {e.path: (e.kind, e.target or e.source) for e in tree.sorted_entries()
             if e.path.startswith(root + "/")}
    assert kinds == {
        f"{root}/lib": ("symlink", "usr/lib"),
        f"{root}/usr": ("dir", None),
        f"{root}/usr/lib": ("dir", None),
        f"{root}/usr/lib/x": ("dir", None),
        f"{root}/usr/lib/x/libz.so.1": ("symlink", "libz.so.1.3"),
        f"{root}/usr/lib/x/libz.so.1.3": ("file", f"{root}/usr/lib/x/libz.so.1.3"),
    }


def small_tree(source: str) -> FileTree:
    tree = FileTree()
    tree.text("/init", "#!/bin/sh\necho hello\n", mode=0o755)
    tree.copy(source, "/usr/bin/tool")
    tree.symlink("/bin/sh", "busybox")
    tree.blob("/etc/ka/key", b"\x00\x01secret", mode=0o600)
    tree.char_device("/dev/console", 5, 1)
    return tree


@needs_cpio
def test_cpio_lists_what_was_written(tmp_path: os.PathLike[str]) -> None:
    source = os.path.join(tmp_path, "src")
    with open(source, "wb") as f:
        f.write(os.urandom(5000))
    buf = io.BytesIO()
    size = write_newc(small_tree(source).sorted_entries(), buf)
    assert size == len(buf.getvalue()) and size % 4 == 0
    listing = subprocess.run([CPIO, "-itv", "--quiet"], input=buf.getvalue(),
                             capture_output=True, check=True).stdout.decode().splitlines()
    modes_names = [(line.split()[0], line.split()[-1]) for line in listing]
    assert ("crw-------", "dev/console") in modes_names
    assert ("-rwxr-xr-x", "init") in modes_names
    assert ("-rw-------", "etc/ka/key") in modes_names
    assert any(line.startswith("lrwxrwxrwx") and line.endswith("bin/sh -> busybox")
               for line in listing)
    assert [n for _, n in modes_names] == sorted(n for _, n in modes_names)


@needs_cpio
def test_cpio_extracts_same_content(tmp_path: os.PathLike[str]) -> None:
    source = os.path.join(tmp_path, "src")
    with open(source, "wb") as f:
        f.write(os.urandom(70001))
    tree = small_tree(source)
    del tree.entries["/dev/console"]  # device nodes need root to extract
    image = os.path.join(tmp_path, "initrd.img")
    write_initramfs(tree, image)
    out = os.path.join(tmp_path, "out")
    os.mkdir(out)
    with gzip.open(image) as f:
        subprocess.run([CPIO, "-idm", "--quiet"], input=f.read(), cwd=out, check=True)
    with open(os.path.join(out, "usr/bin/tool"), "rb") as f, open(source, "rb") as g:
        assert f.read() == g.read()
    assert os.readlink(os.path.join(out, "bin/sh")) == "busybox"
    assert open(os.path.join(out, "init")).read() == "#!/bin/sh\necho hello\n"


def test_same_input_same_archive(tmp_path: os.PathLike[str]) -> None:
    source = os.path.join(tmp_path, "src")
    with open(source, "wb") as f:
        f.write(b"x" * 10)
    a, b = os.path.join(tmp_path, "a"), os.path.join(tmp_path, "b")
    write_initramfs(small_tree(source), a)
    write_initramfs(small_tree(source), b)
    assert open(a, "rb").read() == open(b, "rb").read()


LDD = """\
\tlinux-vdso.so.1 (0x00007ffd5a9f2000)
\tlibpython3.11.so.1.0 => /opt/py/lib/libpython3.11.so.1.0 (0x00007f0b7a600000)
\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f0b7a41e000)
\t/lib64/ld-linux-x86-64.so.2 (0x00007f0b7ad13000)
"""


def test_parse_ldd() -> None:
    assert parse_ldd(LDD) == {"/opt/py/lib/libpython3.11.so.1.0",
                              "/lib/x86_64-linux-gnu/libc.so.6", "/lib64/ld-linux-x86-64.so.2"}
    with pytest.raises(InitramfsError, match="libtk8.6.so was not found"):
        parse_ldd("\tlibtk8.6.so => not found\n")


MODULES_DEP = (
    "kernel/drivers/net/virtio_net.ko.xz: kernel/drivers/net/net_failover.ko.xz "
    "kernel/net/core/failover.ko.xz\n"
) + """\
kernel/drivers/net/net_failover.ko.xz: kernel/net/core/failover.ko.xz
kernel/net/core/failover.ko.xz:
kernel/fs/ext4/ext4.ko.xz: kernel/lib/crc16.ko.xz kernel/fs/mbcache.ko.xz kernel/fs/jbd2/jbd2.ko.xz
kernel/lib/crc16.ko.xz:
kernel/fs/mbcache.ko.xz:
kernel/fs/jbd2/jbd2.ko.xz:
kernel/drivers/block/virtio_blk.ko.zst:
"""


def test_modules_dependencies_first() -> None:
    dep = kmodules.parse_modules_dep(MODULES_DEP)
    selection = kmodules.select_modules(dep, ["kernel/drivers/ata/ahci.ko"],
                                        ["virtio_net", "ext4", "ahci", "virtio-blk", "nvme"])
    assert selection.paths == (
        "kernel/net/core/failover.ko.xz", "kernel/drivers/net/net_failover.ko.xz",
        "kernel/drivers/net/virtio_net.ko.xz", "kernel/lib/crc16.ko.xz",
        "kernel/fs/mbcache.ko.xz", "kernel/fs/jbd2/jbd2.ko.xz", "kernel/fs/ext4/ext4.ko.xz",
        "kernel/drivers/block/virtio_blk.ko.zst",
    )
    assert selection.missing == ("nvme",), "ahci is built in, nvme is nowhere"


@pytest.mark.parametrize("suffix, pack", [
    (".xz", lzma.compress), (".zst", lambda d: zstandard.ZstdCompressor().compress(d)),
    (".gz", gzip.compress), ("", lambda d: d)])
def test_modules_are_stored_decompressed(tmp_path: os.PathLike[str], suffix: str, pack) -> None:
    path = os.path.join(tmp_path, f"m.ko{suffix}")
    with open(path, "wb") as f:
        f.write(pack(b"\x7fELF module"))
    assert kmodules.read_module(path) == b"\x7fELF module"
    assert kmodules.stored_name(f"kernel/m.ko{suffix}") == "kernel/m.ko"


def test_the_kernels_default_fat_charsets_are_loaded(tmp_path: Path) -> None:
    # Without udev or modprobe, vfat mounts only if the code page and I/O charset that the
    # kernel defaults to were loaded by /init (Debian's kernel: 437 and ascii).
    config = ('CONFIG_FAT_DEFAULT_CODEPAGE=437\nCONFIG_FAT_DEFAULT_IOCHARSET="ascii"\n'
              "# CONFIG_NLS_ASCII is not set\n")
    assert kmodules.fat_charset_modules(config) == ("nls_cp437", "nls_ascii")
    assert kmodules.fat_charset_modules('CONFIG_FAT_DEFAULT_IOCHARSET="iso8859-15"') == (
        "nls_iso8859_15",)
    assert kmodules.fat_charset_modules("") == ()
    assert {"vfat", "nls_cp437", "nls_ascii"} <= set(kmodules.WANTED)
    # The crypto crc32c before what asks the crypto API for it when it loads.
    assert kmodules.WANTED.index("crc32c_generic") < kmodules.WANTED.index("btrfs")
    # The kernel's own .config is read beside it: a charset not in WANTED is added.
    (tmp_path / "vmlinuz-9.9").write_bytes(b"")
    (tmp_path / "config-9.9").write_text('CONFIG_FAT_DEFAULT_IOCHARSET="koi8-r"\n')
    assert kernel_config_of(str(tmp_path / "vmlinuz-9.9")) == str(tmp_path / "config-9.9")
    assert kernel_config_of(str(tmp_path / "bzImage")) is None
    modules = tmp_path / "modules"
    (modules / "kernel/fs/nls").mkdir(parents=True)
    (modules / "kernel/fs/nls/nls_koi8-r.ko").write_bytes(b"\x7fELF koi8")
    (modules / "modules.dep").write_text("kernel/fs/nls/nls_koi8-r.ko:\n")
    tree = FileTree()
    paths, _missing = add_modules(tree, str(modules), str(tmp_path / "config-9.9"))
    assert paths == ("kernel/fs/nls/nls_koi8-r.ko",)
