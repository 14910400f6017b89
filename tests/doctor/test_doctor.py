"""`ka doctor`: a tool missing from PATH, a port taken by this test, the key file's mode, the
JSON shape, and the /proc parsing it rests on. Loopback only; nothing is changed."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ka.boot.init_script import STAGE2_PORT
from ka.cli import main
from ka.doctor.checks import key_file, port_ranges
from ka.doctor.ports import parse_proc_net, port_uses


def doctor(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any]]:
    rc = main(["doctor", *args, "--json"])
    return rc, json.loads(capsys.readouterr().out)


def by_name(report: dict[str, Any], kind: str, name: str) -> dict[str, Any]:
    found = [c for c in report["checks"] if c["kind"] == kind and c["name"] == name]
    assert found, f"no {kind} {name} check in {report['checks']}"
    return found[0]


def test_a_tool_removed_from_path_is_missing_with_its_package(
        capsys: pytest.CaptureFixture[str], path_without: Any) -> None:
    path_without("sfdisk")
    rc, report = doctor(capsys, "--golden", "--sessions", "1")
    sfdisk = by_name(report, "tool", "sfdisk")
    assert sfdisk["status"] == "missing"
    assert sfdisk["hint"] == "apt-get install fdisk"
    assert by_name(report, "tool", "tar")["status"] == "ok"
    assert rc == 5 and report["works"] is False


def test_a_missing_mkfs_tool_is_named_for_the_layout(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], path_without: Any) -> None:
    desc = tmp_path / "layout.desc"
    desc.write_text("label gpt\nlinux 1GiB fs=xfs mount=/\n")
    path_without("mkfs.xfs")
    rc, report = doctor(capsys, "--node", "--desc", str(desc), "--status-port", "0")
    xfs = by_name(report, "tool", "mkfs.xfs")
    assert (xfs["status"], xfs["hint"]) == ("missing", "apt-get install xfsprogs")
    assert rc == 5


def test_the_text_output_is_one_line_per_check_and_a_verdict(
        capsys: pytest.CaptureFixture[str], path_without: Any) -> None:
    path_without("tar")
    rc = main(["doctor", "--golden", "--sessions", "1"])
    lines = capsys.readouterr().out.splitlines()
    assert rc == 5
    assert "missing  tool tar: not found in PATH (hint: apt-get install tar)" in lines
    assert all(line.split()[0] in ("ok", "missing", "warning") for line in lines[:-1])
    assert lines[-1].startswith("ka doctor: ") and "cannot be the golden node" in lines[-1]


def test_a_taken_tcp_port_is_named_with_its_process(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        rc, report = doctor(capsys, "--golden", "--port", str(port), "--sessions", "2")
    taken = by_name(report, "port", f"{port}/tcp")
    assert taken["status"] == "missing"
    assert "127.0.0.1" in taken["detail"] and f"pid {os.getpid()}" in taken["detail"]
    assert "plan session" in taken["detail"] and "--port" in taken["hint"]
    free = by_name(report, "port", f"{port}/udp, {port + 1}/tcp+udp")
    assert free["status"] == "ok"
    assert rc == 5


def test_the_stage2_port_of_the_golden_node(capsys: pytest.CaptureFixture[str]) -> None:
    """Booting nodes ask for stage2 on a port of its own, outside the session block: taken
    by another program, the golden node cannot serve it (TCP listener or discovery socket)."""
    _, report = doctor(capsys, "--golden", "--sessions", "1")
    assert any(c["kind"] == "port" and c["name"].startswith(f"{STAGE2_PORT}/")
               for c in report["checks"]), "the default is ka clone's --stage2-port"
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        s.listen()
        port = s.getsockname()[1]
        rc, report = doctor(capsys, "--golden", "--sessions", "1", "--stage2-port", str(port))
        _, unused = doctor(capsys, "--golden", "--sessions", "1", "--stage2-port", "0")
    taken = by_name(report, "port", f"{port}/tcp")
    assert taken["status"] == "missing" and rc == 5 and report["works"] is False
    assert f"pid {os.getpid()}" in taken["detail"] and "stage2" in taken["detail"]
    assert "--stage2-port" in taken["hint"] and "ka.stage2_port=" in taken["hint"]
    assert by_name(report, "port", f"{port}/udp")["status"] == "ok"
    assert not any(str(port) in c["name"] for c in unused["checks"]), "0: not served"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("0.0.0.0", 0))
        port = s.getsockname()[1]
        _, report = doctor(capsys, "--golden", "--sessions", "1", "--stage2-port", str(port))
    assert by_name(report, "port", f"{port}/udp")["status"] == "missing"


def test_a_taken_udp_port_on_every_address(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("0.0.0.0", 0))
        port = s.getsockname()[1]
        (use,) = port_uses([("udp", port)])
    assert use.taken and "0.0.0.0" in use.describe()
    assert any(h.pid == os.getpid() for h in use.holders)


def test_the_status_port_of_a_node(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket(socket.AF_INET6) as s:
        s.bind(("::1", 0))
        s.listen()
        port = s.getsockname()[1]
        _, report = doctor(capsys, "--node", "--status-port", str(port))
    check = by_name(report, "port", f"{port}/tcp")
    assert check["status"] == "missing" and "::1" in check["detail"]
    assert "--status-port 0" in check["hint"]


def test_json_shape(capsys: pytest.CaptureFixture[str]) -> None:
    for role in ("golden", "node", "pxe"):
        rc, report = doctor(capsys, f"--{role}")
        assert set(report) == {"role", "works", "checks"} and report["role"] == role
        assert rc == (0 if report["works"] else 5)
        assert report["works"] == all(c["status"] != "missing" for c in report["checks"])
        kinds = {c["kind"] for c in report["checks"]}
        assert {"tool", "port", "interface"} <= kinds
        for c in report["checks"]:
            assert set(c) == {"kind", "name", "status", "detail", "hint"}
            assert c["status"] in ("ok", "missing", "warning")
            assert isinstance(c["detail"], str) and c["detail"]


def test_pxe_checks_dhcp_and_tftp(capsys: pytest.CaptureFixture[str]) -> None:
    _, report = doctor(capsys, "--pxe")
    names = " ".join(c["name"] for c in report["checks"] if c["kind"] == "port")
    assert "67/udp" in names and "69/udp" in names
    assert by_name(report, "tool", "dnsmasq")


def test_key_file_modes(tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_text(bytes(range(32)).hex() + "\n")
    key.chmod(0o600)
    assert key_file(str(key))[0].status == "ok"
    key.chmod(0o644)
    (loose,) = key_file(str(key))
    assert loose.status == "warning" and "0644" in loose.detail
    assert loose.hint == f"chmod 600 {key}"
    key.write_text("")
    assert key_file(str(key))[0].status == "missing"
    assert key_file(str(tmp_path / "absent"))[0].status == "missing"


def test_no_key_file_is_a_warning(capsys: pytest.CaptureFixture[str],
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KA_KEY_FILE", raising=False)
    _, report = doctor(capsys, "--golden", "--sessions", "1")
    assert by_name(report, "key", "key file")["status"] == "warning"


def test_parse_proc_net() -> None:
    tcp = (
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  "
        "timeout inode\n"
        "   0: 0100007F:782D 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0 "
        "       0 4242 1 0000000000000000 100 0 0 10 0\n"
        "   1: 0100007F:9C40 0100007F:782D 01 00000000:00000000 00:00000000 00000000     0 "
        "       0 4343 1 0000000000000000 20 4 30 10 -1\n"
    )
    (listener,) = parse_proc_net(tcp, "tcp")  # the established connection is not a holder
    assert (listener.address, listener.port, listener.inode) == ("127.0.0.1", 30765, 4242)
    udp6 = (
        "  sl  local_address                         remote_address                        st "
        "tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n"
        "  1: 00000000000000000000000000000000:0043 00000000000000000000000000000000:0000 07 "
        "00000000:00000000 00:00000000 00000000     0        0 77 2 0000000000000000 0\n"
        "  2: 00000000000000000000000001000000:0045 00000000000000000000000000000000:0000 07 "
        "00000000:00000000 00:00000000 00000000     0        0 78 2 0000000000000000 0\n"
    )
    any_, loopback = parse_proc_net(udp6, "udp")
    assert (any_.address, any_.port) == ("::", 67)
    assert (loopback.address, loopback.port) == ("::1", 69)


def test_port_ranges() -> None:
    assert port_ranges([("tcp", 1), ("udp", 1), ("tcp", 2), ("udp", 2)]) == "1-2/tcp+udp"
    assert port_ranges([("udp", 67), ("udp", 69)]) == "67/udp, 69/udp"
    assert port_ranges([("udp", 5), ("tcp", 6), ("udp", 6)]) == "5/udp, 6/tcp+udp"


def test_the_command_runs_in_bounded_time() -> None:
    result = subprocess.run([sys.executable, "-m", "ka", "doctor", "--node", "--json"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode in (0, 5), result.stderr
    assert json.loads(result.stdout)["role"] == "node"


def test_golden_identity_and_pinned_key(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KA_IDENTITY", raising=False)
    monkeypatch.delenv("KA_GOLDEN_KEY", raising=False)
    identity = tmp_path / "identity"
    assert main(["keygen", "--identity", str(identity)]) == 0
    capsys.readouterr()
    _, report = doctor(capsys, "--golden", "--sessions", "1", "--identity", str(identity))
    assert by_name(report, "key", "golden identity")["status"] == "ok"
    (identity / "golden.key").chmod(0o644)
    _, report = doctor(capsys, "--golden", "--sessions", "1", "--identity", str(identity))
    loose = by_name(report, "key", "golden identity")
    assert loose["status"] == "missing" and "chmod 600" in loose["hint"]
    _, report = doctor(capsys, "--node", "--golden-key", str(identity / "golden.pub"))
    assert by_name(report, "key", "golden key")["status"] == "ok"
    _, report = doctor(capsys, "--node")
    assert by_name(report, "key", "golden key")["status"] == "warning"
