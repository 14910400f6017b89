import signal
import subprocess
import time
from pathlib import Path

import pytest

from ka.errors import CommandError, ToolMissingError, first_error_line
from ka.run import reap_group, require, run, signal_group, spawn


def test_run_captures_output_with_fixed_locale() -> None:
    result = run(["sh", "-c", 'printf "%s" "$LC_ALL"'])
    assert result.stdout == "C"
    assert result.returncode == 0


def test_failure_shows_command_status_and_stderr() -> None:
    with pytest.raises(CommandError) as info:
        run(["sh", "-c", "echo boom >&2; exit 3"])
    err = info.value
    assert err.returncode == 3
    assert "boom" in str(err)
    assert "sh -c" in str(err)


def test_failure_shows_the_tail_of_stdout_when_stderr_is_empty() -> None:
    # mkfs.jfs, for one, says why it refuses on stdout only.
    with pytest.raises(CommandError) as info:
        run(["sh", "-c", "seq 1 30; echo 'Partition must be at least 16 megabytes.'; exit 22"])
    err = info.value
    assert err.stderr == "" and err.stdout.endswith("16 megabytes.\n")
    assert str(err).splitlines() == [
        "command failed with status 22: sh -c 'seq 1 30; echo '\"'\"'Partition must be at "
        "least 16 megabytes.'\"'\"'; exit 22'",
        *map(str, range(22, 31)), "Partition must be at least 16 megabytes."]


def test_stderr_comes_before_stdout_when_a_command_says_both() -> None:
    with pytest.raises(CommandError) as info:
        run(["sh", "-c", "echo progress; echo broke >&2; exit 1"])
    assert str(info.value).splitlines()[1:] == ["broke"]


def test_missing_tool_names_package() -> None:
    with pytest.raises(ToolMissingError) as info:
        require("definitely-not-a-ka-tool")
    assert info.value.tool == "definitely-not-a-ka-tool"


def test_stdin_is_devnull_by_default() -> None:
    assert run(["cat"]).stdout == ""


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[-1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_a_group_is_ended_whole_and_a_deaf_one_killed() -> None:
    # The shell's background child is in the group too: ending only the shell would leave it.
    proc = spawn(["sh", "-c", "sleep 30 & echo $!; wait"], stdout=subprocess.PIPE,
                 start_new_session=True)
    assert proc.stdout is not None
    child = int(proc.stdout.readline())
    signal_group(proc)
    assert reap_group(proc, grace=5) == -signal.SIGTERM
    deadline = time.monotonic() + 5
    while not _gone(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _gone(child)
    deaf = spawn(["sh", "-c", "trap '' TERM; sleep 30"], start_new_session=True)
    time.sleep(0.2)
    signal_group(deaf)
    assert reap_group(deaf, grace=0.5) == -signal.SIGKILL
    signal_group(deaf)  # already ended: nothing happens


# What GNU tar says when the target fills up, after a warning, and its epilogue.
TAR_DISK_FULL = """\
tar: Ignoring unknown extended header keyword 'LIBARCHIVE.xattr.user.origin'
tar: ./var/lib/images/disk-image.raw: Wrote only 4608 of 10240 bytes
tar: ./usr/share/doc/pkg001/file00.txt: Cannot open: No space left on device
tar: Exiting with failure status due to previous errors
"""


def test_the_first_error_line_names_the_cause() -> None:
    assert first_error_line(TAR_DISK_FULL) == (
        "tar: ./var/lib/images/disk-image.raw: Wrote only 4608 of 10240 bytes")
    assert first_error_line("tar: x: Cannot write: No space left on device\n"
                            "tar: Error is not recoverable: exiting now\n") == (
        "tar: x: Cannot write: No space left on device")
    # nothing but an epilogue: that is all there is to show
    assert first_error_line("tar: Exiting with failure status due to previous errors\n") == (
        "tar: Exiting with failure status due to previous errors")
    assert first_error_line("\n  \n") == ""
    assert first_error_line("mke2fs 1.47.0 (5-Feb-2023)\n"
                            "mkfs.ext4: Device size reported to be zero.\n") == (
        "mkfs.ext4: Device size reported to be zero.")


def test_a_failed_command_keeps_its_cause_and_its_whole_tail(tmp_path: Path) -> None:
    said = tmp_path / "tar.err"
    said.write_text(TAR_DISK_FULL)
    with pytest.raises(CommandError) as info:
        run(["sh", "-c", f"cat {said} >&2; exit 2"])
    err = info.value
    assert err.cause == "tar: ./var/lib/images/disk-image.raw: Wrote only 4608 of 10240 bytes"
    assert str(err).splitlines()[1:] == TAR_DISK_FULL.splitlines()
    # stdout only (mkfs.jfs): the message comes after the progress, so the last line
    with pytest.raises(CommandError) as info:
        run(["sh", "-c", "seq 1 3; echo 'Partition must be at least 16 megabytes.'; exit 22"])
    assert info.value.cause == "Partition must be at least 16 megabytes."
