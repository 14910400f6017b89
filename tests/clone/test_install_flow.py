"""The node's session sequence with an in-memory transport: relaying after a failure,
the report handed over at the end, and joins retried during a session changeover."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from ka.clone.install import Installer, InstallOptions
from ka.clone.plan import ClonePlan, GoldenDisk, GoldenPartition, Stream
from ka.clone.report import InstallReport
from ka.transport import Rejected, StreamCut
from ka.transport.options import ReceiveOptions, ReceiveReport

DESC = "label gpt\nlinux fill fs=ext4 mount=/\n"
PLAN = ClonePlan(
    prefix="t", nodes=2,
    disks=(GoldenDisk("sda", DESC, 1 << 30),),
    partitions=(GoldenPartition("sda", 1, "ext4", "/", content="tar"),),
    streams=(Stream("t-fs-1", "tar", "sda", 1, "/"), Stream("t-raw-1", "raw", "sda", 2)),
    fstab="",
)


class FakeTransport:
    """Feeds each session's payload into the sink, as `ka.transport.receive` would."""

    def __init__(self, payloads: dict[str, bytes], refusals: list[Exception] | None = None):
        self.payloads = payloads
        self.refusals = list(refusals or [])
        self.calls: list[ReceiveOptions] = []
        self.joined: list[str] = []
        self.order = list(payloads)

    def __call__(self, sink: Any, options: ReceiveOptions) -> ReceiveReport:
        self.calls.append(options)
        if self.refusals:
            raise self.refusals.pop(0)
        session = self.order[len(self.joined)]
        self.joined.append(session)
        data = self.payloads[session]
        sink.open()
        sink.write(memoryview(data))
        status, reason = sink.close()
        assert status == 0, reason
        return ReceiveReport(len(data), 0.01, "d" * 64, 0, 2, "127.0.0.1:1")


def installer(fake: Callable[..., Any], **kw: Any) -> Installer:
    opts = InstallOptions(prefix="t", disks={"sda": "/dev/ka-no-such-disk"}, **kw)
    return Installer(opts, receive=fake)


def test_a_node_that_cannot_install_relays_and_reports() -> None:
    fake = FakeTransport({"t-plan": PLAN.to_json().encode(), "t-fs-1": b"x" * 5000,
                          "t-raw-1": b"y" * 300, "t-done": b"done\n"})
    report = installer(fake).run()
    assert fake.joined == ["t-plan", "t-fs-1", "t-raw-1", "t-done"]
    assert report.result == "failed"
    assert report.reason is not None and "no such block device" in report.reason
    assert report.exit_status == 21  # no local disk: what ka install exits with
    assert [s.name for s in report.steps] == [
        "receive plan", "map disks", "stream t-fs-1", "stream t-raw-1"]
    assert [s.result for s in report.steps] == ["ok", "failed", "skipped", "skipped"]
    assert "relayed 5000 bytes" in report.steps[2].detail
    done = fake.calls[-1]
    assert done.wait_release and done.session == "t-done" and done.name == "node02"
    assert done.attachment is not None
    assert InstallReport.from_json(done.attachment) == report


def test_every_session_has_its_own_port() -> None:
    payloads = {"t-plan": PLAN.to_json().encode(), "t-fs-1": b"", "t-raw-1": b"",
                "t-done": b""}
    fake = FakeTransport(payloads)
    installer(fake, host="127.0.0.1", port=40000).run()
    assert [(c.host, c.session, c.port) for c in fake.calls] == [
        ("127.0.0.1", None, 40000), ("127.0.0.1", None, 40001), ("127.0.0.1", None, 40002),
        ("127.0.0.1", None, 40003)]
    fake = FakeTransport(payloads)
    installer(fake, port=40000).run()
    assert [(c.host, c.session, c.port) for c in fake.calls] == [
        (None, "t-plan", 40000), (None, "t-fs-1", 40001), (None, "t-raw-1", 40002),
        (None, "t-done", 40003)]


def test_a_refusal_of_the_plan_session_ends_the_install() -> None:
    fake = FakeTransport({"t-plan": b""}, [Rejected("the sender refused us: wrong key")])
    with pytest.raises(Rejected):
        installer(fake, host="127.0.0.1").run()
    assert len(fake.calls) == 1


def test_a_session_cut_makes_the_node_fail_but_still_report() -> None:
    payloads = {"t-plan": PLAN.to_json().encode(), "t-fs-1": b"", "t-raw-1": b"x",
                "t-done": b""}
    fake = FakeTransport(payloads)

    def cut_first_stream(sink: Any, options: ReceiveOptions) -> ReceiveReport:
        if options.session == "t-fs-1":
            fake.joined.append("t-fs-1")
            raise StreamCut("the sender aborted the session: tar failed")
        return fake(sink, options)

    node = installer(cut_first_stream)
    node._prepare_disks = lambda plan: None  # type: ignore[method-assign]
    report = node.run()
    assert report.result == "failed"
    assert report.reason == "the sender aborted the session: tar failed"
    assert report.exit_status == 13  # stream cut
    assert [s.name for s in report.steps][-2:] == ["extract /", "stream t-raw-1"]
    assert fake.joined == ["t-plan", "t-fs-1", "t-raw-1", "t-done"]


def test_bootloader_asked_for_but_missing_fails(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from ka.clone.bootloader import BootloaderError

    opts = InstallOptions(prefix="t", target=str(tmp_path), bootloader="grub")
    with pytest.raises(BootloaderError, match="no initramfs tool .* and no grub-install"):
        Installer(opts)._boot(PLAN)


def test_missing_bootloader_is_a_warning_by_default(tmp_path) -> None:  # type: ignore[no-untyped-def]
    inst = Installer(InstallOptions(prefix="t", target=str(tmp_path)))
    inst._boot(PLAN)
    assert any("no grub-install" in w for w in inst.log.warnings)
    inst = Installer(InstallOptions(prefix="t", target=str(tmp_path), bootloader="none"))
    inst._boot(PLAN)
    assert inst.log.steps[-1].result == "skipped" and not inst.log.warnings


def test_golden_gone_stops_waiting_and_fails_with_the_reason() -> None:
    from ka.transport import SenderNotFound

    fake = FakeTransport({"t-plan": PLAN.to_json().encode()})

    def golden_died(sink: Any, options: ReceiveOptions) -> ReceiveReport:
        if options.session == "t-plan":
            return fake(sink, options)
        fake.calls.append(options)
        raise SenderNotFound("no sender answered for session 't-fs-1' within 600 s")

    report = installer(golden_died).run()
    assert [c.session for c in fake.calls] == ["t-plan", "t-fs-1"]  # nothing more waited for
    assert report.result == "failed"
    assert report.reason is not None and "the golden node is gone" in report.reason
    assert report.reason.startswith("--disk sda=")  # the first failure stays first
    assert report.exit_status == 21  # and so does its status
    last = report.steps[-1]
    assert (last.name, last.result, last.detail) == (
        "stream t-raw-1", "skipped", "the golden node is gone")


def test_with_a_report_session_the_report_comes_before_the_release(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from ka.clone import install
    from ka.clone.netif import Interface

    # The node reaches the golden node (127.0.0.1:1 here) through "eth0": it reports that
    # interface's MAC and address, which `ka clone --pxe` switches it by.
    monkeypatch.setattr(install, "interfaces", lambda: [
        Interface("lo", None, ("10.99.0.1",), loopback=True),
        Interface("eth0", "52:54:00:12:34:56", ("127.0.0.1",))])
    plan = ClonePlan(**{**PLAN.__dict__, "reports_before_release": True})
    fake = FakeTransport({"t-plan": plan.to_json().encode(), "t-fs-1": b"", "t-raw-1": b"",
                          "t-report": b"", "t-done": b""})
    report = installer(fake, port=40000).run()
    assert [(c.session, c.port, c.wait_release, c.attachment is not None)
            for c in fake.calls] == [
        ("t-plan", 40000, False, False), ("t-fs-1", 40001, False, False),
        ("t-raw-1", 40002, False, False), ("t-report", 40003, False, True),
        ("t-done", 40004, True, False)]
    handed = fake.calls[3].attachment
    assert handed is not None and InstallReport.from_json(handed) == report
    assert (report.interface, report.mac, report.ip) == ("eth0", "52:54:00:12:34:56",
                                                         "127.0.0.1")


def test_a_report_from_a_newer_node_with_more_fields_is_still_read() -> None:
    import json

    from ka.clone.report import InstallReport as Report

    data = json.loads(Report("n1", 1, "ok", None, (), (), 0.0, 1.0).to_json())
    data["something_new"] = 1
    assert Report.from_json(json.dumps(data)).node == "n1"


def test_a_tar_error_fails_the_node_with_tars_own_words(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # The original sent tar's stderr to /dev/null: here the real tar's message is the reason.

    plan = ClonePlan(**{**PLAN.__dict__, "streams": PLAN.streams[:1]})
    payloads = {"t-plan": plan.to_json().encode(), "t-fs-1": b"this is not a tar archive\n" * 99,
                "t-done": b""}
    joined: list[str] = []
    transport = _consuming_transport(payloads, joined)
    node = Installer(InstallOptions(prefix="t", target=str(tmp_path)), receive=transport)
    node._prepare_disks = lambda plan: None  # type: ignore[method-assign]
    report = node.run()
    assert joined == ["t-plan", "t-fs-1", "t-done"]
    assert report.result == "failed"
    assert report.reason is not None and "tar --extract exited with status 2" in report.reason
    step = next(s for s in report.steps if s.name == "extract /")
    assert step.result == "failed"
    assert step.detail.startswith("tar said: ") and "not look like a tar archive" in step.detail


def test_a_full_disk_fails_the_node_with_tars_first_error(
        tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    # tar's last line ("Exiting with failure status due to previous errors") hides the cause;
    # the reason shows the first error, the step's detail keeps all that tar said.
    from ka.clone import install

    said = tmp_path / "tar.err"
    said.write_text(
        "tar: ./var/lib/images/disk-image.raw: Wrote only 4608 of 10240 bytes\n"
        "tar: ./usr/share/doc/pkg001/file00.txt: Cannot open: No space left on device\n"
        "tar: Exiting with failure status due to previous errors\n")
    # A tar that takes the whole stream, then says what GNU tar says on a full disk.
    monkeypatch.setattr(install.tarstream, "extract_argv", lambda dest, selinux: [
        "sh", "-c", f"cat > /dev/null; cat {said} >&2; exit 2"])
    plan = ClonePlan(**{**PLAN.__dict__, "streams": PLAN.streams[:1]})
    payloads = {"t-plan": plan.to_json().encode(), "t-fs-1": b"x" * 10240, "t-done": b""}
    transport = _consuming_transport(payloads)
    node = Installer(InstallOptions(prefix="t", target=str(tmp_path)), receive=transport)
    node._prepare_disks = lambda plan: None  # type: ignore[method-assign]
    report = node.run()
    assert report.result == "failed"
    assert report.reason == (
        "the consumer failed: tar --extract exited with status 2: "
        "tar: ./var/lib/images/disk-image.raw: Wrote only 4608 of 10240 bytes")
    step = next(s for s in report.steps if s.name == "extract /")
    assert step.result == "failed"
    assert step.detail == "tar said: " + said.read_text().strip()


def test_a_failed_command_is_reported_with_its_first_error() -> None:
    from ka.clone.install import _attempt
    from ka.clone.report import InstallLog
    from ka.errors import CommandError

    error = CommandError(["mkfs.ext4", "-F", "/dev/sda1"], 1,
                         "mke2fs 1.47.0 (5-Feb-2023)\n"
                         "mkfs.ext4: Device size reported to be zero.\n")
    log = InstallLog()

    def format_disk() -> None:
        with log.step("format /dev/sda1"):
            raise error

    # mke2fs prints its version banner first: the cause is the line after it.
    reason = _attempt(format_disk)
    assert reason == ("command failed with status 1: mkfs.ext4 -F /dev/sda1: "
                      "mkfs.ext4: Device size reported to be zero.")
    assert log.steps[0].detail == str(error)  # the whole tail stays in the report
    assert "Device size reported to be zero" in log.steps[0].detail


def _consuming_transport(payloads: dict[str, bytes], joined: list[str] | None = None) -> Any:
    """A transport that feeds each session's payload to the node's own consumer (a real
    tar or command), as the chain would, and fails the session when the consumer fails."""
    from ka.transport import ConsumerFailed

    def transport(sink: Any, options: ReceiveOptions) -> ReceiveReport:
        if joined is not None:
            joined.append(options.session or "")
        data = payloads[options.session or ""]
        sink.open()
        sink.write(memoryview(data))
        status, reason = sink.close()
        if status:
            raise ConsumerFailed(f"the consumer failed: {reason}")
        return ReceiveReport(len(data), 0.01, "d" * 64, 0, 1, "127.0.0.1:1")

    return transport
