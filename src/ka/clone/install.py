"""`ka install`: the node's side (the original's ka_replication.sh and prepare_node.sh).

Receive the plan, partition and format, extract every stream, fix the clone up, and hand the
install report to the golden node in the final session. A node that cannot install stays in
every remaining session as a relay (its sons still need the stream) and reports why.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ka import run
from ka.clone import bootloader as boot
from ka.clone import fixups, tarstream
from ka.clone.endpoints import DiscardSink, TarSink
from ka.clone.hostnames import assign_hostname
from ka.clone.mapping import DiskAssignment, local_disks, map_disks
from ka.clone.netif import Uplink, interfaces, local_interfaces, uplink
from ka.clone.nodedisks import fits, mount_only_content, new_uuid, read_partuuids
from ka.clone.plan import ClonePlan, Stream
from ka.clone.report import InstallLog, InstallReport
from ka.disk.desc import parse_desc
from ka.disk.plan import plan_layout
from ka.errors import CommandError, KaError
from ka.ports import SESSION_PORT

REPORT_PATH = "var/log/ka-install.json"
DETAIL_LIMIT = 4000


class InstallFailed(KaError):
    exit_code = 1


@dataclass(frozen=True)
class InstallOptions:
    prefix: str | None = None
    host: str | None = None
    port: int = SESSION_PORT
    key: bytes | None = None
    golden_key: bytes | None = None  # refuse streams the golden identity did not sign
    disks: Mapping[str, str] = field(default_factory=dict)  # golden DRIVE -> local device
    target: str = "/mnt/ka"
    bootloader: str | None = None  # "grub" | "none" overrides the plan
    name: str | None = None
    find_timeout: float = 600.0


class Installer:
    def __init__(
        self,
        opts: InstallOptions,
        on_step: Callable[[str, str], None] | None = None,
        receive: Callable[..., Any] | None = None,
        status: Any = None,
    ) -> None:
        self.opts = opts
        self.status = status  # a StatusService, told the node's name once it is known
        self.log = InstallLog(on_step)
        self._receive_fn = receive
        self.plan: ClonePlan | None = None
        self.position = 0
        self.name: str | None = opts.name
        self.hostname: str | None = None
        self.assignments: tuple[DiskAssignment, ...] = ()
        self.new_ids: list[fixups.NewIdentity] = []
        self.uplink: Uplink | None = None
        self.mounted = False
        self.golden_gone: str | None = None  # why, once a session found no golden node
        self.exit_status = 0  # of the error that failed the install first (exit statuses)

    # --- transport -------------------------------------------------------------------------
    def _receive(self, sink: Any, session: str, **kw: Any) -> Any:
        """Join `session`: by name, or with --host at the golden node's address.

        Every session has its own port (`ClonePlan.session_port`), the plan session the
        base port; a node early for a session finds nothing listening there yet and the
        transport keeps trying until `find_timeout`.
        """
        from ka.transport import ReceiveOptions, SenderNotFound, receive

        options = ReceiveOptions(
            session=None if self.opts.host else session,
            host=self.opts.host,
            port=self.plan.session_port(session, self.opts.port) if self.plan
            else self.opts.port,
            key=self.opts.key,
            golden_key=self.opts.golden_key,
            find_timeout=self.opts.find_timeout,
            name=self.name,
            **kw,
        )
        try:
            return (self._receive_fn or receive)(sink, options)
        except SenderNotFound as e:
            self.golden_gone = _one_line(e)
            raise

    # --- the whole run ---------------------------------------------------------------------
    def run(self) -> InstallReport:
        plan = self._receive_plan()
        failure = self._attempt(lambda: self._prepare_disks(plan))
        for stream in plan.streams:
            if self.golden_gone:
                # Waiting for every later session would only add find_timeout each.
                self.log.skip(f"stream {stream.session}", "the golden node is gone")
                continue
            if failure:
                failure_in_relay = self._relay(stream)
                if failure_in_relay:
                    self.log.warn(failure_in_relay)
                continue
            failure = self._attempt(functools.partial(self._stream, plan, stream))
        if not failure:
            failure = self._attempt(lambda: self._fix_up(plan))
        report = self._report(failure)
        if self.mounted:
            self._keep_report(report)
            failure = failure or self._attempt(self._unmount)
            report = self._report(failure)
        try:
            self._release(plan, report)
        except InstallFailed as e:
            # The clone may be fine, but the golden node cannot know it: a failure here too.
            reason = f"{report.reason}; {e.message}" if report.reason else e.message
            report = dataclasses.replace(report, result="failed", reason=reason,
                                         exit_status=self.exit_status or e.exit_code)
        return report

    def _report(self, failure: str | None) -> InstallReport:
        disks = {a.golden: a.device for a in self.assignments}
        report = self.log.report(self.name or "", self.position, failure, disks, self.uplink)
        return dataclasses.replace(report, exit_status=(self.exit_status or 1) if failure else 0)

    def _attempt(self, action: Callable[[], None]) -> str | None:
        failed = _failure(action)
        if failed is None:
            return None
        reason, status = failed
        self.exit_status = self.exit_status or status
        return reason

    def _receive_plan(self) -> ClonePlan:
        from ka.transport import BytesSink, SenderNotFound

        session = f"{self.opts.prefix or 'ka'}-plan"
        with self.log.step("receive plan") as s:
            sink = BytesSink()
            try:
                rep = self._receive(sink, session)
            except SenderNotFound as e:
                where = (f"at {self.opts.host} port {self.opts.port}" if self.opts.host
                         else f"for session {session!r} (port {self.opts.port})")
                raise SenderNotFound(
                    f"no golden node {where}: {e.message}",
                    hint="start `ka clone` on the golden node with the same --session-prefix "
                         "or address, --port and key; a node may start first, it waits up to "
                         "--find-timeout") from e
            plan = ClonePlan.from_json(sink.data)
            s.bytes, s.digest = rep.bytes, rep.digest
            s.detail = f"position {rep.position}, {len(plan.streams)} streams"
        self.plan, self.position = plan, rep.position
        found = interfaces()
        self.uplink = uplink(rep.sender, found)
        macs, ips = local_interfaces(found)
        assigned = assign_hostname(plan.hostnames, rep.position, macs, ips)
        self.hostname = assigned
        self.name = assigned or self.opts.name or f"node{rep.position:02d}"
        if self.status is not None:
            self.status.node = self.name
        return plan

    def _prepare_disks(self, plan: ClonePlan) -> None:
        from ka.disk import apply_plan, sector_size

        with self.log.step("map disks") as s:
            given = {k: os.path.realpath(v) for k, v in self.opts.disks.items()}
            self.assignments = map_disks(
                plan, local_disks(list(given.values())), given, lambda g, n: fits(g, n, plan)
            )
            s.detail = ", ".join(f"{a.golden}->{a.device}" for a in self.assignments)
        by_name = {d.name: d for d in plan.disks}
        order = sorted(self.assignments, key=lambda a: _root_first(plan, a.golden))
        for a in order:
            golden = by_name[a.golden]
            layout = parse_desc(golden.desc, f"<{golden.name}>")
            planned = mount_only_content(plan_layout(layout, a.size, sector_size(a.device)),
                                         plan, golden.name)
            uuids = {p.number: u for p in planned.partitions if (u := new_uuid(p.fs))}
            with self.log.step(f"partition and format {a.device}") as s:
                os.makedirs(self.opts.target, exist_ok=True)
                applied = apply_plan(planned, a.device, target=self.opts.target, uuids=uuids)
                self.mounted = True
                s.detail = planned.describe().splitlines()[0]
            partuuids = read_partuuids(a.device)
            for part in applied.partitions:
                number, devnode = part[0], part[1]
                self.new_ids.append(fixups.NewIdentity(
                    disk=a.golden, number=number, uuid=part[3] or uuids.get(number),
                    partuuid=partuuids.get(number), label=part[4], device=devnode,
                ))

    def _device_of(self, disk: str, number: int) -> str:
        for n in self.new_ids:
            if n.disk == disk and n.number == number:
                return n.device
        from ka.disk import partition_device

        return partition_device(self._disk(disk), number)

    def _stream(self, plan: ClonePlan, stream: Stream) -> None:
        from ka.transport import FileSink

        if stream.kind == "tar":
            assert stream.mountpoint is not None
            dest = os.path.join(self.opts.target, stream.mountpoint.lstrip("/"))
            with self.log.step(f"extract {stream.mountpoint}") as s:
                sink = TarSink(tarstream.extract_argv(dest, selinux=plan.selinux))
                try:
                    rep = self._receive(sink, stream.session)
                finally:
                    if sink.stderr:
                        s.detail = f"tar said: {sink.stderr[-DETAIL_LIMIT:]}"
                        if sink.status == 0:
                            self.log.warn(f"tar ({stream.mountpoint}): {sink.stderr[-500:]}")
                s.bytes, s.digest = rep.bytes, rep.digest
            return
        device = self._device_of(stream.disk, stream.number)
        with self.log.step(f"raw copy to {device}") as s:
            rep = self._receive(FileSink(device), stream.session)
            s.bytes, s.digest = rep.bytes, rep.digest
        # The copy brought the golden's filesystem identity along: record it as the new one.
        from ka.clone.golden import blkid

        ident = blkid(device)
        key = (stream.disk, stream.number)
        partuuid = read_partuuids(self._disk(stream.disk)).get(stream.number)
        self.new_ids = [n for n in self.new_ids if (n.disk, n.number) != key]
        self.new_ids.append(fixups.NewIdentity(
            stream.disk, stream.number, ident.uuid, partuuid, ident.label, device
        ))

    def _disk(self, golden: str) -> str:
        return {a.golden: a.device for a in self.assignments}[golden]

    def _relay(self, stream: Stream) -> str | None:
        sink = DiscardSink()
        try:
            self._receive(sink, stream.session)
        except KaError as e:
            return f"relaying {stream.session}: {_one_line(e)}"
        self.log.skip(f"stream {stream.session}", f"relayed {sink.bytes} bytes, not installed")
        return None

    def _fix_up(self, plan: ClonePlan) -> None:
        target = self.opts.target
        if plan.excluded_dirs:
            with self.log.step("recreate excluded directories") as s:
                for w in fixups.recreate_excluded(target, plan.excluded_dirs):
                    self.log.warn(w)
                s.detail = ", ".join(d.path for d in plan.excluded_dirs)
        ids = fixups.identity_map(plan, self.new_ids)
        with self.log.step("rewrite fstab") as s:
            result = fixups.write_fstab(target, plan, ids)
            s.detail = (f"{len(result.changed)} rewritten, {len(result.kept)} kept, "
                        f"{len(result.disabled)} disabled")
        with self.log.step("rewrite UUIDs in boot configuration") as s:
            changed = fixups.rewrite_id_files(target, ids.id_pairs())
            s.detail = ", ".join(f"{p}:{n}" for p, n in changed if n) or "nothing to change"
        with self.log.step("new machine-id") as s:
            s.detail = fixups.new_machine_id(target) or "the clone has no machine-id"
        with self.log.step("new SSH host keys") as s:
            made, warning = fixups.regenerate_ssh_host_keys(target)
            if warning:
                self.log.warn(warning)
                s.result = "warning"
            s.detail = warning or (", ".join(made) or "the clone has no SSH host keys")
        if self.hostname:
            with self.log.step(f"host name {self.hostname}") as s:
                fixups.set_hostname(target, self.hostname, plan.golden_hostname)
        with self.log.step("remove network and DHCP state") as s:
            s.detail = ", ".join(fixups.remove_stale_state(target)) or "none found"
        self._boot(plan)

    def _boot(self, plan: ClonePlan) -> None:
        target = self.opts.target
        kind = self.opts.bootloader or plan.bootloader.kind
        required = kind == "grub"
        tools = boot.detect_tools(target, boot.kernels(target))
        if kind == "none":
            self.log.skip("initramfs and bootloader", "--bootloader none")
        else:
            missing = []
            if tools.initramfs is None:
                missing.append("no initramfs tool (update-initramfs, dracut, mkinitrd)")
            if tools.grub_install is None:
                missing.append("no grub-install")
            if missing and required:
                raise boot.BootloaderError(
                    "--bootloader grub was asked for but the clone has " + " and ".join(missing)
                )
            for m in missing:
                self.log.warn(f"the clone has {m}: skipped", step="initramfs and bootloader")
            if tools.initramfs or tools.grub_install:
                with boot.chroot_mounts(target):
                    if tools.initramfs:
                        with self.log.step("regenerate initramfs") as s:
                            boot.in_chroot(target, [*tools.initramfs, *plan.bootloader.options])
                            s.detail = " ".join(tools.initramfs)
                    if tools.grub_install:
                        self._grub(plan, tools)
        for disk in plan.disks:
            if disk.boot_code:
                dev = self._disk(disk.name)
                with self.log.step(f"MBR boot code to {dev}"):
                    boot.write_boot_code(dev, disk.boot_code)

    def _grub(self, plan: ClonePlan, tools: boot.BootTools) -> None:
        assert tools.grub_install
        target = self.opts.target
        root_disk = next((p.disk for p in plan.partitions if p.mountpoint == "/"),
                         plan.disks[0].name)
        desc = parse_desc(next(d.desc for d in plan.disks if d.name == root_disk))
        esp = next((p.mountpoint for _n, p in desc.numbered() if p.type == "esp"), None)
        bios = desc.label == "dos" or any(p.type == "bios" for p in desc.partitions)
        esp_mounted = None
        if esp:
            number = next(n for n, p in desc.numbered() if p.type == "esp")
            path = os.path.join(target, esp.lstrip("/"))
            os.makedirs(path, exist_ok=True)
            if not os.path.ismount(path):  # mounted already when the ESP came as a tar stream
                run.run(["mount", self._device_of(root_disk, number), path])
                esp_mounted = path
        try:
            for argv in boot.grub_install_argvs(tools.grub_install, self._disk(root_disk),
                                                uefi=esp is not None, bios=bios, esp=esp):
                with self.log.step(" ".join(argv[:2])) as s:
                    s.detail = boot.in_chroot(target, argv).stderr[-DETAIL_LIMIT:]
        finally:
            if esp_mounted:
                run.run(["umount", esp_mounted], check=False)
        if tools.grub_mkconfig and tools.grub_cfg:
            with self.log.step("grub-mkconfig") as s:
                boot.in_chroot(target, [tools.grub_mkconfig, "-o", tools.grub_cfg])
                s.detail = tools.grub_cfg

    def _keep_report(self, report: InstallReport) -> None:
        path = Path(self.opts.target, REPORT_PATH)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(report.to_json())
        except OSError as e:
            self.log.warn(f"could not write {path}: {e.strerror}")

    def _unmount(self) -> None:
        from ka.disk import unmount_tree

        with self.log.step("sync and unmount"):
            os.sync()
            unmount_tree(self.opts.target)
            self.mounted = False

    def _release(self, plan: ClonePlan, report: InstallReport) -> None:
        """The final barrier: hand the report over and wait to be released (with --pxe in
        two sessions: the report, then the release once the golden node switched the boot)."""
        if self.golden_gone:
            raise InstallFailed(f"the golden node is gone ({self.golden_gone}), "
                                "the report was not handed over")
        attachment: bytes | None = report.to_json().encode()
        what = "could not hand the install report to the golden node"
        try:
            if plan.report_session:
                self._receive(DiscardSink(), plan.report_session, attachment=attachment)
                attachment, what = None, "the report was handed over, but the release failed"
            self._receive(DiscardSink(), plan.done_session, wait_release=True,
                          attachment=attachment)
        except KaError as e:
            raise InstallFailed(f"{what}: {_one_line(e)}") from e

    def cleanup(self) -> None:
        """Unmount whatever is still mounted (after an unexpected error)."""
        if self.mounted:
            from ka.disk import unmount_tree

            try:
                unmount_tree(self.opts.target)
            except KaError:
                pass
            self.mounted = False


def install(
    opts: InstallOptions,
    on_step: Callable[[str, str], None] | None = None,
    status: Any = None,
) -> InstallReport:
    installer = Installer(opts, on_step, status=status)
    try:
        return installer.run()
    finally:
        installer.cleanup()


def _root_first(plan: ClonePlan, disk: str) -> tuple[int, str]:
    has_root = any(p.disk == disk and p.mountpoint == "/" for p in plan.partitions)
    return (0 if has_root else 1, disk)


def _failure(action: Callable[[], None]) -> tuple[str, int] | None:
    """Run one phase; any failure becomes the node's reason (and its error's exit status
    ka install's), so that it still reaches the final session and the golden node learns
    why (the step log has the details)."""
    try:
        action()
    except KaError as e:
        return _one_line(e), e.exit_code
    except Exception as e:  # noqa: BLE001 - an unexpected error is a failure to report too
        return f"{type(e).__name__}: {e}", 1
    return None


def _attempt(action: Callable[[], None]) -> str | None:
    failed = _failure(action)
    return failed[0] if failed else None


def _one_line(e: KaError) -> str:
    """The node's reason: the error's first line and, for a failed command, the first line
    in which the command named the cause (the whole output is in the step's detail)."""
    text = str(e).strip().splitlines()
    first = text[0] if text else type(e).__name__
    if isinstance(e, CommandError) and e.cause and e.cause not in first:
        return f"{first}: {e.cause}"
    return first
