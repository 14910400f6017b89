"""The suite's two tiers, and the markers that sort tests into them.

`pytest -q tests` runs the fast tier: pure code, in-memory links and a few short-lived
processes, no root. Tests marked `root` (loop devices, mounts, namespaces), `lab` (a virtual
lab), `slow` (multi-process sessions, long builds, virtual machines) or `browser` (headless
Chromium) are left out of it and counted in the summary. `--all`, any `-m` expression, or
naming a test file or test id runs them, as CI does. Without root, `root` and `lab` tests are
then skipped *visibly*, with a reason.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings

TIER_MARKERS = ("root", "lab", "slow", "browser")

# Property tests check what is computed, not how fast: hypothesis's default 200 ms deadline per
# example failed test_frame's flipped-bit property on a machine busy with other tests.
settings.register_profile("ka", deadline=None)
settings.load_profile("ka")


def pytest_configure(config: pytest.Config) -> None:
    import sigterm  # a SIGTERM unwinds the running test like Ctrl-C (see tests/sigterm.py)

    sigterm.pytest_configure(config)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--all", action="store_true", dest="ka_all",
                     help="run every tier (root, lab, slow and browser tests too), as CI does")


def _fast_tier(config: pytest.Config) -> bool:
    """No `--all`, no `-m`, and only directories named: a test file or test id named on the
    command line (`pytest tests/x.py::test_y`) runs whatever its tier."""
    if config.getoption("ka_all") or config.getoption("markexpr"):
        return False
    here = Path(config.invocation_params.dir)
    return all((here / arg.split("::")[0]).is_dir() for arg in config.args)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _fast_tier(config):
        fast, slow = [], []
        for item in items:
            tiered = any(item.get_closest_marker(m) for m in TIER_MARKERS)
            (slow if tiered else fast).append(item)
        if slow:
            config.hook.pytest_deselected(items=slow)
            items[:] = fast
        config.stash[_LEFT_OUT] = len(slow)
        return
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="needs root (loop devices / network namespaces / mounts)")
    for item in items:
        if item.get_closest_marker("root") or item.get_closest_marker("lab"):
            item.add_marker(skip)


_LEFT_OUT = pytest.StashKey[int]()


def pytest_report_header(config: pytest.Config) -> str:
    if _fast_tier(config):
        return "ka: fast tier (root, lab, slow and browser tests left out; `--all` runs them)"
    return "ka: every tier (--all, -m, or a test file or id named)"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter,
                            config: pytest.Config) -> None:
    left_out = config.stash.get(_LEFT_OUT, 0)
    if left_out:
        terminalreporter.write_line(
            f"ka: fast tier: {left_out} root, lab, slow or browser tests were not run "
            "(`pytest -q --all tests` runs them, as CI does)")
