"""A lab mount while another mount namespace still holds a copy of the same filesystem."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from ka.lab.disks import attached_image, mounted
from ka.run import run

pytestmark = [pytest.mark.root]


def test_a_read_only_mount_waits_for_a_copy_held_in_another_namespace(tmp_path: Path) -> None:
    with attached_image(tmp_path / "disk.img", 64 << 20) as image:
        run(["mkfs.ext4", "-q", str(image.device)])
        holder = None
        try:
            with mounted(image.device, tmp_path / "rw", "ext4", "rw"):
                # A process of another test entering a mount namespace of its own while this
                # filesystem is mounted read-write: its copy outlives the unmount below.
                holder = subprocess.Popen(["unshare", "--mount", "sleep", "2"])
                time.sleep(0.5)
            busy = run(["mount", "-t", "ext4", "-o", "ro,noload", image.device,
                        str(tmp_path / "rw")], check=False)
            if busy.returncode == 0:
                run(["umount", str(tmp_path / "rw")])
            assert busy.returncode == 32 and "mount point busy" in busy.stderr, busy.stderr
            with mounted(image.device, tmp_path / "ro", "ext4", "ro,noload") as tree:
                assert holder.poll() is not None  # it waited for the copy to go
                assert (tree / "lost+found").is_dir()
        finally:
            if holder is not None:
                holder.kill()
                holder.wait()
