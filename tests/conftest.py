"""Shared test fixtures and markers.

Tests marked `root` need root (loop devices, namespaces, mounts). They run in CI (root) and are
skipped *visibly*, with a reason, elsewhere.
"""

from __future__ import annotations

import os

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="needs root (loop devices / network namespaces / mounts)")
    for item in items:
        if item.get_closest_marker("root") or item.get_closest_marker("lab"):
            item.add_marker(skip)
