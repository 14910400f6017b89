"""`ka lab up/exec/status/down` as separate invocations sharing the recorded state."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ka.lab.network import existing_namespaces, unique_name
from needs import need

pytestmark = pytest.mark.lab

Ka = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "labs"


@pytest.fixture
def ka(state_dir: Path) -> Iterator[Ka]:
    started: list[str] = []

    def invoke(*args: str) -> subprocess.CompletedProcess[str]:
        if args[:2] == ("lab", "up"):
            started.append(args[args.index("--name") + 1])
        env = dict(os.environ, KA_LAB_STATE_DIR=str(state_dir))
        return subprocess.run(
            [sys.executable, "-m", "ka", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )

    try:
        yield invoke
    finally:
        for name in started:
            invoke("lab", "down", "--name", name)


def test_up_exec_status_down(ka: Ka, state_dir: Path) -> None:
    name = unique_name()
    up = ka("lab", "up", "--nodes", "2", "--rate", "100mbit", "--name", name)
    assert up.returncode == 0, up.stderr
    assert f"ka-{name}-node2" in up.stdout
    record = json.loads((state_dir / f"{name}.json").read_text())
    assert [h["label"] for h in record["hosts"]] == ["golden", "node1", "node2"]
    assert {f"ka-{name}-switch", f"ka-{name}-node2"} <= existing_namespaces()

    shown = ka(
        "lab", "exec", "--name", name, "node2", "--", "ip", "-j", "-4", "addr", "show", "eth0"
    )
    assert shown.returncode == 0, shown.stderr
    local = json.loads(shown.stdout)[0]["addr_info"][0]["local"]
    assert local == record["hosts"][2]["address"]
    assert ka("lab", "exec", "--name", name, "golden", "--", "sh", "-c", "exit 7").returncode == 7

    # With one lab up, --name may be left out.
    assert ka("lab", "exec", "1", "--", "true").returncode == 0
    status = ka("lab", "status", "--json")
    assert status.returncode == 0, status.stderr
    assert [(s["name"], s["up"]) for s in json.loads(status.stdout)] == [(name, True)]

    down = ka("lab", "down", "--name", name)
    assert down.returncode == 0, down.stderr
    assert not any(ns.startswith(f"ka-{name}-") for ns in existing_namespaces())
    assert not (state_dir / f"{name}.json").exists()


def test_clear_errors(ka: Ka) -> None:
    name = unique_name()
    missing = ka("lab", "exec", "--name", name, "node1", "--", "true")
    assert missing.returncode != 0
    assert f"no lab named '{name}' is up" in missing.stderr
    assert "ka lab up" in missing.stderr

    assert ka("lab", "up", "--nodes", "1", "--name", name).returncode == 0
    unknown = ka("lab", "exec", "--name", name, "node5", "--", "true")
    assert unknown.returncode == 2
    assert "no node 'node5'" in unknown.stderr
    again = ka("lab", "up", "--nodes", "1", "--name", name)
    assert again.returncode != 0 and "already exists" in again.stderr
    nothing = ka("lab", "exec", "--name", name, "node1")
    assert nothing.returncode == 2 and "no command" in nothing.stderr
    # A name of its own: the teardown's `ka lab down` must never reach another run's lab.
    bad_rate = ka("lab", "up", "--nodes", "1", "--rate", "fast", "--name", unique_name())
    assert bad_rate.returncode == 2

    assert ka("lab", "down", "--name", name).returncode == 0
    assert ka("lab", "down", "--name", name).returncode != 0


def test_down_cleans_a_lab_whose_state_was_lost(ka: Ka, state_dir: Path) -> None:
    name = unique_name()
    assert ka("lab", "up", "--nodes", "3", "--name", name).returncode == 0
    (state_dir / f"{name}.json").unlink()
    down = ka("lab", "down", "--name", name)
    assert down.returncode == 0, down.stderr
    assert not any(ns.startswith(f"ka-{name}-") for ns in existing_namespaces())


def test_not_root_is_a_clear_error(state_dir: Path) -> None:
    need("setpriv", "util-linux")
    result = subprocess.run(
        [
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            sys.executable,
            "-m",
            "ka",
            "lab",
            "up",
            "--nodes",
            "1",
            "--name",
            unique_name(),
        ],
        capture_output=True,
        text=True,
        env=dict(os.environ, KA_LAB_STATE_DIR=str(state_dir)),
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert "needs root" in result.stderr
