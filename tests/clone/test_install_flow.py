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
    assert [s.name for s in report.steps] == [
        "receive plan", "map disks", "stream t-fs-1", "stream t-raw-1"]
    assert [s.result for s in report.steps] == ["ok", "failed", "skipped", "skipped"]
    assert "relayed 5000 bytes" in report.steps[2].detail
    done = fake.calls[-1]
    assert done.wait_release and done.session == "t-done" and done.name == "node02"
    assert done.attachment is not None
    assert InstallReport.from_json(done.attachment) == report


def test_host_mode_retries_a_join_refused_during_the_changeover() -> None:
    payloads = {"t-plan": PLAN.to_json().encode(), "t-fs-1": b"", "t-raw-1": b"",
                "t-done": b""}
    refusals: list[Exception] = [
        Rejected("the sender refused us: the session has already started; join the next one"),
        StreamCut("the sender closed the connection during the join: connection closed"),
    ]
    fake = FakeTransport(payloads, refusals)
    report = installer(fake, host="127.0.0.1").run()
    assert fake.joined == ["t-plan", "t-fs-1", "t-raw-1", "t-done"]
    assert len(fake.calls) == 6
    assert all(c.host == "127.0.0.1" and c.session is None for c in fake.calls)
    assert report.steps[0].name == "receive plan" and report.steps[0].result == "ok"


@pytest.mark.parametrize("error", [
    Rejected("the sender at 127.0.0.1:1 does not hold our key"),
    StreamCut("the sender aborted the session: boom"),
])
def test_other_refusals_are_not_retried(error: Exception) -> None:
    fake = FakeTransport({"t-plan": b""}, [error])
    with pytest.raises(type(error)):
        installer(fake, host="127.0.0.1", find_timeout=5).run()
    assert len(fake.calls) == 1


def test_session_mode_is_not_retried() -> None:
    fake = FakeTransport({"t-plan": b""}, [Rejected("the session has already started")])
    with pytest.raises(Rejected):
        installer(fake).run()


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
