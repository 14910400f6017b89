"""The one key reader and `ka keygen`, tried with the key files an attacker would hope for."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from ka.cli import main
from ka.clone.status import StatusService
from ka.errors import UsageError
from ka.keys import KEY_BYTES, KEY_ENV, check_key, parse_key, read_key_file
from ka.transport import ReceiveOptions, SendOptions, receive, send
from ka.transport.endpoints import BytesSource, Sink

WEAK = [
    (b"", "empty"),
    (b"\n", "empty"),
    (b"   \n", "empty"),
    (b"winter2024\n", "passphrase"),  # the key that was found in about a second
    (b"correct horse battery staple and then some\n", "passphrase"),
    (b"ab" * 31 + b"\n", "fewer than 32"),  # 31 bytes of hex
    (os.urandom(31), "31 bytes"),
]


@pytest.mark.parametrize(("data", "why"), WEAK)
def test_weak_key_files_are_refused_with_a_keygen_hint(data: bytes, why: str,
                                                       tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_bytes(data)
    with pytest.raises(UsageError, match=why) as e:
        read_key_file(str(path))
    assert e.value.hint is not None and "ka keygen" in e.value.hint


def test_keygen_format_and_binary_keys_are_read() -> None:
    key = os.urandom(KEY_BYTES)
    assert parse_key(key.hex().encode() + b"\n") == key
    assert parse_key(key.hex().upper().encode() + b"\r\n") == key
    assert parse_key(key) == key  # e.g. head -c 32 /dev/urandom, used as is
    assert parse_key(key + b"\n") == key + b"\n"  # binary: every byte is key material


@pytest.mark.parametrize("argv", [
    # The attack of issue 10: an empty key file opened a node, and /dev/null then ran `id`.
    ["install", "--host", "127.0.0.1", "--key-file", "{empty}", "--allow-exec"],
    ["console", "127.0.0.1", "--key-file", "/dev/null", "--exec", "id"],
    ["send", "--nodes", "1", "--input", "/dev/null", "--key-file", "{empty}"],
    ["receive", "--host", "127.0.0.1", "--output", "/dev/null", "--key-file", "{empty}"],
    ["clone", "--nodes", "1", "--dry-run", "--key-file", "{empty}"],
])
def test_every_command_refuses_an_empty_key_file(argv: list[str], tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty.key"
    empty.write_bytes(b"")
    assert main([a.format(empty=empty) for a in argv]) == 2
    assert "empty" in capsys.readouterr().err


def test_key_file_default_comes_from_the_environment(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    weak = tmp_path / "weak.key"
    weak.write_bytes(b"winter2024")
    monkeypatch.setenv(KEY_ENV, str(weak))
    assert main(["receive", "--host", "127.0.0.1", "--output", "/dev/null"]) == 2
    assert "passphrase" in capsys.readouterr().err


def test_console_exec_needs_a_key(capsys: pytest.CaptureFixture[str],
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    assert main(["console", "127.0.0.1:1", "--exec", "id"]) == 2
    assert "--exec needs a session key" in capsys.readouterr().err


@pytest.mark.parametrize("key", [b"", b"short"])
def test_library_entry_points_refuse_short_keys(key: bytes) -> None:
    with pytest.raises(UsageError):
        check_key(key)
    with pytest.raises(UsageError):
        send(BytesSource(b"x"), SendOptions(nodes=1, key=key, bind="127.0.0.1", port=1))
    with pytest.raises(UsageError):
        receive(Sink(), ReceiveOptions(host="127.0.0.1", key=key, find_timeout=0))
    with pytest.raises(UsageError):
        StatusService("n", key, port=0, bind="127.0.0.1", allow_exec=True)


def test_keygen_writes_a_private_random_key(tmp_path: Path) -> None:
    a, b = tmp_path / "a.key", tmp_path / "b.key"
    assert main(["keygen", str(a)]) == 0
    assert main(["keygen", str(b)]) == 0
    assert stat.S_IMODE(a.stat().st_mode) == 0o600
    text = a.read_bytes()
    assert len(text) == 2 * KEY_BYTES + 1 and text.endswith(b"\n")
    assert len(read_key_file(str(a))) == KEY_BYTES
    assert read_key_file(str(a)) != read_key_file(str(b))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.key", "b.key"]  # no temp file


def test_keygen_never_overwrites_without_force(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "in-use.key"
    assert main(["keygen", str(path)]) == 0
    before = path.read_bytes()
    assert main(["keygen", str(path)]) == 2
    assert path.read_bytes() == before
    assert "--force" in capsys.readouterr().err
    assert main(["keygen", "--force", str(path)]) == 0
    assert path.read_bytes() != before
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_keygen_to_stdout(capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    assert main(["keygen", "-"]) == 0
    out = capsysbinary.readouterr().out
    assert len(parse_key(out)) == KEY_BYTES
