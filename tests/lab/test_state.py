"""Recorded lab state and how `ka lab` commands pick a lab (no root needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ka.errors import UsageError
from ka.lab import state
from ka.lab.cli import resolve_name
from ka.lab.network import LabNetwork


@pytest.fixture(autouse=True)
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "labs"
    monkeypatch.setenv("KA_LAB_STATE_DIR", str(directory))
    return directory


def test_a_saved_lab_loads_back_owned(state_dir: Path) -> None:
    lab = LabNetwork(3, rate="100mbit", name="alpha")
    path = state.save(lab)
    assert path == state_dir / "alpha.json"
    record = json.loads(path.read_text())
    assert record["hosts"][3] == {
        "index": 3,
        "label": "node3",
        "netns": "ka-alpha-node3",
        "address": lab.hosts[3].address,
    }
    loaded = state.load("alpha")
    assert loaded.is_up
    assert (loaded.nodes, loaded.rate, loaded.hosts) == (3, "100mbit", lab.hosts)
    assert state.recorded() == ["alpha"]
    state.forget("alpha")
    assert state.recorded() == []


def test_loading_an_unknown_lab_says_how_to_start_one() -> None:
    with pytest.raises(state.LabNotFound) as info:
        state.load("nothing")
    assert info.value.hint is not None and "ka lab up" in info.value.hint


def test_the_lab_meant_without_a_name() -> None:
    assert resolve_name(None) == "lab"
    state.save(LabNetwork(1, name="solo"))
    assert resolve_name(None) == "solo"
    state.save(LabNetwork(1, name="other"))
    with pytest.raises(UsageError, match="several labs"):
        resolve_name(None)
    state.save(LabNetwork(1, name="lab"))
    assert resolve_name(None) == "lab"
    assert resolve_name("other") == "other"
    with pytest.raises(UsageError):
        resolve_name("Bad Name")
