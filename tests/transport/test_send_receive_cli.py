"""`ka send` / `ka receive` as a user types them: mistakes are said at once, with status 2
(a bad option) or the transport's own status, before anything listens or waits."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from transport_cluster import free_port

from ka.cli import main
from ka.transport import (
    ConsumerFailed,
    DigestMismatch,
    Rejected,
    SenderNotFound,
    StreamCut,
    TransportError,
)


def ka(*argv: str) -> int:
    started = time.monotonic()
    status = main(list(argv))
    assert time.monotonic() - started < 5, "a mistake must be said at once, not after a wait"
    return status


@pytest.mark.parametrize("extra", [
    ["--compress", "gzip"],
    ["--compress", "zstd:99"],
    ["--release-delay", "-3"],
    ["--min-nodes", "1", "--wait-timeout", "-1"],
    ["--min-nodes", "2"],
    ["--stall-timeout", "0"],
    ["--port", "70000"],
    ["--report", "/nonexistent-ka-folder/report.json"],
])
def test_bad_send_options_are_usage_errors(extra: list[str], tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "in"
    data.write_bytes(b"x")
    port = str(free_port())
    assert ka("send", "-n", "1", "--input", str(data), "--port", port, "--bind", "127.0.0.1",
              *extra) == 2
    err = capsys.readouterr().err
    assert "ka: error:" in err and "Traceback" not in err


def test_missing_input_fails_before_waiting_for_nodes(capsys: pytest.CaptureFixture[str]) -> None:
    assert ka("send", "-n", "1", "--input", "/nonexistent-ka-input", "--port", str(free_port()),
              "--bind", "127.0.0.1") == TransportError.exit_code
    assert "cannot read /nonexistent-ka-input" in capsys.readouterr().err


@pytest.mark.parametrize("extra", [
    ["--port", "70000", "--command", "cat"],
    ["--find-timeout", "-1", "--command", "cat"],
    [],  # no consumer and no --go-now
])
def test_bad_receive_options_are_usage_errors(extra: list[str],
                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert ka("receive", "--host", "127.0.0.1", *extra) == 2
    assert "ka: error:" in capsys.readouterr().err


def test_key_file_from_the_environment(monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("KA_KEY_FILE", "/nonexistent-ka-key")
    assert ka("receive", "--host", "127.0.0.1", "--command", "cat") == 2
    assert "/nonexistent-ka-key" in capsys.readouterr().err


def test_each_way_a_node_fails_has_its_own_exit_status() -> None:
    codes = [e.exit_code for e in (SenderNotFound, Rejected, DigestMismatch, StreamCut,
                                   ConsumerFailed)]
    assert codes == [10, 11, 12, 13, 14]  # documented in docs/transport.md
    assert TransportError.exit_code == 1
