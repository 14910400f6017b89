"""The install report: every step a node took, how long it took, what it moved, how it ended.

Kept on the node (/var/log/ka-install.json inside the clone) and handed to the golden node
in the final session, which stores one file per node (the original's store_log).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields

from ka.clone.netif import Uplink
from ka.errors import CommandError

REPORT_VERSION = 1


@dataclass(frozen=True)
class StepRecord:
    name: str
    result: str  # "ok" | "failed" | "skipped" | "warning"
    seconds: float
    started: float  # Unix time
    detail: str = ""
    bytes: int | None = None
    digest: str | None = None


@dataclass(frozen=True)
class InstallReport:
    node: str  # host name given to the clone, or the name it joined with
    position: int  # 1-based position in the plan session
    result: str  # "ok" | "failed"
    reason: str | None
    steps: tuple[StepRecord, ...]
    warnings: tuple[str, ...]
    started: float
    seconds: float
    disks: dict[str, str] = field(default_factory=dict)  # golden disk -> local device
    # The interface by which the node reached the golden node (the one it network-booted
    # from, in the boot environment): what `ka clone --pxe` switches it by.
    interface: str | None = None
    mac: str | None = None
    ip: str | None = None
    # ka install's exit status: 0, or that of the error that failed the install first.
    exit_status: int = 0
    version: int = REPORT_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes) -> InstallReport:
        data = json.loads(text)
        data["steps"] = tuple(StepRecord(**s) for s in data.get("steps", ()))
        data["warnings"] = tuple(data.get("warnings", ()))
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


class StepFailed(Exception):
    """Raised inside a step body to end it as failed with a reason but without a traceback."""


@dataclass
class StepState:
    """What the body of a step may fill in."""

    detail: str = ""
    bytes: int | None = None
    digest: str | None = None
    result: str = "ok"


class InstallLog:
    """Collects steps as they run; `on_change` sees every step start and end (live status)."""

    def __init__(self, on_change: Callable[[str, str], None] | None = None) -> None:
        self.steps: list[StepRecord] = []
        self.warnings: list[str] = []
        self.started = time.time()
        self._t0 = time.monotonic()
        self.current: str | None = None
        self._on_change = on_change

    @contextmanager
    def step(self, name: str) -> Iterator[StepState]:
        state = StepState()
        began, t0 = time.time(), time.monotonic()
        self.current = name
        self._notify(name, "running")
        try:
            yield state
        except BaseException as e:
            detail = state.detail or _reason(e)
            self._record(name, "failed", t0, began, state, detail)
            raise
        finally:
            self.current = None
        self._record(name, state.result, t0, began, state, state.detail)

    def skip(self, name: str, why: str) -> None:
        self.steps.append(StepRecord(name, "skipped", 0.0, time.time(), why))
        self._notify(name, f"skipped: {why}")

    def warn(self, message: str, step: str | None = None) -> None:
        """A warning, shown under `step`, else under the step running now (or "install")."""
        self.warnings.append(message)
        self._notify(step or self.current or "install", f"warning: {message}")

    def report(
        self, node: str, position: int, reason: str | None, disks: dict[str, str] | None = None,
        uplink: Uplink | None = None,
    ) -> InstallReport:
        up = uplink or Uplink(None, None, None)
        return InstallReport(
            node=node,
            position=position,
            result="failed" if reason else "ok",
            reason=reason,
            steps=tuple(self.steps),
            warnings=tuple(self.warnings),
            started=self.started,
            seconds=round(time.monotonic() - self._t0, 3),
            disks=dict(disks or {}),
            interface=up.interface,
            mac=up.mac,
            ip=up.ip,
        )

    def _record(
        self, name: str, result: str, t0: float, began: float, state: StepState, detail: str
    ) -> None:
        rec = StepRecord(
            name, result, round(time.monotonic() - t0, 3), began, detail, state.bytes, state.digest
        )
        self.steps.append(rec)
        self._notify(name, result + (f": {detail}" if detail else ""))

    def _notify(self, step: str, status: str) -> None:
        if self._on_change is not None:
            self._on_change(step, status)


def _reason(e: BaseException) -> str:
    """A failed step's detail: a failed command's whole message (its command line, status and
    the tail of its output: the node's reason has only its first error), else the first line."""
    text = str(e).strip()
    if isinstance(e, CommandError) and text:
        return text
    return text.splitlines()[0] if text else type(e).__name__

