"""Writing a planned PXE state directory and TFTP tree to disk, and reading it back.

Files are written to a temporary name and renamed, so a node booting while `ka pxe set` runs
never reads half a menu. The tree is world-readable: dnsmasq serves TFTP after dropping root.
"""

from __future__ import annotations

import os
import shutil
import tempfile

from ka import run
from ka.boot.loaders import BuiltFile, PackagedFile, check_installed
from ka.boot.nodes import format_nodes
from ka.boot.pxe import (
    DNSMASQ_CONF,
    NODES_FILE,
    STATE_FILE,
    PxeConfig,
    TextFile,
    TreeEntry,
    config_from_json,
    config_to_json,
    render_dnsmasq,
)
from ka.errors import KaError, UsageError


def write_text(path: str, text: str, mode: int = 0o644) -> None:
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, mode=0o755, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".ka-")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _copy(source: str, path: str) -> None:
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    tmp = f"{path}.ka-tmp"
    shutil.copyfile(source, tmp)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def write_tree(root: str, entries: tuple[TreeEntry, ...]) -> None:
    """Put every entry under `root`, checking first that every loader file is installed."""
    check_installed(tuple(e for e in entries
                          if isinstance(e, BuiltFile)
                          or (isinstance(e, PackagedFile) and e.package != "ka bootenv")))
    for e in entries:
        if isinstance(e, PackagedFile) and e.package == "ka bootenv" and not os.path.isfile(
                e.source):
            raise KaError(f"boot environment file {e.source} is missing",
                          hint="build it with: ka bootenv build --output DIR")
    os.makedirs(root, mode=0o755, exist_ok=True)
    os.chmod(root, 0o755)
    for e in entries:
        path = os.path.join(root, e.target)
        if isinstance(e, TextFile):
            write_text(path, e.text)
        elif isinstance(e, PackagedFile):
            _copy(e.source, path)
        else:
            os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
            argv = [a.replace("{output}", path) for a in e.argv]
            run.run(argv, hint=f"grub-mkimage comes with '{e.package}' (and grub-common)")
            os.chmod(path, 0o644)


def save_state(config: PxeConfig) -> None:
    os.makedirs(config.state_dir, mode=0o755, exist_ok=True)
    write_text(os.path.join(config.state_dir, STATE_FILE), config_to_json(config))
    write_text(os.path.join(config.state_dir, DNSMASQ_CONF), render_dnsmasq(config))
    if config.nodes:
        write_text(os.path.join(config.state_dir, NODES_FILE), format_nodes(config.nodes))


def load_state(state_dir: str) -> PxeConfig:
    path = os.path.join(state_dir, STATE_FILE)
    try:
        with open(path) as f:
            return config_from_json(f.read())
    except FileNotFoundError:
        raise UsageError(f"{state_dir} holds no ka PXE configuration ({STATE_FILE} is missing)",
                         hint="create it with: ka pxe config --interface IF ... --dir "
                              f"{state_dir}") from None
    except (ValueError, TypeError, KeyError) as e:
        raise UsageError(f"{path} is not a valid ka PXE configuration: {e}",
                         hint="re-create it with ka pxe config") from e
