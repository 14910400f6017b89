"""What each role needs of a machine: the golden node (`ka clone`), a node (`ka install`),
the boot server (`ka pxe serve`)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from ka.boot.init_script import STAGE2_PORT
from ka.boot.loaders import (
    BiosLoader,
    BuiltFile,
    PackagedFile,
    UefiLoader,
    bios_files,
    uefi_files,
)
from ka.boot.serve import DHCP_PORT, TFTP_PORT
from ka.clone.status import STATUS_PORT
from ka.doctor import checks
from ka.doctor.checks import Check
from ka.errors import KaError
from ka.keys import GOLDEN_KEY_ENV, IDENTITY_ENV, key_file_path
from ka.transport.options import DEFAULT_PORT

Role = Literal["golden", "node", "pxe"]
ROLES: tuple[Role, ...] = ("golden", "node", "pxe")
WHAT = {"golden": "the golden node (ka clone)", "node": "a node (ka install)",
        "pxe": "the boot server (ka pxe serve)"}

# How many ports from --port a clone usually takes: plan, a few filesystems, raw partitions,
# report, done (`ka clone --dry-run` prints the exact sessions).
DEFAULT_SESSIONS = 8

GOLDEN_TOOLS = ("tar", "sfdisk", "lsblk", "findmnt", "blkid")
NODE_TOOLS = ("sfdisk", "wipefs", "partx", "blkid", "lsblk", "findmnt", "mount", "umount", "tar")
# Without a desc the node's layout is the golden's, unknown here: ext4 is nearly always
# there; the others only warn.
NODE_FILESYSTEMS = {"ext4": True, "swap": False, "vfat": False, "xfs": False, "btrfs": False}


@dataclass(frozen=True)
class Options:
    role: Role
    port: int = DEFAULT_PORT
    sessions: int = DEFAULT_SESSIONS
    status_port: int = STATUS_PORT
    stage2_port: int = STAGE2_PORT  # --golden; 0: no stage2 served
    key_file: str | None = None
    identity: str | None = None
    golden_key: str | None = None
    bind: str | None = None
    desc: Sequence[str] = field(default_factory=tuple)
    bios: BiosLoader = "pxelinux"
    uefi: UefiLoader = "grub"


class PreflightFailed(KaError):
    """This machine lacks what the role needs: said by `ka doctor`, and by `ka clone` and
    `ka pxe serve` before they start anything."""

    exit_code = 5


def line(c: Check) -> str:
    text = f"{c.status:<8} {c.kind} {c.name}: {c.detail}"
    return text + (f" (hint: {c.hint})" if c.hint else "")


def verdict(role: Role, found: Sequence[Check]) -> str:
    missing = sum(c.status == "missing" for c in found)
    warnings = sum(c.status == "warning" for c in found)
    counts = f"{missing} missing, {warnings} warning{'s' if warnings != 1 else ''}"
    if missing:
        return f"ka doctor: {counts}: this machine cannot be {WHAT[role]} yet"
    return f"ka doctor: {counts}: this machine can be {WHAT[role]}"


def require(role: Role, found: Sequence[Check]) -> None:
    """Raise PreflightFailed with the doctor's lines of what is missing, if anything is."""
    missing = [c for c in found if c.status == "missing"]
    if missing:
        raise PreflightFailed("\n".join([verdict(role, found), *map(line, missing)]),
                              hint=f"`ka doctor --{role}` shows every check; --no-preflight "
                                   "skips them")


def preflight(o: Options) -> list[Check]:
    if o.role == "golden":
        return golden(o)
    if o.role == "node":
        return node(o)
    return pxe(o)


def golden(o: Options) -> list[Check]:
    out = checks.tools(GOLDEN_TOOLS)
    session_ports = range(o.port, o.port + o.sessions)
    why = {o.port: "plan session"} | {p: "later sessions" for p in session_ports[1:]}
    out += checks.ports([(proto, p) for p in session_ports for proto in ("tcp", "udp")], why,
                        "ka clone listens there (TCP) and answers discovery (UDP): stop that "
                        "server, or give ka clone and ka install another --port")
    if o.stage2_port:
        # Its own port, outside the session block: booting nodes ask for PREFIX-stage2 there.
        out += checks.ports([("tcp", o.stage2_port), ("udp", o.stage2_port)],
                            {o.stage2_port: "stage2 for booting nodes"},
                            "ka clone serves stage2 there with --pxe or --stage2: stop that "
                            "server, or give ka clone --stage2-port and the nodes' boot "
                            "menus ka.stage2_port= another port (--no-stage2: not served)")
    out += key(o.key_file)
    out += checks.identity(o.identity or os.environ.get(IDENTITY_ENV), golden=True)
    out += checks.disks(want_free=False)
    out += checks.interface(o.bind, "golden")
    if os.geteuid() != 0:
        out.append(Check("privileges", "root", "warning", "not root: files only root may read "
                         "will be missing from the clone", "run ka clone as root"))
    return out


def node(o: Options) -> list[Check]:
    out = checks.tools(NODE_TOOLS)
    if o.desc:
        needed, problems = checks.layout_filesystems(o.desc)
        out += problems + checks.filesystems(needed, mounted=True)
    else:
        out += checks.filesystems(NODE_FILESYSTEMS, mounted=True)
    if o.status_port:
        out += checks.ports([("tcp", o.status_port)], {o.status_port: "status service"},
                            "ka install serves `ka console` there: stop that server, or give "
                            "ka install --status-port 0 (off) or another port")
    out += key(o.key_file)
    out += checks.identity(o.golden_key or os.environ.get(GOLDEN_KEY_ENV), golden=False)
    out += checks.disks(want_free=True)
    out += checks.interface(o.bind, "node")
    out += checks.privileges("partitioning and mounting need root")
    return out


def pxe_serve(dhcp: bool = True) -> list[Check]:
    """What `ka pxe serve` needs once `ka pxe config` has written the TFTP tree: dnsmasq,
    its ports (DHCP only when it answers DHCP), root."""
    out = checks.tools(("dnsmasq",))
    out += _dnsmasq_ports(dhcp)
    out += checks.privileges("dnsmasq binds ports 67 and 69")
    return out


def _dnsmasq_ports(dhcp: bool) -> list[Check]:
    wanted = [("udp", DHCP_PORT)] if dhcp else []
    return checks.ports([*wanted, ("udp", TFTP_PORT)], {DHCP_PORT: "DHCP", TFTP_PORT: "TFTP"},
                        "dnsmasq must bind it: stop that server (another DHCP server on the "
                        "same network: use ka pxe config --proxy-dhcp)")


def pxe(o: Options) -> list[Check]:
    out = checks.tools(("dnsmasq",))
    loaders = bios_files(o.bios) + uefi_files(o.uefi)
    out += checks.tools(sorted({f.argv[0] for f in loaders if isinstance(f, BuiltFile)}))
    out += checks.files((f.source, f.package) for f in loaders if isinstance(f, PackagedFile))
    for f in loaders:
        if isinstance(f, BuiltFile):
            absent = [p for p in f.inputs if not os.path.isfile(p)]
            where = os.path.dirname(f.inputs[0]) if f.inputs else f.target
            out.append(Check("file", where, "missing" if absent else "ok",
                             f"{len(absent)} of {len(f.inputs)} files missing" if absent
                             else f"{len(f.inputs)} files from {f.package}",
                             f"apt-get install {f.package}" if absent else None))
    out += _dnsmasq_ports(dhcp=True)
    if key_file_path(o.key_file):
        out += key(o.key_file)
    out += checks.interface(o.bind, "pxe")
    out += checks.privileges("dnsmasq binds ports 67 and 69")
    return out


def key(path: str | None) -> list[Check]:
    path = key_file_path(path)
    if path is None:
        return [Check("key", "key file", "warning", "no --key-file (nor $KA_KEY_FILE): the "
                      "sessions are open to anyone on the network", "make one with `ka keygen "
                      "FILE` and give it to the golden node and every node")]
    return checks.key_file(path)
