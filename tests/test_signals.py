"""ka.signals: the one home of the SIGINT/SIGTERM handlers of long-running commands."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from ka.signals import sigterm_interrupts, stop_on_signals


def test_sigterm_raises_keyboard_interrupt_in_the_block_and_the_old_handler_returns() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt), sigterm_interrupts():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler's KeyboardInterrupt ends this sleep
        pytest.fail("SIGTERM did not interrupt the block")
    assert signal.getsignal(signal.SIGTERM) is before


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_either_signal_sets_the_stop_event_and_says_so(signum: int) -> None:
    said: list[str] = []
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    with stop_on_signals(threading.Event(), lambda: said.append("ending")) as stop:
        assert not stop.is_set()
        os.kill(os.getpid(), signum)
        assert stop.wait(5)
    assert said == ["ending"]
    assert {s: signal.getsignal(s) for s in before} == before


def test_handlers_are_put_back_when_the_block_raises() -> None:
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(RuntimeError), stop_on_signals(threading.Event()):
        raise RuntimeError("boom")
    assert signal.getsignal(signal.SIGINT) is before
