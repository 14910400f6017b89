"""`ka clone` and `ka pxe serve` run the doctor's checks for their role before they start
anything, and stop with its lines and exit status 5; `--no-preflight` skips them."""

from __future__ import annotations

import gzip
import os
import socket
from pathlib import Path
from typing import Any

import pytest

from ka.boot.cmdline import BootOptions
from ka.boot.pxe import PxeConfig
from ka.boot.state import save_state
from ka.cli import main
from ka.doctor.roles import PreflightFailed

DESC = "label gpt\nlinux 100MiB fs=ext4 mount=/\n"


@pytest.fixture
def golden(tmp_path: Path) -> list[str]:
    """A plain golden tree with its layout: `ka clone` plans it without root."""
    root = tmp_path / "golden"
    (root / "etc").mkdir(parents=True)
    (root / "etc/fstab").write_text("LABEL=root / ext4 defaults 0 1\n")
    (tmp_path / "layout.desc").write_text(DESC)
    return ["clone", "--root", str(root), "--desc", f"sda={tmp_path / 'layout.desc'}",
            "--nodes", "1", "--join-timeout", "1"]


def test_the_exit_status_is_the_doctors() -> None:
    assert PreflightFailed.exit_code == 5


def test_clone_without_tar_stops_with_the_doctors_line(
        golden: list[str], capsys: pytest.CaptureFixture[str], path_without: Any) -> None:
    path_without("tar")
    assert main(golden) == 5
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("ka: error: ka doctor: 1 missing, ")
    assert "cannot be the golden node (ka clone) yet" in err[0]
    assert "missing  tool tar: not found in PATH (hint: apt-get install tar)" in err
    assert err[-1] == ("ka: hint: `ka doctor --golden` shows every check; --no-preflight skips "
                       "them")
    # The same in --dry-run: planning itself runs these tools.
    assert main([*golden, "--dry-run"]) == 5
    assert "missing  tool tar" in capsys.readouterr().err
    assert main([*golden, "--dry-run", "--no-preflight"]) != 5
    assert "ka doctor" not in capsys.readouterr().err


def test_clone_with_its_plan_port_taken_stops_before_listening(
        golden: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert main([*golden, "--port", str(port), "--bind", "127.0.0.1"]) == 5
        err = capsys.readouterr().err
        assert f"missing  port {port}/tcp: " in err and f"pid {os.getpid()}" in err
        assert "(plan session)" in err
        # Only the clone's own ports count: the plan and done sessions, P and P+1.
        assert f"{port + 1}/tcp+udp" not in err
        # Skipped, the clone meets the taken port itself, later.
        assert main([*golden, "--port", str(port), "--bind", "127.0.0.1",
                     "--no-preflight"]) not in (0, 5)
    assert "ka doctor" not in capsys.readouterr().err


def test_clone_checks_the_stage2_port_when_it_serves_stage2(
        golden: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stage2 = tmp_path / "stage2.cpio.gz"
    with gzip.open(stage2, "wb") as f:
        f.write(b"070701")  # what ka clone checks of a stage2 before it serves it
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        assert main([*golden, "--bind", "127.0.0.1", "--stage2", str(stage2),
                     "--stage2-port", str(port)]) == 5
    err = capsys.readouterr().err
    assert f"missing  port {port}/udp: " in err and "(stage2 for booting nodes)" in err


def test_pxe_serve_without_dnsmasq_stops_before_starting_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], path_without: Any) -> None:
    state = str(tmp_path / "pxe")
    save_state(PxeConfig(interface="eth9", state_dir=state, tftp_root=str(tmp_path / "tftp"),
                         range=("10.9.0.100", "10.9.0.199"), boot=BootOptions()))
    path_without("dnsmasq")
    assert main(["pxe", "serve", "--dir", state]) == 5
    err = capsys.readouterr().err.splitlines()
    assert "cannot be the boot server (ka pxe serve) yet" in err[0]
    assert "missing  tool dnsmasq: not found in PATH (hint: apt-get install dnsmasq-base)" in err
    # Skipped: ka pxe serve's own check of the program, which knows no preflight.
    assert main(["pxe", "serve", "--dir", state, "--no-preflight"]) not in (0, 5)
    assert "required program 'dnsmasq'" in capsys.readouterr().err
