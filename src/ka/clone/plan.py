"""The clone plan: everything a node needs to become a clone, sent as the first session.

It replaces the original's "partfiles" tarball (pfstab, fdisk_commands, excluded, streams,
MBR, delay, bootloader, boot_part, blkid_golden_node) with one versioned JSON document.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import types
import typing
from dataclasses import dataclass
from typing import Any

from ka.clone.hostnames import HostnameRule
from ka.errors import KaError

# Raised whenever a field changes what the nodes must do, so that a node of another ka
# refuses the plan with a clear message instead of an unknown field (or, worse, ignoring it).
# 2: the report session before the release (reports_before_release), partition aliases.
# 3: later_port (the sessions after the plan may sit on ports of their own: the waves of
#    `ka clone --serve` run side by side).
# 4: inodes of each golden filesystem (a node refuses a partition that cannot hold them).
PLAN_VERSION = 4
PLAN_KIND = "ka-clone-plan"


class PlanError(KaError):
    """A plan that this version of ka cannot read."""

    exit_code = 20


@dataclass(frozen=True)
class GoldenPartition:
    """One partition of a golden disk, with the golden identity that the clone's files use."""

    disk: str  # GoldenDisk.name
    number: int
    fstype: str | None  # "ext4", "xfs", "vfat", "swap", ... ; None: no filesystem
    mountpoint: str | None  # in the clone ("/", "/var"); None for swap or unmounted
    label: str | None = None
    uuid: str | None = None  # golden filesystem UUID
    partuuid: str | None = None  # golden partition GUID / MBR id-number
    device: str | None = None  # golden device path, for fstab entries by device
    used: int = 0  # bytes in use on the golden filesystem (0: unknown)
    content: str = "none"  # "tar" | "raw" | "none" (formatted empty)
    # Other device paths by which the golden's fstab names it (/dev/disk/by-id/...,
    # /dev/disk/by-path/...): they name the golden's hardware, so the nodes get UUID= instead.
    aliases: tuple[str, ...] = ()
    inodes: int = 0  # inodes in use on the golden filesystem (0: unknown, or btrfs's none)


@dataclass(frozen=True)
class GoldenDisk:
    name: str  # the DRIVE word of the command line: "sda", "nvme0n1", "loop3"
    desc: str  # the layout in desc language
    size: int = 0  # bytes (0: unknown, e.g. the golden tree is a directory)
    device: str | None = None  # golden device path
    boot_code: bytes | None = None  # first 440 bytes of the MBR to install (-m / -M)


@dataclass(frozen=True)
class ExcludedDir:
    path: str  # absolute, in the clone
    mode: int  # permission bits including setuid/setgid/sticky
    uid: int
    gid: int


@dataclass(frozen=True)
class Stream:
    """One content session after the plan: a tar of a filesystem or a raw partition."""

    session: str
    kind: str  # "tar" | "raw"
    disk: str
    number: int
    mountpoint: str | None = None  # tar: where it extracts, in the clone
    excludes: tuple[str, ...] = ()  # tar: patterns relative to the mount point
    size: int = 0  # raw: bytes of the partition


@dataclass(frozen=True)
class BootloaderRequest:
    kind: str = "auto"  # "auto": install grub when the clone has it, else warn; "grub"; "none"
    options: tuple[str, ...] = ()  # extra words after the kind (initramfs options of -r)

    @property
    def required(self) -> bool:
        return self.kind == "grub"


@dataclass(frozen=True)
class ClonePlan:
    prefix: str
    nodes: int
    disks: tuple[GoldenDisk, ...]
    partitions: tuple[GoldenPartition, ...]
    streams: tuple[Stream, ...]
    fstab: str
    excluded_disks: tuple[str, ...] = ()  # --exclude-disk names
    excluded_refs: tuple[str, ...] = ()  # their UUIDs, PARTUUIDs, labels, device paths
    excluded_dirs: tuple[ExcludedDir, ...] = ()
    hostnames: HostnameRule | None = None
    golden_hostname: str | None = None
    bootloader: BootloaderRequest = BootloaderRequest()
    compress: str | None = None
    release_delay: int | None = None  # tenths of a second, as -d
    selinux: bool = True  # the tar streams carry SELinux labels
    # Nodes hand their reports over in a session of their own before the release barrier,
    # so that the golden node can act on them (`ka clone --pxe`) before any node reboots.
    reports_before_release: bool = False
    notes: tuple[str, ...] = ()  # what the golden node wants the operator to know
    # The port of the first session after the plan; None: the plan's port + 1.
    later_port: int | None = None
    version: int = PLAN_VERSION

    @property
    def plan_session(self) -> str:
        return f"{self.prefix}-plan"

    @property
    def done_session(self) -> str:
        return f"{self.prefix}-done"

    @property
    def report_session(self) -> str | None:
        return f"{self.prefix}-report" if self.reports_before_release else None

    @property
    def sessions(self) -> tuple[str, ...]:
        report = (self.report_session,) if self.report_session else ()
        return (self.plan_session, *(s.session for s in self.streams), *report,
                self.done_session)

    def session_port(self, session: str, base: int) -> int:
        """Each session has its own port, counted from `base` in session order.

        Sessions follow each other, and a node that finished one early must never reach the
        one still closing (the transport lets a late node catch up at the tail, so it would
        get the same stream again): one port per session makes that impossible, with
        discovery by name or with an explicit --host alike. With `later_port`, the sessions
        after the plan count from there instead.
        """
        index = self.sessions.index(session)
        if index == 0 or self.later_port is None:
            return base + index
        return self.later_port + index - 1

    def partitions_of(self, disk: str) -> tuple[GoldenPartition, ...]:
        return tuple(p for p in self.partitions if p.disk == disk)

    def to_json(self) -> str:
        body = {"kind": PLAN_KIND, **_dump(self)}
        return json.dumps(body, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes) -> ClonePlan:
        try:
            data = json.loads(text)
        except (ValueError, UnicodeDecodeError) as e:
            raise PlanError(f"the clone plan is not valid JSON: {e}") from e
        if not isinstance(data, dict) or data.get("kind") != PLAN_KIND:
            raise PlanError("the first session did not carry a ka clone plan",
                            hint="check that --session-prefix/--host point at a `ka clone`")
        if data.get("version") != PLAN_VERSION:
            raise PlanError(
                f"clone plan version {data.get('version')} is not supported "
                f"(this ka reads version {PLAN_VERSION})",
                hint="run the same ka version on the golden node and on the nodes",
            )
        data.pop("kind")
        try:
            return typing.cast(ClonePlan, _load(cls, data))
        except (TypeError, KeyError, ValueError) as e:
            raise PlanError(f"malformed clone plan: {e}") from e


def _dump(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _dump(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, bytes):
        return {"base64": base64.b64encode(obj).decode()}
    if isinstance(obj, tuple | list):
        return [_dump(x) for x in obj]
    return obj


def _load(tp: Any, value: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _load(inner, value)
    if origin is tuple:
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_load(args[0], v) for v in value)
        return tuple(_load(a, v) for a, v in zip(args, value, strict=True))
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        hints = typing.get_type_hints(tp)
        known = {f.name for f in dataclasses.fields(tp)}
        unknown = set(value) - known
        if unknown:
            raise ValueError(f"unknown fields {sorted(unknown)} in {tp.__name__}")
        return tp(**{k: _load(hints[k], v) for k, v in value.items()})
    if tp is bytes:
        return base64.b64decode(value["base64"])
    if tp in (int, float, str, bool):
        if tp is float and isinstance(value, int):
            return float(value)
        if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):
            raise TypeError(f"expected {tp.__name__}, got {value!r}")
        return value
    raise TypeError(f"cannot load {tp!r}")
