"""`ka install --golden-key` from the attacker's side: a key holder running `ka clone` (with
no identity, or its own) is refused at the plan, before any disk is touched; the real golden
node's plan is taken."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from ka.keys import write_identity, write_key_file

DESC = "label gpt\nlinux fill fs=ext4 mount=/\n"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow  # a ka clone and a ka install
@pytest.mark.parametrize("impostor", [None, "own identity"])
def test_a_key_holders_clone_is_refused_at_the_plan(tmp_path: Path,
                                                     impostor: str | None) -> None:
    tree = tmp_path / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc/fstab").write_text("LABEL=r / ext4 defaults 0 1\n")
    (tmp_path / "desc").write_text(DESC)
    key = tmp_path / "k"
    write_key_file(str(key), bytes(range(32)))
    _k, pub = write_identity(str(tmp_path / "golden"))
    write_identity(str(tmp_path / "impostor"))
    port = _port()
    clone = [sys.executable, "-m", "ka", "clone", "--root", str(tree), "--desc", "sda",
             str(tmp_path / "desc"), "--nodes", "1", "--key-file", str(key), "--port",
             str(port), "--bind", "127.0.0.1", "--logs", str(tmp_path / "logs")]
    if impostor:
        clone += ["--identity", str(tmp_path / "impostor")]
    golden = subprocess.Popen(clone, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True)
    disk = tmp_path / "disk.img"
    disk.write_bytes(b"\xaa" * 65536)
    try:
        node = subprocess.run(
            [sys.executable, "-m", "ka", "install", "--host", "127.0.0.1", "--port", str(port),
             "--key-file", str(key), "--golden-key", str(pub), "--target",
             str(tmp_path / "t"), "--status-port", "0", "--find-timeout", "20",
             "--disk", f"sda={disk}"], capture_output=True, text=True, timeout=90)
        _out, said = golden.communicate(timeout=60)
    finally:
        if golden.poll() is None:
            golden.kill()
            golden.wait()
    assert node.returncode == 12, node.stderr
    assert "receive plan: failed: the stream is not signed by the pinned golden identity" \
        in node.stderr
    assert "partition" not in node.stderr  # refused before any disk step
    assert disk.read_bytes() == b"\xaa" * 65536
    assert golden.returncode != 0 and "no node received the plan" in said
