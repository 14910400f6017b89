"""The exact tar command lines of both ends."""

from __future__ import annotations

from ka.clone.tarstream import create_argv, extract_argv, nested_excludes


def test_create_keeps_every_kind_of_metadata() -> None:
    assert create_argv("/mnt/golden/var", ["./tmp", "cache/", "/log/app"]) == [
        "tar", "--create", "--file=-", "--directory=/mnt/golden/var", "--one-file-system",
        "--sparse", "--numeric-owner", "--xattrs", "--xattrs-include=*", "--acls", "--selinux",
        "--anchored", "--no-wildcards-match-slash",
        "--exclude=./tmp", "--exclude=./cache", "--exclude=./log/app", ".",
    ]


def test_extract_matches_create() -> None:
    assert extract_argv("/target/var", selinux=False) == [
        "tar", "--extract", "--file=-", "--directory=/target/var", "--read-full-records",
        "--same-permissions", "--same-owner", "--delay-directory-restore",
        "--numeric-owner", "--xattrs", "--xattrs-include=*", "--acls",
    ]


def test_nested_excludes_of_root() -> None:
    assert nested_excludes("/", ["/", "/var", "/var/log", "/boot/efi"], ["/tmp", "/var/cache"]) == [
        "./var/*", "./boot/efi/*", "./tmp"]


def test_nested_excludes_of_a_sub_mount() -> None:
    assert nested_excludes("/var", ["/", "/var", "/var/log", "/varnish"], ["/tmp", "/var/tmp"]) == [
        "./log/*", "./tmp"]
    assert nested_excludes("/home", ["/"], []) == []
