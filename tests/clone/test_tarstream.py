"""The exact tar command lines of both ends."""

from __future__ import annotations

import grp
import subprocess
from pathlib import Path

import pytest

from ka.clone.tarstream import create_argv, extract_argv, nested_excludes
from needs import need


def test_create_keeps_every_kind_of_metadata() -> None:
    assert create_argv("/mnt/golden/var", ["./tmp", "cache/", "/log/app"]) == [
        "tar", "--create", "--file=-", "--directory=/mnt/golden/var", "--one-file-system",
        "--sparse", "--numeric-owner", "--xattrs", "--xattrs-include=*", "--selinux",
        "--anchored", "--no-wildcards-match-slash",
        "--exclude=./tmp", "--exclude=./cache", "--exclude=./log/app", ".",
    ]


def test_extract_matches_create() -> None:
    assert extract_argv("/target/var", selinux=False) == [
        "tar", "--extract", "--file=-", "--directory=/target/var", "--read-full-records",
        "--same-permissions", "--same-owner", "--delay-directory-restore",
        "--numeric-owner", "--xattrs", "--xattrs-include=*",
    ]


def test_nested_excludes_of_root() -> None:
    assert nested_excludes("/", ["/", "/var", "/var/log", "/boot/efi"], ["/tmp", "/var/cache"]) == [
        "./var/*", "./boot/efi/*", "./tmp"]


def test_nested_excludes_of_a_sub_mount() -> None:
    assert nested_excludes("/var", ["/", "/var", "/var/log", "/varnish"], ["/tmp", "/var/tmp"]) == [
        "./log/*", "./tmp"]
    assert nested_excludes("/home", ["/"], []) == []


@pytest.mark.root
def test_acl_naming_a_group_the_node_does_not_know_arrives_numerically(tmp_path: Path) -> None:
    # The boot environment's /etc/group knows only root; the golden's ACL names `adm`.
    for tool, package in (("setfacl", "acl"), ("getfacl", "acl"), ("unshare", "util-linux")):
        need(tool, package)
    src, dst = tmp_path / "golden", tmp_path / "node"
    (src / "journal").mkdir(parents=True)
    dst.mkdir()
    gid = grp.getgrnam("adm").gr_gid
    subprocess.run(["setfacl", "-m", "g:adm:rx", "-d", "-m", "g:adm:rx", str(src / "journal")],
                   check=True)
    stream = subprocess.run(create_argv(str(src), selinux=False), capture_output=True,
                            check=True).stdout
    node_env = ("mount -t tmpfs none /etc && echo root:x:0: > /etc/group && "
                "echo root:x:0:0::/root:/bin/sh > /etc/passwd && exec \"$@\"")
    extract = subprocess.run(["unshare", "--mount", "sh", "-c", node_env, "sh",
                              *extract_argv(str(dst), selinux=False)],
                             input=stream, capture_output=True, check=False)
    assert extract.returncode == 0, extract.stderr
    assert extract.stderr == b""
    acl = subprocess.run(["getfacl", "-n", "-p", str(dst / "journal")], capture_output=True,
                         text=True, check=True).stdout
    assert f"group:{gid}:r-x" in acl.splitlines()
    assert f"default:group:{gid}:r-x" in acl.splitlines()
