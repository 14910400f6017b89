"""Where `ka lab up` records a lab, so later `ka lab exec/status/down` invocations find it.

One JSON file per lab in /run/ka/lab/<name>.json (tmpfs: a reboot forgets labs, as it forgets
their namespaces). `KA_LAB_STATE_DIR` overrides the directory (tests).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ka.errors import KaError
from ka.lab.network import LabNetwork

DEFAULT_STATE_DIR = "/run/ka/lab"
FORMAT = 1


class LabNotFound(KaError):
    """No lab of that name is recorded."""


def state_dir() -> Path:
    return Path(os.environ.get("KA_LAB_STATE_DIR", DEFAULT_STATE_DIR))


def state_path(name: str) -> Path:
    return state_dir() / f"{name}.json"


def to_record(lab: LabNetwork) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "name": lab.name,
        "nodes": lab.nodes,
        "rate": lab.rate,
        "subnet": f"{lab.subnet}.0/24",
        "switch": lab.switch_netns,
        "hosts": [
            {"index": h.index, "label": h.label, "netns": h.netns, "address": h.address}
            for h in lab.hosts
        ],
    }


def save(lab: LabNetwork) -> Path:
    path = state_path(lab.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(to_record(lab), indent=2) + "\n")
    tmp.replace(path)
    return path


def load(name: str) -> LabNetwork:
    """The recorded lab `name`, owned (so `down()` removes it)."""
    path = state_path(name)
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        raise LabNotFound(
            f"no lab named {name!r} is up", hint="start one with 'ka lab up --nodes N'"
        ) from None
    except (OSError, ValueError) as e:
        raise KaError(f"cannot read lab state {path}: {e}", hint=f"remove {path}") from e
    lab = LabNetwork(int(record["nodes"]), rate=record.get("rate"), name=str(record["name"]))
    lab.adopt()
    return lab


def forget(name: str) -> None:
    state_path(name).unlink(missing_ok=True)


def recorded() -> list[str]:
    """Names of every recorded lab, sorted."""
    directory = state_dir()
    if not directory.is_dir():
        return []
    return sorted(p.stem for p in directory.glob("*.json"))
