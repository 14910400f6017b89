"""What a test needs from the machine: a tool or file that scripts/setup.sh installs.

Where the suite runs as CI runs it (as root, or with `CI` set), everything setup.sh installs
is there, so a missing one fails the test and names its package: a skip, or a test that
quietly takes its other branch, would pass off an untested path as a pass. Elsewhere (a
laptop, no root) the test is skipped, visibly, with the same reason.
"""

from __future__ import annotations

import os
import shutil
from typing import NoReturn

import pytest

# Tools in sbin that a user's PATH may leave out.
_SBIN = ("/usr/local/sbin", "/usr/sbin", "/sbin")


def strict() -> bool:
    """Whether the machine must have everything setup.sh installs (CI, or root)."""
    return os.geteuid() == 0 or bool(os.environ.get("CI"))


def missing(what: str) -> NoReturn:
    """Fail (strict) or skip (elsewhere): `what` is missing."""
    if strict():
        pytest.fail(f"{what}: required where the suite runs as CI does (root or CI set); "
                    "run scripts/setup.sh", pytrace=False)
    pytest.skip(what)


def need(tool: str, package: str) -> str:
    """The path of `tool` (a command name or an absolute path), from Debian `package`."""
    if os.path.isabs(tool):
        path: str | None = tool if os.path.exists(tool) else None
    else:
        search = os.pathsep.join([os.environ.get("PATH", ""), *_SBIN])
        path = shutil.which(tool, path=search)
    if path is None:
        missing(f"{tool} is not installed (Debian package {package}; "
                "scripts/setup.sh installs it)")
    return path
