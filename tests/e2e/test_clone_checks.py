"""The clone checks: pure parts without root, and the whole verdict on real loop disks.

The disk test makes a clone by hand (format, tar copy, fix-ups done here) so that the verifier
is shown to pass a correct clone and to catch each kind of wrong one, independently of
`ka clone`.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ka.lab.checks import check_hostname, check_identities, parse_fstab
from ka.lab.disks import (
    Image,
    attached_image,
    expected_partitions,
    fill_esp,
    format_golden,
    fstab_entries,
    golden_desc,
    mounted_tree,
)
from ka.lab.golden import REMOVED_BY_FIXUPS, GoldenSpec, build_tree, write_fstab
from ka.lab.verdict import FIXED_UP, GoldenReference, judge_node
from ka.lab.verify import digest_tree

MiB = 1024 * 1024
SIZE = 640 * MiB


def test_parse_fstab_fills_defaults_and_skips_comments() -> None:
    lines = parse_fstab("# c\n\nUUID=a / ext4 defaults 0 1\n/dev/sdb1\t/data xfs\n")
    assert [(x.spec, x.mountpoint, x.fstype, x.options, x.rest) for x in lines] == [
        ("UUID=a", "/", "ext4", "defaults", ("0", "1")),
        ("/dev/sdb1", "/data", "xfs", "defaults", ("0", "0")),
    ]


def test_identities() -> None:
    a, b, g = "1" * 32, "2" * 32, "f" * 32
    assert check_identities(g, {"node1": a, "node2": b}).ok
    shared = check_identities(g, {"node1": a, "node2": a})
    assert not shared.ok and "share" in shared.detail
    assert not check_identities(g, {"node1": g}).ok
    assert not check_identities(g, {"node1": "xyz"}).ok


def test_hostname() -> None:
    assert check_hostname("node1", "node01", ["node01", "node02"]).ok
    assert not check_hostname("node1", "golden", ["node01"]).ok


@contextlib.contextmanager
def _golden(tmp: Path) -> Iterator[tuple[Image, GoldenReference]]:
    desc = golden_desc(SIZE)
    expected = expected_partitions(desc, SIZE)
    with contextlib.ExitStack() as stack:
        image = stack.enter_context(attached_image(tmp / "golden.img", SIZE))
        format_golden(image, desc)
        root = stack.enter_context(mounted_tree(image, expected, tmp / "golden", False))
        build_tree(root, GoldenSpec(data_bytes=8 * MiB, small_files=300,
                                    sparse_apparent=64 * MiB))
        fill_esp(image.partition(1))
        fstab = write_fstab(root, fstab_entries(image, expected))
        excluded = ("var/log/app",)
        yield image, GoldenReference(
            root, digest_tree(root, prune=excluded, ignore=FIXED_UP), fstab,
            (root / "etc/machine-id").read_text().strip(), image.partition(1), excluded, True)


def _clone_by_hand(golden: Image, ref: GoldenReference, node: Image, tmp: Path,
                   hostname: str, tar_copy: Callable[[Path, Path], None]) -> None:
    desc = golden_desc(node.size)
    expected = expected_partitions(desc, node.size)
    format_golden(node, desc)
    subprocess.run(["dd", f"if={golden.partition(1)}", f"of={node.partition(1)}", "bs=1M",
                    "status=none", "conv=fsync"], check=True)
    with mounted_tree(node, expected, tmp / "clone", False) as root:
        tar_copy(ref.root, root)
        for d in ref.excluded:
            for child in (root / d).iterdir():
                child.unlink()
        write_fstab(root, fstab_entries(node, expected))
        (root / "etc/machine-id").write_text(os.urandom(16).hex() + "\n")
        (root / "etc/hostname").write_text(hostname + "\n")
        (root / "etc/hosts").write_text(f"127.0.0.1\tlocalhost\n127.0.1.1\t{hostname}\n")
        for key in (root / "etc/ssh").glob("ssh_host_*"):
            key.write_text("regenerated\n")
        for rel in REMOVED_BY_FIXUPS:
            (root / rel).unlink()


@pytest.mark.root
def test_verdict_on_real_disks(tmp_path: Path, tar_copy: Callable[[Path, Path], None]) -> None:
    with _golden(tmp_path) as (golden, ref), \
            attached_image(tmp_path / "node.img", SIZE + 64 * MiB) as node:
        _clone_by_hand(golden, ref, node, tmp_path, "node01", tar_copy)
        expected = expected_partitions(golden_desc(node.size), node.size)
        verdict = judge_node("node1", node, expected, ref, ["node01"], tmp_path / "check")
        assert verdict.ok, verdict.describe()
        assert verdict.hostname == "node01" and len(verdict.machine_id) == 32

        # The same clone judged against the golden disk's plan: the table is not as planned.
        wrong = judge_node("node1", node, expected_partitions(golden_desc(SIZE), SIZE), ref,
                           ["node01"], tmp_path / "check")
        assert not wrong.ok
        assert not next(c for c in wrong.checks if c.name == "partition table").ok

        # A clone whose fstab still names the golden UUIDs, with a lost file and a lost ACL.
        clone_root = tmp_path / "clone"
        with mounted_tree(node, expected, clone_root, False) as root:
            (root / "etc/fstab").write_text(ref.fstab)
            (root / "usr/bin/su").unlink()
            subprocess.run(["setfacl", "-b", str(root / "srv/shared/acl-file")], check=True)
            (root / "etc/hostname").write_text("golden\n")
        bad = judge_node("node1", node, expected, ref, ["node01"], tmp_path / "check")
        failed = {c.name for c in bad.checks if not c.ok}
        assert failed == {"fstab UUIDs", "hostname", "/etc/hosts names the node"}, bad.describe()
        assert bad.tree is not None
        # Dropping an ACL also changes the group bits (they showed the ACL mask).
        assert {(d.path, d.what) for d in bad.tree.differences} == {
            ("usr/bin/su", "missing"), ("srv/shared/acl-file", "xattrs"),
            ("srv/shared/acl-file", "mode")}
    assert not any(m for m in Path("/proc/self/mounts").read_text().splitlines()
                   if str(tmp_path) in m)
