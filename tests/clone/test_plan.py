"""The clone plan survives JSON exactly, and a plan from another version is refused."""

from __future__ import annotations

import dataclasses
import json

import pytest

from ka.clone.hostnames import HostnameRule
from ka.clone.plan import (
    PLAN_VERSION,
    BootloaderRequest,
    ClonePlan,
    ExcludedDir,
    GoldenDisk,
    GoldenPartition,
    PlanError,
    Stream,
)


def sample_plan() -> ClonePlan:
    return ClonePlan(
        prefix="lab42",
        nodes=3,
        disks=(
            GoldenDisk("sda", "label gpt\nlinux fill fs=ext4 mount=/\n", 8 << 30, "/dev/sda",
                       bytes(range(256)) + bytes(184)),
            GoldenDisk("sdb", "label dos\nlinux 500\n"),
        ),
        partitions=(
            GoldenPartition("sda", 1, "ext4", "/", "root", "1b4e28ba-2fa1-11d2-883f-0016d3cca427",
                            "c0ffee00-0000-4000-8000-000000000001", "/dev/sda1", 123456, "tar"),
            GoldenPartition("sdb", 1, None, None),
        ),
        streams=(Stream("lab42-fs-1", "tar", "sda", 1, "/", ("./tmp", "./var/cache")),
                 Stream("lab42-raw-1", "raw", "sdb", 1, None, (), 500 << 20)),
        fstab="# fstab\nUUID=1b4e28ba-2fa1-11d2-883f-0016d3cca427 / ext4 defaults 0 1\n",
        excluded_disks=("sdc",),
        excluded_refs=("/dev/sdc1",),
        excluded_dirs=(ExcludedDir("/tmp", 0o1777, 0, 0),),
        hostnames=HostnameRule(table=(("52:54:00:aa:bb:01", "alpha"), ("3", "gamma"))),
        golden_hostname="golden",
        bootloader=BootloaderRequest("grub", ("--with=ata_piix",)),
        compress="zstd:3",
        release_delay=5,
        selinux=False,
        notes=("a note",),
    )


def test_json_round_trip_is_exact() -> None:
    plan = sample_plan()
    text = plan.to_json()
    assert ClonePlan.from_json(text) == plan
    assert ClonePlan.from_json(text.encode()) == plan
    assert json.loads(text)["version"] == PLAN_VERSION


def test_defaults_round_trip() -> None:
    plan = ClonePlan("ka", 1, (), (), (), "")
    assert ClonePlan.from_json(plan.to_json()) == plan


def test_sessions_are_in_order() -> None:
    assert sample_plan().sessions == ("lab42-plan", "lab42-fs-1", "lab42-raw-1", "lab42-done")


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.update(version=PLAN_VERSION + 1), "version"),
    (lambda d: d.update(kind="something-else"), "did not carry"),
    (lambda d: d.update(surprise=1), "unknown fields"),
    (lambda d: d.update(nodes="three"), "expected int"),
    (lambda d: d["disks"][0].pop("name"), "malformed"),
])
def test_bad_plans_are_refused(mutate, message: str) -> None:  # type: ignore[no-untyped-def]
    data = json.loads(sample_plan().to_json())
    mutate(data)
    with pytest.raises(PlanError) as e:
        ClonePlan.from_json(json.dumps(data))
    assert message in str(e.value)


def test_a_plan_of_an_older_ka_is_refused_with_the_version_message() -> None:
    # Version 3 had no inodes, 2 no later_port (1 no report session, no partition aliases): a
    # node reading such a plan (or an old node reading ours) must say "version", not
    # "unknown fields".
    data = json.loads(sample_plan().to_json())
    assert data["version"] == 4
    data["version"] = 3
    with pytest.raises(PlanError) as e:
        ClonePlan.from_json(json.dumps(data))
    assert e.value.message == "clone plan version 3 is not supported (this ka reads version 4)"
    assert e.value.hint == "run the same ka version on the golden node and on the nodes"


def test_garbage_is_refused() -> None:
    with pytest.raises(PlanError):
        ClonePlan.from_json(b"\x00\x01 not json")


def test_later_sessions_may_count_from_a_port_of_their_own() -> None:
    plan = dataclasses.replace(sample_plan(), later_port=41000)
    assert plan.session_port(plan.plan_session, 30765) == 30765
    assert [plan.session_port(x, 30765) for x in plan.sessions[1:]] == list(
        range(41000, 41000 + len(plan.sessions) - 1))
    assert ClonePlan.from_json(plan.to_json()).later_port == 41000
