"""`ka bootenv build`: a kernel and an initramfs that install a blank node with ka.

Everything comes from this machine's installed packages: the kernel (linux-image-amd64, or the
one given) and its driver modules, busybox (busybox-static) for /init, the DHCP client and the
shell tools, the Python that runs ka with ka and its dependencies, and the disk tools that
`ka install` runs. One initramfs holds it all (no separate stage2 image): it is fetched once by
TFTP and nothing more has to be found before `ka install` starts.
"""

from __future__ import annotations

import os
import shutil
import sys
import sysconfig
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import metadata

from ka import run
from ka.boot import init_script, kmodules
from ka.boot.initramfs import FileTree, InitramfsError, parse_ldd, write_initramfs
from ka.errors import KaError, ToolMissingError
from ka.keys import encode_key, read_key_file

SITE = "/usr/lib/ka/site"  # ka and its Python dependencies, on PYTHONPATH of /usr/local/bin/ka
KA_WRAPPER = "/usr/local/bin/ka"
REQUIRED_TOOLS = ("tar", "sfdisk", "mount", "umount", "blkid")
OPTIONAL_TOOLS = (
    "wipefs", "lsblk", "findmnt", "losetup", "partx", "mkswap", "swaplabel",
    "mkfs.ext2", "mkfs.ext3", "mkfs.ext4", "tune2fs", "e2fsck",
    "mkfs.xfs", "xfs_admin", "mkfs.btrfs", "btrfstune", "mkfs.vfat", "fatlabel", "mcopy",
    "zstd", "ip", "setfattr", "getfattr", "setfacl", "getfacl", "setcap", "getcap",
)
CONFIG_FILES = ("/etc/mke2fs.conf", "/etc/ld.so.cache")
# glibc loads libgcc_s with dlopen (thread cancellation at Python's exit): ldd cannot see it.
DLOPENED_LIBS = ("libgcc_s.so.1",)
STDLIB_SKIP = {"test", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3", "pydoc_data",
               "__pycache__", "site-packages", "dist-packages", "unittest", "venv"}
MIN_STDLIB_FILES = 100


class BootEnvError(KaError):
    """The boot environment cannot be built on this machine."""


@dataclass(frozen=True)
class BootEnvReport:
    kernel: str  # the copied kernel's path in the output directory
    initrd: str
    initrd_bytes: int
    entries: int
    python: str
    modules: tuple[str, ...]
    missing_modules: tuple[str, ...]
    missing_tools: tuple[str, ...]


def find_kernel(boot_dir: str = "/boot", modules_root: str = "/lib/modules") -> tuple[str, str]:
    """The newest installed kernel that has its modules: (vmlinuz path, modules directory)."""
    found = []
    if os.path.isdir(boot_dir):
        for name in os.listdir(boot_dir):
            if name.startswith("vmlinuz-"):
                version = name[len("vmlinuz-"):]
                if os.path.isdir(os.path.join(modules_root, version)):
                    found.append((_version_key(version), version))
    if not found:
        raise BootEnvError("no installed Linux kernel with modules was found in /boot",
                           hint="install the Debian package 'linux-image-amd64', or give "
                                "--kernel PATH (and --modules DIR)")
    version = max(found)[1]
    return os.path.join(boot_dir, f"vmlinuz-{version}"), os.path.join(modules_root, version)


def _version_key(version: str) -> tuple[int | str, ...]:
    parts: list[int | str] = []
    for chunk in version.replace("-", ".").split("."):
        parts.append(int(chunk) if chunk.isdigit() else -1)
    return tuple(parts)


def modules_for(kernel: str, modules_root: str = "/lib/modules") -> str | None:
    """/lib/modules/VERSION for /boot/vmlinuz-VERSION, when it exists."""
    name = os.path.basename(kernel)
    if name.startswith("vmlinuz-"):
        path = os.path.join(modules_root, name[len("vmlinuz-"):])
        if os.path.isdir(path):
            return path
    return None


def kernel_config_of(kernel: str) -> str | None:
    """/boot/config-VERSION beside /boot/vmlinuz-VERSION (Debian ships it), when it exists."""
    name = os.path.basename(kernel)
    if not name.startswith("vmlinuz-"):
        return None
    path = os.path.join(os.path.dirname(kernel), "config-" + name[len("vmlinuz-"):])
    return path if os.path.isfile(path) else None


def add_base(tree: FileTree, key_file: str | None, golden_key: bytes | None = None) -> None:
    for d in ("/proc", "/sys", "/dev", "/run", "/tmp", "/mnt", "/root", "/var/tmp", "/etc/ka"):
        tree.directory(d)
    tree.char_device("/dev/console", 5, 1)
    tree.char_device("/dev/null", 1, 3, mode=0o666)
    tree.text("/init", init_script.INIT, mode=0o755)
    tree.text(init_script.BOOT_SH_PATH, init_script.BOOT_SH)
    tree.text(init_script.UDHCPC_SCRIPT_PATH, init_script.UDHCPC_SCRIPT, mode=0o755)
    tree.text("/etc/passwd", "root:x:0:0:root:/root:/bin/sh\n")
    tree.text("/etc/group", "root:x:0:\n")
    tree.text("/etc/hostname", "ka\n")
    if key_file is not None:
        # Read by the one key reader, so a key that `ka install` would refuse is refused
        # now, not on every node at boot.
        tree.blob(init_script.KEY_PATH, encode_key(read_key_file(key_file)), mode=0o600)
    if golden_key is not None:
        tree.blob(init_script.GOLDEN_KEY_PATH, encode_key(golden_key), mode=0o644)


def add_busybox(tree: FileTree) -> None:
    path = run.require("busybox")
    tree.copy(path, "/bin/busybox")
    applets = run.run([path, "--list"]).stdout.split()
    if "udhcpc" not in applets or "sh" not in applets:
        raise BootEnvError(f"{path} has no udhcpc or sh applet",
                           hint="install the Debian package 'busybox-static'")
    for applet in applets:
        if applet != "busybox":
            tree.symlink(f"/bin/{applet}", "busybox")


def add_python(tree: FileTree) -> tuple[str, list[str]]:
    """The running interpreter, its pruned standard library, ka and its dependencies.

    Returns the interpreter's path and the native files whose libraries must be added.
    """
    exe = os.path.realpath(sys.executable)
    stdlib = os.path.realpath(sysconfig.get_path("stdlib"))
    native = [exe]
    tree.add_host_path(exe)
    count = 0
    for root, dirs, files in os.walk(stdlib):
        dirs[:] = sorted(d for d in dirs if d not in STDLIB_SKIP and not d.startswith("config-"))
        for name in sorted(files):
            if name.startswith("_tkinter") or name.endswith((".pyc", ".a")):
                continue
            path = os.path.join(root, name)
            if not os.path.isfile(path):
                continue
            tree.copy(path)
            count += 1
            if name.endswith(".so"):
                native.append(path)
    if count < MIN_STDLIB_FILES:
        raise BootEnvError(f"the standard library of {exe} was not found in {stdlib}")
    native += add_site_packages(tree)
    tree.text(KA_WRAPPER, f'#!/bin/sh\nPYTHONPATH={SITE} exec {exe} -m ka "$@"\n', mode=0o755)
    return exe, native


def requirement_names(requires: Iterable[str] | None) -> list[str]:
    """Distribution names of runtime requirements; extras (tests, docs) are left out."""
    names = []
    for req in requires or ():
        spec, _, marker = req.partition(";")
        if "extra" in marker:
            continue
        name = spec.strip()
        for stop in "<>=!~[( ":
            name = name.split(stop)[0]
        if name:
            names.append(name)
    return names


def add_site_packages(tree: FileTree) -> list[str]:
    import ka

    native: list[str] = []
    ka_dir = os.path.dirname(os.path.realpath(ka.__file__))
    for root, dirs, files in os.walk(ka_dir):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(files):
            rel = os.path.relpath(os.path.join(root, name), ka_dir)
            tree.copy(os.path.join(root, name), os.path.join(SITE, "ka", rel))
    todo = requirement_names(metadata.distribution("ka").requires)
    done: set[str] = set()
    while todo:
        name = todo.pop()
        key = name.lower().replace("_", "-")
        if key in done:
            continue
        done.add(key)
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # a requirement for another Python version or platform
        base = os.path.realpath(str(dist.locate_file("")))
        for f in dist.files or ():
            if ".." in f.parts or "__pycache__" in f.parts or f.name.endswith((".pth", ".pyc")):
                continue
            source = os.path.join(base, str(f))
            if os.path.isfile(source):
                tree.copy(source, os.path.join(SITE, str(f)))
                if f.name.endswith(".so"):
                    native.append(source)
        todo += requirement_names(dist.requires)
    return native


def add_tools(tree: FileTree, extra: Iterable[str] = ()) -> tuple[list[str], list[str]]:
    """Disk tools for `ka install`: (their paths, names of optional ones not installed here)."""
    paths: list[str] = []
    missing: list[str] = []
    for tool in (*REQUIRED_TOOLS, *OPTIONAL_TOOLS, *extra):
        if not run.available(tool):
            if tool in REQUIRED_TOOLS or tool in extra:
                raise ToolMissingError(tool, run.PACKAGES.get(tool))
            missing.append(tool)
            continue
        found = run.require(tool)
        # The program at its real path, and its name as a symlink to it (mkfs.ext4 -> mke2fs
        # reads its name). Never through /bin, which holds busybox in the initramfs.
        real = os.path.realpath(found)
        name = os.path.join(os.path.realpath(os.path.dirname(found)), os.path.basename(found))
        tree.copy(real)
        if name != real:
            tree.symlink(name, real)
        paths.append(real)
    for conf in CONFIG_FILES:
        if os.path.isfile(conf):
            tree.copy(conf)
    return paths, missing


def add_libraries(tree: FileTree, native: Iterable[str]) -> None:
    libraries: set[str] = set()
    for path in native:
        result = run.run(["ldd", path], check=False)
        if "not a dynamic executable" in result.stdout + result.stderr:
            continue
        try:
            libraries |= parse_ldd(result.stdout)
        except InitramfsError as e:
            raise BootEnvError(f"{path}: {e.message}") from e
    for lib in sorted(libraries):
        tree.add_host_path(lib)
    lib_dirs = sorted({os.path.dirname(lib) for lib in libraries})
    for name in DLOPENED_LIBS:
        for d in lib_dirs:
            if os.path.isfile(os.path.join(d, name)):
                tree.add_host_path(os.path.join(d, name))
                break


def add_modules(tree: FileTree, modules_dir: str, kernel_config: str | None = None,
                ) -> tuple[tuple[str, ...], tuple[str, ...]]:
    with open(os.path.join(modules_dir, "modules.dep")) as f:
        dep = kmodules.parse_modules_dep(f.read())
    builtin: list[str] = []
    builtin_file = os.path.join(modules_dir, "modules.builtin")
    if os.path.isfile(builtin_file):
        with open(builtin_file) as f:
            builtin = f.read().split()
    wanted = list(kmodules.WANTED)
    if kernel_config is not None and os.path.isfile(kernel_config):
        with open(kernel_config, errors="replace") as f:
            wanted += [m for m in kmodules.fat_charset_modules(f.read()) if m not in wanted]
    selection = kmodules.select_modules(dep, builtin, wanted)
    # Stored under /usr/lib/modules: /lib is a symlink to usr/lib in a merged-/usr tree.
    version = os.path.basename(os.path.normpath(modules_dir))
    target_dir = f"/usr/lib/modules/{version}"
    load_order = []
    for rel in selection.paths:
        target = f"{target_dir}/{kmodules.stored_name(rel)}"
        tree.blob(target, kmodules.read_module(os.path.join(modules_dir, rel)))
        load_order.append(target)
    tree.text(init_script.MODULES_LIST_PATH, "".join(f"{p}\n" for p in load_order))
    return selection.paths, selection.missing


def build(output: str, kernel: str | None = None, modules_dir: str | None = None,
          key_file: str | None = None, tools: Iterable[str] = (),
          compress: bool = True, golden_key: bytes | None = None) -> BootEnvReport:
    if kernel is None:
        kernel, modules_dir = find_kernel()
    elif modules_dir is None:
        modules_dir = modules_for(kernel)
    if not os.path.isfile(kernel):
        raise BootEnvError(f"kernel {kernel} does not exist")
    if modules_dir is not None and not os.path.isfile(os.path.join(modules_dir, "modules.dep")):
        raise BootEnvError(f"{modules_dir} has no modules.dep", hint="run depmod for it")
    tree = FileTree()
    add_base(tree, key_file, golden_key)
    add_busybox(tree)
    exe, native = add_python(tree)
    tool_paths, missing_tools = add_tools(tree, tools)
    add_libraries(tree, native + tool_paths)
    modules: tuple[str, ...] = ()
    missing_modules: tuple[str, ...] = ()
    if modules_dir is not None:
        modules, missing_modules = add_modules(tree, modules_dir, kernel_config_of(kernel))
    os.makedirs(output, exist_ok=True)
    kernel_out = os.path.join(output, "vmlinuz")
    shutil.copyfile(kernel, kernel_out)
    os.chmod(kernel_out, 0o644)
    initrd = os.path.join(output, "initrd.img")
    size = write_initramfs(tree, initrd, compress=compress)
    os.chmod(initrd, 0o600 if key_file else 0o644)
    return BootEnvReport(kernel_out, initrd, size, len(tree.entries), exe, modules,
                         missing_modules, tuple(missing_tools))
