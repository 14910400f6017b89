"""How a long-running command ends on SIGINT or SIGTERM: the one home of those handlers.

Two ways, as the command needs:
- `sigterm_interrupts()`: SIGTERM raises KeyboardInterrupt in the main thread, so a command's
  Ctrl-C clean-up (tar ended, partial image removed, lab torn down) runs for either signal;
- `stop_on_signals(stop)`: SIGINT and SIGTERM set an event that the command's loops poll, for a
  command whose threads must wind down in order rather than be interrupted.
Both put the previous handlers back when the block ends.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


@contextmanager
def _handlers(handler: Callable[[int, object], None],
              signals: tuple[signal.Signals, ...]) -> Iterator[None]:
    old = {s: signal.signal(s, handler) for s in signals}
    try:
        yield
    finally:
        for s, previous in old.items():
            signal.signal(s, previous)


@contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """For the block, a SIGTERM raises KeyboardInterrupt as Ctrl-C does."""
    with _handlers(_interrupt, (signal.SIGTERM,)):
        yield


@contextmanager
def stop_on_signals(stop: threading.Event,
                    said: Callable[[], None] | None = None) -> Iterator[threading.Event]:
    """For the block, SIGINT and SIGTERM set `stop` (and call `said` first, if given)."""

    def ending(_signum: int, _frame: object) -> None:
        if said is not None:
            said()
        stop.set()

    with _handlers(ending, SIGNALS):
        yield stop
