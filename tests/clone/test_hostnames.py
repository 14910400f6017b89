"""Host names by pattern or table, and the /etc/hosts own-name line."""

from __future__ import annotations

import pytest

from ka.clone.hostnames import (
    HostnameRule,
    assign_hostname,
    hosts_line_update,
    parse_pattern,
    parse_table,
)
from ka.errors import UsageError


def test_pattern_numbers_nodes_by_position() -> None:
    rule = parse_pattern("node{n:02d}")
    assert [assign_hostname(rule, n) for n in (1, 2, 10, 123)] == [
        "node01", "node02", "node10", "node123"]


def test_pattern_may_use_the_ip() -> None:
    rule = parse_pattern("n-{n}")
    assert assign_hostname(rule, 7, ips=["10.0.0.7"]) == "n-7"
    assert parse_pattern("h{n}").pattern == "h{n}"


@pytest.mark.parametrize("bad", ["node", "node{x}", "node{n:zz}", "bad_{n}", "{n}-"])
def test_bad_patterns_are_refused(bad: str) -> None:
    with pytest.raises(UsageError):
        parse_pattern(bad)


TABLE = """\
# MAC, IP or position -> name
52:54:00:AA:BB:01  alpha
10.1.0.12          beta     # by address
3                  gamma
52-54-00-aa-bb-04  delta
"""


def test_table_is_searched_by_mac_then_ip_then_position() -> None:
    rule = parse_table(TABLE, "names")
    assert assign_hostname(rule, 9, macs=["52:54:00:aa:bb:01"], ips=["10.1.0.12"]) == "alpha"
    assert assign_hostname(rule, 3, macs=["52:54:00:aa:bb:99"], ips=["10.1.0.12"]) == "beta"
    assert assign_hostname(rule, 3, macs=["52:54:00:aa:bb:99"], ips=["10.1.0.99"]) == "gamma"
    assert assign_hostname(rule, 1, macs=["52:54:00:AA:BB:04"]) == "delta"
    assert assign_hostname(rule, 5, macs=["00:00:00:00:00:01"], ips=["10.9.9.9"]) is None


def test_no_rule_means_no_name() -> None:
    assert assign_hostname(None, 1) is None
    assert assign_hostname(HostnameRule(), 1) is None


@pytest.mark.parametrize("text, where", [
    ("52:54:00:aa:bb:01\n", "names:1"),
    ("1 a b\n", "names:1"),
    ("# x\nnot-a-key name\n", "names:2"),
    ("1 bad_name\n", "names:1"),
    ("1 a\n01 b\n", "names:2"),
])
def test_bad_tables_name_the_line(text: str, where: str) -> None:
    with pytest.raises(UsageError) as e:
        parse_table(text, "names")
    assert where in str(e.value)


def test_hosts_own_name_line_is_replaced() -> None:
    text = "127.0.0.1\tlocalhost\n127.0.1.1\tgolden.example golden\n::1 localhost\n"
    assert hosts_line_update(text, "golden", "node01") == (
        "127.0.0.1\tlocalhost\n127.0.1.1\tnode01\n::1 localhost\n")


def test_hosts_line_is_added_when_missing_and_old_name_replaced() -> None:
    text = "127.0.0.1 localhost\n10.0.0.1 golden other\n"
    assert hosts_line_update(text, "golden", "n2") == (
        "127.0.0.1 localhost\n127.0.1.1\tn2\n10.0.0.1 n2 other\n")


def test_a_later_wave_counts_on_from_its_first_position() -> None:
    import dataclasses

    rule = dataclasses.replace(parse_pattern("node{n:02d}"), first=4)
    assert assign_hostname(rule, 1) == "node04" and assign_hostname(rule, 3) == "node06"
    table = dataclasses.replace(parse_table("5 five\n"), first=5)
    assert assign_hostname(table, 1) == "five"
