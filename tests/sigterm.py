"""A SIGTERM ends a test run the way Ctrl-C does: as KeyboardInterrupt in the running test,
so every `with` and ExitStack unwinds (namespaces, mounts, loop devices, QEMU and dnsmasq
are removed) and the fixtures' teardowns run. Without it, a SIGTERM (a CI runner stopping a
job, `timeout`, a kill) ended the interpreter at once and left all of them behind.

A plugin of its own (tests/conftest.py loads it) so that a throwaway suite can load it too:
`pytest -p sigterm` with this directory on the path.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

import pytest


def _interrupt(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_configure(config: pytest.Config) -> None:
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)
