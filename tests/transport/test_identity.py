"""The golden identity, tried from the attacker's side: a holder of the session key (a node
of the chain, or whoever read the key from a TFTP-served initramfs) poses as the golden node;
nodes that pin the golden's public key refuse everything it sends."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from test_api import run_session

from ka.errors import UsageError
from ka.keys import read_golden_key, read_identity, write_identity
from ka.transport import BytesSink, BytesSource, DigestMismatch
from ka.transport import identity as ident
from ka.transport.frame import EndOfStream

KEY = os.urandom(32)


@pytest.fixture
def golden(tmp_path: Path) -> tuple[bytes, bytes]:
    key, pub = write_identity(str(tmp_path / "golden"))
    return read_identity(str(key)), read_golden_key(str(pub))


def test_a_stream_signed_by_the_pinned_identity_is_accepted(golden: tuple[bytes, bytes]
                                                            ) -> None:
    private, public = golden
    data = os.urandom(600_000)
    sinks = [BytesSink(), BytesSink()]
    report, results = run_session(BytesSource(data), sinks,
                                  {"nodes": 2, "key": KEY, "identity": private},
                                  [{"key": KEY, "golden_key": public}] * 2)
    assert report.ok and all(s.data == data for s in sinks)


@pytest.mark.parametrize("impostor", ["none", "another"])
def test_a_key_holder_posing_as_the_golden_node_is_refused(
        golden: tuple[bytes, bytes], tmp_path: Path, impostor: str) -> None:
    _private, public = golden
    other = None
    if impostor == "another":
        key, _pub = write_identity(str(tmp_path / "impostor"))
        other = read_identity(str(key))
    sinks = [BytesSink(), BytesSink()]
    report, results = run_session(BytesSource(b"rm -rf / # a forged plan\n" * 1000), sinks,
                                  {"nodes": 2, "key": KEY, "identity": other},
                                  [{"key": KEY, "golden_key": public}] * 2)
    assert not report.ok
    for r in results:
        assert isinstance(r, DigestMismatch), r
        assert "not signed by the pinned golden identity" in str(r)


def test_the_signature_covers_the_digest_the_totals_and_the_session(
        golden: tuple[bytes, bytes]) -> None:
    private, public = golden
    eos = EndOfStream(100, 200, bytes(range(32)), os.urandom(16))
    signed = EndOfStream(eos.raw_total, eos.frames_total, eos.digest, eos.session,
                         ident.sign(private, eos.signed))
    decoded = EndOfStream.decode(signed.encode())
    assert ident.verify(public, decoded.signed, decoded.signature)
    for forged in (EndOfStream(101, 200, eos.digest, eos.session, decoded.signature),
                   EndOfStream(100, 200, bytes(32), eos.session, decoded.signature),
                   EndOfStream(100, 200, eos.digest, os.urandom(16), decoded.signature)):
        assert not ident.verify(public, forged.signed, forged.signature)


def test_keygen_identity_writes_a_private_key_nobody_else_reads(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "ka", "keygen", "--identity",
                          str(tmp_path / "id")], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    key, pub = tmp_path / "id/golden.key", tmp_path / "id/golden.pub"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert len(read_golden_key(pub.read_text().strip())) == 32  # the hex itself works too
    assert ident.public_key(read_identity(str(tmp_path / "id"))) == read_golden_key(str(pub))
    key.chmod(0o644)
    with pytest.raises(UsageError, match="readable by others"):
        read_identity(str(key))
    again = subprocess.run([sys.executable, "-m", "ka", "keygen", "--identity",
                            str(tmp_path / "id")], capture_output=True, text=True, timeout=60)
    assert again.returncode == 2 and "exists" in again.stderr  # never replaced silently


@pytest.mark.slow  # a ka send and a ka receive
def test_receive_with_a_pinned_key_refuses_an_impostor_on_the_command_line(
        golden: tuple[bytes, bytes], tmp_path: Path) -> None:
    from transport_cluster import free_port

    write_identity(str(tmp_path / "impostor"))
    keyfile = tmp_path / "k"
    keyfile.write_text(KEY.hex() + "\n")
    keyfile.chmod(0o600)
    port = free_port()
    data = tmp_path / "data"
    data.write_bytes(os.urandom(100_000))
    sender = subprocess.Popen(
        [sys.executable, "-m", "ka", "send", "--nodes", "1", "--port", str(port), "--bind",
         "127.0.0.1", "--input", str(data), "--key-file", str(keyfile), "--identity",
         str(tmp_path / "impostor")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        node = subprocess.run(
            [sys.executable, "-m", "ka", "receive", "--host", "127.0.0.1", "--port", str(port),
             "--output", str(tmp_path / "out"), "--key-file", str(keyfile), "--golden-key",
             golden[1].hex(), "--find-timeout", "20"], capture_output=True, text=True,
            timeout=60)
    finally:
        sender.kill()
        sender.wait()
    assert node.returncode == 12, node.stderr  # digest mismatch: never success
    assert "not signed by the pinned golden identity" in node.stderr
