"""`ka image capture|info|verify|list` and the refusals of `ka clone --image`, on a plain
directory tree (no disk, no root): each bad image gets its own exit status, and a damaged
one is refused before any node is reached."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ka.image.capture import CaptureOptions, capture
from ka.image.store import list_images

DESC = ("label gpt\nlinux 64MiB fs=ext4 mount=/ label=root\n"
        "linux fill fs=ext4 mount=/var label=var\n")
KEY_A = bytes(range(32))
KEY_B = bytes(range(1, 33))


def ka(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ka", *args], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def _tree(base: Path, data: int = 2 * 1024 * 1024) -> Path:
    tree = base / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "var/lib").mkdir(parents=True)
    (tree / "etc/hostname").write_text("golden\n")
    (tree / "etc/fstab").write_text("LABEL=root / ext4 defaults 0 1\n"
                                    "LABEL=var /var ext4 defaults 0 2\n")
    (tree / "rand.bin").write_bytes(os.urandom(data))
    (tree / "var/lib/text").write_text("hello\n" * 100_000)
    (tree / "var/lib/link").symlink_to("text")
    return tree


def _digest(tree: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(tree.rglob("*")):
        st = p.lstat()
        h.update(f"{p.relative_to(tree)} {st.st_mode} {st.st_mtime_ns}".encode())
        if p.is_file() and not p.is_symlink():
            h.update(p.read_bytes())
    return h.hexdigest()


@pytest.fixture
def golden(tmp_path: Path) -> tuple[Path, Path]:
    tree = _tree(tmp_path)
    desc = tmp_path / "golden.desc"
    desc.write_text(DESC)
    return tree, desc


def _capture(tmp_path: Path, golden: tuple[Path, Path], name: str = "img", *extra: str) -> Path:
    tree, desc = golden
    out = tmp_path / name
    r = ka("image", "capture", "--output", str(out), "--root", str(tree), "--desc", "sda",
           str(desc), *extra)
    assert r.returncode == 0, r.stderr
    return out


def _key(tmp_path: Path, key: bytes, name: str) -> str:
    path = tmp_path / name
    path.write_bytes(key)
    path.chmod(0o600)
    return str(path)


@pytest.mark.slow
def test_capture_writes_a_manifest_and_one_stream_file_per_filesystem(
        tmp_path: Path, golden: tuple[Path, Path]) -> None:
    before = _digest(golden[0])
    out = _capture(tmp_path, golden, "img", "--name", "lab-golden")
    assert _digest(golden[0]) == before  # the golden is only read
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["kind"] == "ka-image" and manifest["format"] == 1
    assert manifest["name"] == "lab-golden" and manifest["source_host"] == socket.gethostname()
    assert manifest["plan"]["fstab"].startswith("LABEL=root /")
    assert "linux 64MiB fs=ext4 mount=/" in manifest["plan"]["disks"][0]["desc"]
    streams = {s["mountpoint"]: s for s in manifest["streams"]}
    assert set(streams) == {"/", "/var"}
    for s in streams.values():
        assert s["kind"] == "tar" and s["fstype"] == "ext4" and s["encoding"] == "zstd-seekable"
        assert (out / s["file"]).stat().st_size == s["stored_bytes"]
    # The text compresses, once, at capture; the random data does not.
    assert streams["/var"]["stored_bytes"] < streams["/var"]["raw_bytes"] / 20
    listing = subprocess.run(["zstd", "-dc", str(out / streams["/"]["file"])],
                             capture_output=True, check=True).stdout
    toc = subprocess.run(["tar", "-t"], input=listing, capture_output=True, check=True).stdout
    assert b"./rand.bin" in toc.split(b"\n") and b"./var/lib/text" not in toc.split(b"\n")
    r = ka("image", "verify", str(out))
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("ok: ") == 2
    info = json.loads(ka("image", "info", "--json", str(out)).stdout)
    assert info["streams"] == manifest["streams"]


@pytest.mark.slow
def test_one_changed_byte_fails_verify_and_clone_before_any_node_is_reached(
        tmp_path: Path, golden: tuple[Path, Path]) -> None:
    out = _capture(tmp_path, golden)
    manifest = json.loads((out / "manifest.json").read_text())
    var = next(s for s in manifest["streams"] if s["mountpoint"] == "/var")
    path = out / var["file"]
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0x01
    path.write_bytes(data)
    r = ka("image", "verify", str(out))
    assert r.returncode == 32
    assert var["file"] in r.stderr and "(tar of /var)" in r.stderr
    _refused_before_any_node(out, 32, var["file"])


@pytest.mark.slow
def test_a_truncated_stream_file_is_refused(tmp_path: Path, golden: tuple[Path, Path]) -> None:
    out = _capture(tmp_path, golden)
    path = out / "fs-1.tar.zst"
    os.truncate(path, path.stat().st_size - 1000)
    r = ka("image", "verify", str(out))
    assert r.returncode == 32 and "truncated" in r.stderr
    _refused_before_any_node(out, 32, "fs-1.tar.zst")


def _refused_before_any_node(image: Path, status: int, said: str, *extra: str) -> None:
    """`ka clone --image` exits with `status` and a node started beside it never finds a
    session: nothing was offered."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    node = subprocess.Popen(
        [sys.executable, "-m", "ka", "install", "--host", "127.0.0.1", "--port", str(port),
         "--find-timeout", "4", "--status-port", "0", "--target", str(image.parent / "t")],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        r = ka("clone", "--image", str(image), "--nodes", "1", "--port", str(port),
               "--bind", "127.0.0.1", "--logs", str(image.parent / "logs"), *extra)
        assert r.returncode == status, r.stderr
        assert said in r.stderr
        assert "waiting for" not in r.stderr
        _out, err = node.communicate(timeout=30)
    finally:
        if node.poll() is None:
            node.kill()
            node.wait()
    assert node.returncode == 10, err  # sender not found: no plan was ever sent


@pytest.mark.slow
def test_keys_authenticate_the_manifest(tmp_path: Path, golden: tuple[Path, Path]) -> None:
    key_a, key_b = _key(tmp_path, KEY_A, "a.key"), _key(tmp_path, KEY_B, "b.key")
    out = _capture(tmp_path, golden, "img", "--key-file", key_a)
    assert ka("image", "verify", str(out), "--key-file", key_a).returncode == 0
    r = ka("image", "verify", str(out), "--key-file", key_b)
    assert r.returncode == 33 and "another key" in r.stderr
    _refused_before_any_node(out, 33, "another key", "--key-file", key_b)
    _refused_before_any_node(out, 33, "captured with a key")  # and with no key at all
    # An edited manifest (here: a stream digest made to match a changed file) is refused.
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["streams"][0]["stored_digest"] = "0" * 64
    (out / "manifest.json").write_text(json.dumps(manifest))
    _refused_before_any_node(out, 33, "does not match the key", "--key-file", key_a)
    # Stripping the MAC does not help either: the manifest says it had one.
    del manifest["mac"]
    (out / "manifest.json").write_text(json.dumps(manifest))
    _refused_before_any_node(out, 33, "has no MAC", "--key-file", key_a)
    manifest["authenticated"] = False
    (out / "manifest.json").write_text(json.dumps(manifest))
    _refused_before_any_node(out, 33, "captured without a key", "--key-file", key_a)


@pytest.mark.slow
def test_an_unauthenticated_image_with_a_key_needs_the_explicit_option(
        tmp_path: Path, golden: tuple[Path, Path]) -> None:
    out = _capture(tmp_path, golden)
    key = _key(tmp_path, KEY_A, "a.key")
    r = ka("clone", "--image", str(out), "--nodes", "2", "--key-file", key, "--dry-run")
    assert r.returncode == 33 and "--unauthenticated-image" in r.stderr
    r = ka("clone", "--image", str(out), "--nodes", "2", "--key-file", key, "--dry-run",
           "--unauthenticated-image", "--hostnames", "n{n}")
    assert r.returncode == 0, r.stderr
    assert "ka-fs-1" in r.stdout and "compressed frames" in r.stdout
    plan = json.loads(ka("clone", "--image", str(out), "--nodes", "2", "--dry-run", "--json",
                         "--session-prefix", "p7").stdout)
    assert plan["nodes"] == 2 and [s["session"] for s in plan["streams"]] == ["p7-fs-1",
                                                                               "p7-fs-2"]
    assert plan["compress"] is None  # compressed once, at capture


@pytest.mark.slow
def test_bad_images_each_have_their_exit_status(tmp_path: Path,
                                                golden: tuple[Path, Path]) -> None:
    out = _capture(tmp_path, golden)
    r = ka("image", "verify", str(tmp_path / "nothing-here"))
    assert r.returncode == 30 and "no such image" in r.stderr
    r = ka("image", "info", str(golden[0]))
    assert r.returncode == 30 and "has no manifest.json" in r.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["format"] = 99
    (out / "manifest.json").write_text(json.dumps(manifest))
    r = ka("image", "verify", str(out))
    assert r.returncode == 31 and "format 99" in r.stderr
    (out / "manifest.json").write_text("{not json")
    assert ka("image", "info", str(out)).returncode == 31
    r = ka("image", "list", str(tmp_path / "no-store"))
    assert r.returncode == 35 and "does not exist" in r.stderr
    r = ka("clone", "--image", "lab", "--store", str(tmp_path / "no-store"), "--nodes", "1")
    assert r.returncode == 35
    r = ka("clone", "--image", str(out), "--nodes", "1", "--exclude", "/tmp")
    assert r.returncode == 2 and "--exclude has no meaning with --image" in r.stderr


@pytest.mark.slow
def test_names_resolve_in_the_store_and_list_skips_partial_captures(
        tmp_path: Path, golden: tuple[Path, Path]) -> None:
    store = tmp_path / "store"
    store.mkdir()
    tree, desc = golden
    for name in ("one", "two"):
        r = ka("image", "capture", "--output", name, "--store", str(store), "--root",
               str(tree), "--desc", "sda", str(desc))
        assert r.returncode == 0, r.stderr
    (store / ".three.partial-123").mkdir()
    (store / "junk").mkdir()
    listed = {x.path.name: x for x in list_images(store)}
    assert set(listed) == {"one", "two", "junk"}
    assert listed["junk"].manifest is None and listed["one"].manifest is not None
    r = ka("image", "list", str(store))
    assert r.returncode == 0 and "one\t" in r.stdout and "three" not in r.stdout
    assert ka("image", "info", "two", "--store", str(store)).returncode == 0
    r = ka("image", "capture", "--output", "one", "--store", str(store), "--root", str(tree),
           "--desc", "sda", str(desc))
    assert r.returncode == 34 and "exists already" in r.stderr


def test_an_interrupted_capture_leaves_nothing(tmp_path: Path,
                                               golden: tuple[Path, Path]) -> None:
    from ka.clone.golden import CloneOptions

    tree, desc = golden
    out = tmp_path / "img"
    calls = []

    def interrupt(p: object) -> None:
        calls.append(p)
        raise KeyboardInterrupt

    opts = CaptureOptions(CloneOptions(nodes=0, root=str(tree), descs={"sda": str(desc)}), out)
    with pytest.raises(KeyboardInterrupt):
        capture(opts, interrupt)
    assert calls and sorted(os.listdir(tmp_path)) == ["golden.desc", "tree"]


@pytest.mark.slow
def test_sigterm_during_a_capture_leaves_nothing(tmp_path: Path) -> None:
    tree = _tree(tmp_path, data=100 * 1024 * 1024)
    desc = tmp_path / "golden.desc"
    desc.write_text(DESC)
    proc = subprocess.Popen(
        [sys.executable, "-m", "ka", "image", "capture", "--output", str(tmp_path / "img"),
         "--root", str(tree), "--desc", "sda", str(desc), "--compress", "zstd:19"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any(
                p.name.startswith(".img.partial") and any(p.iterdir())
                for p in tmp_path.iterdir()):
            time.sleep(0.02)
        assert proc.poll() is None, "the capture ended before it could be interrupted"
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert sorted(os.listdir(tmp_path)) == ["golden.desc", "tree"]


@pytest.mark.root
@pytest.mark.slow
def test_a_full_disk_is_a_clear_error_and_leaves_nothing(tmp_path: Path,
                                                         golden: tuple[Path, Path]) -> None:
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(small)], check=True)
    try:
        tree, desc = golden
        base = ("image", "capture", "--output", str(small / "img"), "--root", str(tree),
                "--desc", "sda", str(desc))
        r = ka(*base)
        assert r.returncode == 34 and "MiB free" in r.stderr
        assert os.listdir(small) == []
        # Past the check, the disk fills up while writing: still nothing left behind.
        r = ka(*base, "--no-space-check")
        assert r.returncode == 34 and "No space left on device" in r.stderr, r.stderr
        assert os.listdir(small) == []
    finally:
        subprocess.run(["umount", str(small)], check=False)

