"""`ka bootenv build`: the kernel and the two stages that install a blank node with ka.

Everything comes from this machine's installed packages: the kernel (linux-image-amd64, or the
one given) and its driver modules, busybox (busybox-static) for /init, the DHCP client and the
shell tools, the Python that runs ka with ka and its dependencies, and the disk tools that
`ka install` runs.

As the KA method does it, the boot environment comes in two stages:

* **stage1** (`initrd.img`, fetched by TFTP, so paid once per node): busybox, the network
  drivers, and the part of Python and ka that `ka receive` imports (found by importing it in a
  child interpreter, so nothing is guessed), with the session key and the golden identity;
* **stage2** (`stage2.cpio.gz`, everything else `ka install` needs: the rest of Python and of
  ka, the disk tools, the other drivers): served by `ka clone` as a session of its own,
  PREFIX-stage2, through the chain, so nodes that boot together fetch it once between them.
  stage1 refuses a stage2 the golden node did not sign, exactly as any other session.

`--single` keeps the one-initramfs layout for one-off machines: it does not scale (TFTP is
unicast and lock-step: N nodes pay its whole size N times). ELF files are stripped of their
symbol tables when `strip` (binutils) is installed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import json
import marshal
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterable, Iterator
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
STAGE2_NAME = "stage2.cpio.gz"
# Python modules stage1 needs beyond what importing `ka receive` loads: what the receive path
# imports lazily (the golden's signature, hostname lookups through the idna codec).
# ka receive imports some modules only when it needs them (its view once it runs, zstandard at
# the first compressed chunk): they are named here, or stage1 would lack them.
STAGE1_IMPORTS = (
    "ka.cli", "ka.transport.cli", "ka.transport.receiver", "ka.transport.view", "zstandard",
    "ka.keys", "ka.transport.identity",
    "cryptography.hazmat.primitives.serialization",
    "cryptography.hazmat.primitives.asymmetric.ed25519",
    "cryptography.hazmat.primitives.ciphers.aead", "encodings.idna", "encodings.ascii",
    "encodings.latin_1", "encodings.utf_8", "os", "runpy",  # runpy: `python -m ka`
)
STAGE1_TARGET_BYTES = 12 * 2**20


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
    stage2: str | None = None  # None: one initramfs (--single)
    stage2_bytes: int = 0
    stage2_entries: int = 0
    stripped: bool = False  # ELF files went through strip --strip-unneeded


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


def add_base(tree: FileTree, key_file: str | None, golden_key: bytes | None = None,
             two_stage: bool = False) -> None:
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
    if two_stage:
        # /init fetches stage2 through the chain before it runs `ka install`.
        tree.text(init_script.STAGE2_MARKER_PATH, "stage2 comes through the chain\n")


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
                wanted: Iterable[str] = kmodules.WANTED,
                list_path: str = init_script.MODULES_LIST_PATH, skip: Iterable[str] = (),
                ) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The `wanted` modules with their dependencies, except those in `skip` (stage1's, when
    this is stage2's list), and their load order at `list_path`."""
    with open(os.path.join(modules_dir, "modules.dep")) as f:
        dep = kmodules.parse_modules_dep(f.read())
    builtin: list[str] = []
    builtin_file = os.path.join(modules_dir, "modules.builtin")
    if os.path.isfile(builtin_file):
        with open(builtin_file) as f:
            builtin = f.read().split()
    wanted = list(wanted)
    if kernel_config is not None and os.path.isfile(kernel_config) and "vfat" in wanted:
        with open(kernel_config, errors="replace") as f:
            wanted += [m for m in kmodules.fat_charset_modules(f.read()) if m not in wanted]
    selection = kmodules.select_modules(dep, builtin, wanted)
    # Stored under /usr/lib/modules: /lib is a symlink to usr/lib in a merged-/usr tree.
    version = os.path.basename(os.path.normpath(modules_dir))
    target_dir = f"/usr/lib/modules/{version}"
    load_order = []
    skipped = set(skip)
    paths = tuple(rel for rel in selection.paths if rel not in skipped)
    for rel in paths:
        target = f"{target_dir}/{kmodules.stored_name(rel)}"
        tree.blob(target, kmodules.read_module(os.path.join(modules_dir, rel)))
        load_order.append(target)
    tree.text(list_path, "".join(f"{p}\n" for p in load_order))
    return paths, selection.missing


def probe_imports(exe: str, modules: Iterable[str] = STAGE1_IMPORTS) -> set[str]:
    """The real paths of every file a child interpreter loads to import `modules`: what
    stage1's Python needs, found by doing it rather than by a list that could drift."""
    # OpenSSL's hash and TLS modules stay out: hashlib and hmac fall back to Python's own
    # hashes without them, and libcrypto alone would be a third of stage1.
    code = ("import importlib, json, sys\n"
            "sys.modules['_hashlib'] = sys.modules['_ssl'] = None\n"
            f"for m in {list(modules)!r}: importlib.import_module(m)\n"
            "print(json.dumps(sorted({getattr(m, '__file__', None) or '' "
            "for m in list(sys.modules.values())} - {''})))\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p),
           "PYTHONDONTWRITEBYTECODE": "1"}
    try:
        result = subprocess.run([exe, "-c", code], capture_output=True, text=True, env=env,
                                timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise BootEnvError(f"could not run {exe} to find what stage1 needs: {e}") from e
    if result.returncode != 0:
        raise BootEnvError(f"{exe} could not import what `ka receive` needs: "
                           f"{result.stderr.strip()[-500:]}")
    return {os.path.realpath(f) for f in json.loads(result.stdout) if os.path.isfile(f)}


def add_stage1_python(stage1: FileTree, full: FileTree, exe: str, probed: set[str]
                      ) -> list[str]:
    """The probed part of the full tree's Python (interpreter, standard library, ka, its
    dependencies), and the wrapper; returns the native files whose libraries it needs."""
    native = [exe]
    stage1.add_host_path(exe)
    for entry in full.sorted_entries():
        if entry.source is not None and os.path.realpath(entry.source) in probed:
            stage1.copy(entry.source, entry.path)
            if entry.path.endswith(".so"):
                native.append(entry.source)
    # `python -m ka` runs ka/__main__.py without importing it as a module: never probed.
    import ka

    main = os.path.join(os.path.dirname(os.path.realpath(ka.__file__)), "__main__.py")
    stage1.copy(main, os.path.join(SITE, "ka", "__main__.py"))
    stage1.text(KA_WRAPPER, full.entries[KA_WRAPPER].data.decode(), mode=0o755)  # type: ignore[union-attr]
    return native


def split_stage2(full: FileTree, stage1: FileTree) -> FileTree:
    """Everything of the full tree that stage1 does not hold (directories: where they hold
    something of stage2's)."""
    stage2 = FileTree()
    for entry in full.sorted_entries():
        if entry.kind == "dir" or entry.path in stage1.entries:
            continue
        stage2._put(entry)
    return stage2


def add_bytecode(tree: FileTree, under: str = "/") -> int:
    """Each Python module of `tree` (below `under`) with its bytecode beside it (PEP 552,
    unchecked hash: the archive's mtimes are fixed, so a timestamp check would always fail).
    Without it every node compiles each module it imports at each start: the interpreter cannot
    cache it in an initramfs it unpacks afresh, nor where PYTHONDONTWRITEBYTECODE is set.
    Returns how many."""
    tag = sys.implementation.cache_tag
    head = importlib.util.MAGIC_NUMBER + (0b01).to_bytes(4, "little")  # hash-based, unchecked
    added = 0
    for entry in list(tree.entries.values()):
        if (entry.kind != "file" or not entry.path.endswith(".py")
                or not entry.path.startswith(under)):
            continue
        if entry.data is not None:
            source = entry.data
        else:
            assert entry.source is not None
            with open(entry.source, "rb") as f:
                source = f.read()
        try:
            code = compile(source, entry.path, "exec", dont_inherit=True)
        except (SyntaxError, ValueError):
            continue  # not a module this interpreter imports (test data, another version)
        directory, name = os.path.split(entry.path)
        tree.blob(os.path.join(directory, "__pycache__", f"{name[:-3]}.{tag}.pyc"),
                  head + importlib.util.source_hash(source) + marshal.dumps(code))
        added += 1
    return added


def strip_binaries(trees: Iterable[FileTree], strip: str) -> None:
    """ELF files without their symbol tables (`strip --strip-unneeded`): a Python built from
    source carries some 17 MiB of them in libpython alone. Each host file is stripped once,
    whichever trees hold it; a file strip cannot handle is kept as it is."""
    done: dict[str, bytes | None] = {}  # host file -> stripped content (None: keep it)
    for tree in trees:
        for path, entry in list(tree.entries.items()):
            if entry.kind != "file" or entry.source is None:
                continue
            if entry.source not in done:
                done[entry.source] = _stripped(entry.source, strip)
            data = done[entry.source]
            if data is not None:
                tree.entries[path] = dataclasses.replace(entry, source=None, data=data)


def _stripped(source: str, strip: str) -> bytes | None:
    with open(source, "rb") as f:
        if f.read(4) != b"\x7fELF":
            return None
    with tempfile_path() as out:
        result = subprocess.run([strip, "--strip-unneeded", "-o", out, source],
                                capture_output=True, timeout=120, check=False)
        if result.returncode != 0 or os.path.getsize(out) >= os.path.getsize(source):
            return None
        with open(out, "rb") as f:
            return f.read()


@contextlib.contextmanager
def tempfile_path() -> Iterator[str]:
    fd, path = tempfile.mkstemp(prefix="ka-strip-")
    os.close(fd)
    try:
        yield path
    finally:
        os.unlink(path)


def build(output: str, kernel: str | None = None, modules_dir: str | None = None,
          key_file: str | None = None, tools: Iterable[str] = (),
          compress: bool = True, golden_key: bytes | None = None,
          single: bool = False) -> BootEnvReport:
    """Write OUTPUT/vmlinuz and OUTPUT/initrd.img (stage1), and OUTPUT/stage2.cpio.gz (or,
    with `single`, one initrd.img holding everything)."""
    if kernel is None:
        kernel, modules_dir = find_kernel()
    elif modules_dir is None:
        modules_dir = modules_for(kernel)
    if not os.path.isfile(kernel):
        raise BootEnvError(f"kernel {kernel} does not exist")
    if modules_dir is not None and not os.path.isfile(os.path.join(modules_dir, "modules.dep")):
        raise BootEnvError(f"{modules_dir} has no modules.dep", hint="run depmod for it")
    full = FileTree()
    add_base(full, key_file, golden_key)
    add_busybox(full)
    exe, native = add_python(full)
    tool_paths, missing_tools = add_tools(full, tools)
    add_libraries(full, native + tool_paths)
    config = kernel_config_of(kernel)
    stage1: FileTree | None = None
    modules: tuple[str, ...] = ()
    missing_modules: tuple[str, ...] = ()
    if not single:
        stage1 = FileTree()
        add_base(stage1, key_file, golden_key, two_stage=True)
        add_busybox(stage1)
        add_libraries(stage1, add_stage1_python(stage1, full, exe, probe_imports(exe)))
    if modules_dir is not None:
        if stage1 is None:
            modules, missing_modules = add_modules(full, modules_dir, config)
        else:
            first, missing_first = add_modules(stage1, modules_dir, config, kmodules.NETWORK)
            rest, missing_rest = add_modules(full, modules_dir, config,
                                             list_path=init_script.MODULES_STAGE2_PATH,
                                             skip=first)
            modules = first + rest
            missing_modules = tuple(dict.fromkeys(missing_first + missing_rest))
    strip = shutil.which("strip")
    if strip:
        strip_binaries((full,) if stage1 is None else (full, stage1), strip)
    os.makedirs(output, exist_ok=True)
    kernel_out = os.path.join(output, "vmlinuz")
    shutil.copyfile(kernel, kernel_out)
    os.chmod(kernel_out, 0o644)
    initrd = os.path.join(output, "initrd.img")
    stage2_path = os.path.join(output, STAGE2_NAME)
    stage2_bytes = stage2_entries = 0
    # Bytecode for all of stage1 (every node runs `ka receive` from it at each boot), and for
    # ka and its libraries in stage2 or the single initramfs: the standard library's would add
    # 3 MiB more to stage2 for modules `ka install` mostly does not import.
    if stage1 is None:
        add_bytecode(full, under=SITE)
        size = write_initramfs(full, initrd, compress=compress)
        entries = len(full.entries)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(stage2_path)  # a stale stage2 beside a single initramfs would be served
    else:
        stage2 = split_stage2(full, stage1)
        add_bytecode(stage1)
        add_bytecode(stage2, under=SITE)
        # xz: some 20 % smaller than gzip, and this is the file every node pays by TFTP.
        size = write_initramfs(stage1, initrd, compress=compress, xz=True)
        entries = len(stage1.entries)
        # Never holds the key (stage1 does): readable, like any file a chain carries.
        stage2_bytes = write_initramfs(stage2, stage2_path, compress=True)
        stage2_entries = len(stage2.entries)
        os.chmod(stage2_path, 0o644)
    os.chmod(initrd, 0o600 if key_file else 0o644)
    return BootEnvReport(kernel_out, initrd, size, entries, exe, modules,
                         missing_modules, tuple(missing_tools),
                         stage2=None if stage1 is None else stage2_path,
                         stage2_bytes=stage2_bytes, stage2_entries=stage2_entries,
                         stripped=strip is not None)
