"""The probe's reading of lsblk, sfdisk, blkid and findmnt output, for every kind of disk name.

The tools' JSON is given here, so these run without root and without the disks themselves.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Sequence

import pytest

from ka.disk import parse_desc, probe
from ka.disk.devices import Mount
from ka.disk.layout import GIB
from ka.run import Result

pytestmark = pytest.mark.usefixtures("no_subprocess")
# The module, not the function `ka.disk.probe` that the package exports under the same name.
probe_module = importlib.import_module("ka.disk.probe")

ESP = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B"
LINUX = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"
SWAP = "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F"

LSBLK = [
    ("sda", "disk", 8 * GIB),
    ("vda", "disk", 8 * GIB),
    ("nvme0n1", "disk", 64 * GIB),
    ("mmcblk0", "disk", 8 * GIB),
    ("mmcblk0boot0", "disk", 4 << 20),
    ("mmcblk0rpmb", "disk", 4 << 20),
    ("loop0", "loop", GIB),
    ("zram0", "disk", GIB),
    ("ram0", "disk", GIB),
    ("sr0", "rom", GIB),
    ("sdb", "disk", 0),  # a card reader without a card
]


def _table(label: str, device: str, total: int, parts: list[tuple[int, int, int, str]]) -> dict:  # type: ignore[type-arg]
    sep = "p" if device[-1].isdigit() else ""
    table = {
        "label": label,
        "device": device,
        "unit": "sectors",
        "sectorsize": 512,
        "partitions": [
            {"node": f"{device}{sep}{n}", "start": start, "size": size, "type": code}
            for n, start, size, code in parts
        ],
    }
    if label == "gpt":
        table["firstlba"], table["lastlba"] = 34, total - 34
    return {"partitiontable": table}


NVME_TOTAL = 64 * GIB // 512
MMC_TOTAL = 8 * GIB // 512
SFDISK = {
    "/dev/nvme0n1": _table(
        "gpt",
        "/dev/nvme0n1",
        NVME_TOTAL,
        [
            (1, 2048, 1048576, ESP),
            (2, 1050624, 41943040, LINUX),
            (3, 42993664, NVME_TOTAL - 34 - 42993664 + 1, SWAP),
        ],
    ),
    "/dev/mmcblk0": _table(
        "dos",
        "/dev/mmcblk0",
        MMC_TOTAL,
        [
            (1, 2048, 524288, "c"),
            (2, 526336, MMC_TOTAL - 526336, "5"),
            (5, 528384, 1048576, "82"),
            (6, 1579008, MMC_TOTAL - 1579008, "83"),
        ],
    ),
}
SFDISK["/dev/mmcblk0"]["partitiontable"]["partitions"][0]["bootable"] = True
SFDISK["/dev/nvme0n1"]["partitiontable"]["partitions"][0]["name"] = "EFI System"
BLKID = {
    "/dev/nvme0n1p1": {"TYPE": "vfat", "LABEL": "EFI"},
    "/dev/nvme0n1p2": {"TYPE": "ext4", "LABEL": "root"},
    "/dev/nvme0n1p3": {"TYPE": "swap", "LABEL": "sw"},
    "/dev/mmcblk0p1": {"TYPE": "vfat", "LABEL": "BOOT"},
    "/dev/mmcblk0p5": {"TYPE": "swap"},
    "/dev/mmcblk0p6": {"TYPE": "ext4", "LABEL": "root"},
}
MOUNTS = [
    Mount("/dev/nvme0n1p2", "/", "ext4", "rw"),
    Mount("/dev/nvme0n1p1", "/boot/efi", "vfat", "rw"),
    Mount("/dev/mmcblk0p6", "/mnt/card", "ext4", "rw"),
    Mount("/dev/mmcblk0p1", "/mnt/card/boot", "vfat", "rw"),
]


@pytest.fixture
def tools(monkeypatch: pytest.MonkeyPatch) -> None:
    def run(argv: Sequence[str], **kwargs: object) -> Result:
        if argv[0] == "lsblk":
            devices = [{"name": n, "path": f"/dev/{n}", "type": t, "size": s} for n, t, s in LSBLK]
            return Result(list(argv), 0, json.dumps({"blockdevices": devices}), "")
        if argv[:2] == ["sfdisk", "--json"]:
            return Result(list(argv), 0, json.dumps(SFDISK[argv[2]]), "")
        raise AssertionError(f"unexpected command {argv}")

    monkeypatch.setattr(probe_module, "run", run)
    monkeypatch.setattr(probe_module, "blkid_probe", lambda node: BLKID.get(node, {}))
    monkeypatch.setattr(probe_module, "mounts", lambda: MOUNTS)
    monkeypatch.setattr(probe_module, "ensure_partition_nodes", lambda disk: [])
    monkeypatch.setattr(probe_module, "sector_size", lambda disk: 512)
    monkeypatch.setattr(
        probe_module, "disk_size", lambda disk: 512 * (NVME_TOTAL if "nvme" in disk else MMC_TOTAL)
    )


@pytest.mark.usefixtures("tools")
def test_machine_disks_are_whole_disks_of_every_name_but_no_ram_rom_loop_or_boot_area() -> None:
    assert probe_module.list_disks() == ["/dev/sda", "/dev/vda", "/dev/nvme0n1", "/dev/mmcblk0"]


@pytest.mark.usefixtures("tools")
def test_nvme_gpt_disk() -> None:
    desc = probe(["/dev/nvme0n1"])["/dev/nvme0n1"].to_desc()
    assert desc == (
        "label gpt\n"
        'esp 512MiB fs=vfat mount=/boot/efi label=EFI name="EFI System"\n'
        "linux 20GiB fs=ext4 mount=/ label=root\n"
        "swap fill label=sw\n"
    )
    assert parse_desc(desc).to_desc() == desc


@pytest.mark.usefixtures("tools")
def test_mmcblk_mbr_disk_with_logical_partitions() -> None:
    desc = probe(["/dev/mmcblk0"])["/dev/mmcblk0"].to_desc()
    assert desc == (
        "label dos\n"
        "typec 256MiB fs=vfat mount=/mnt/card/boot label=BOOT boot\n"
        "extended fill\n"
        "logical swap 512MiB\n"
        "logical linux fill fs=ext4 mount=/mnt/card label=root\n"
    )
    assert parse_desc(desc).to_desc() == desc


def _machine(monkeypatch: pytest.MonkeyPatch, disks: Sequence[str], readable: Sequence[str]
             ) -> None:
    """A machine with `disks` (lsblk), of which only `readable` give sfdisk their table."""
    def run(argv: Sequence[str], **kwargs: object) -> Result:
        if argv[0] == "lsblk":
            devices = [{"name": d, "path": f"/dev/{d}", "type": "disk", "size": 8 * GIB}
                       for d in disks]
            return Result(list(argv), 0, json.dumps({"blockdevices": devices}), "")
        if argv[:2] == ["sfdisk", "--json"] and argv[2] in readable:
            return Result(list(argv), 0, json.dumps(SFDISK[argv[2]]), "")
        if argv[:2] == ["sfdisk", "--json"]:
            return Result(list(argv), 1, "", f"sfdisk: cannot open {argv[2]}: Permission denied\n")
        raise AssertionError(f"unexpected command {argv}")

    monkeypatch.setattr(probe_module, "run", run)


@pytest.mark.usefixtures("tools")
@pytest.mark.parametrize("disks", [[], ["nvme0n1", "mmcblk0"]], ids=["no disk", "unreadable"])
def test_probe_of_the_machine_fails_when_no_disk_is_described(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], disks: list[str]
) -> None:
    from ka.cli import main

    _machine(monkeypatch, disks, readable=())
    assert main(["desc", "probe"]) == 1
    out, err = capsys.readouterr()
    assert "no disk could be described" in err and "ka desc probe /dev/sda" in err
    if disks:  # what each disk said is kept, in the comments and in the error
        assert "# /dev/nvme0n1: 65536 MiB, 512-byte sectors; cannot be read: sfdisk: cannot " \
               "open /dev/nvme0n1: Permission denied" in out
        assert "/dev/mmcblk0 cannot be read" in err
    else:
        assert out == "" and "this machine shows no disk" in err


@pytest.mark.usefixtures("tools")
def test_probe_of_the_machine_succeeds_when_one_disk_is_described(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from ka.cli import main

    _machine(monkeypatch, ["nvme0n1", "mmcblk0"], readable=("/dev/mmcblk0",))
    assert main(["desc", "probe"]) == 0
    out = capsys.readouterr().out
    assert "cannot be read" in out and "logical linux fill fs=ext4 mount=/mnt/card" in out
