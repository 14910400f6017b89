"""`ka lab clone --web PORT`: the golden node's dashboard, on the machine running the lab.

`ka clone --web` runs in the golden node's namespace, on every address of it (the lab's
nodes are other hosts and need the token, as on a real network); a forward makes it
http://127.0.0.1:PORT/ of the machine running the lab, the token being the lab's own (a
file in its work directory). Once `ka clone` has ended, `ka web` takes over the port in the
golden namespace and serves the history of the run (the finished deployment, its timeline
and every node's report) for as long as the lab is up.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ka.lab.forward import PortForward
from ka.lab.network import LabNetwork
from ka.web.access import new_token

if TYPE_CHECKING:
    from ka.lab.clone import LabProcesses

LINE = "ka: dashboard at "
START_TIMEOUT = 20.0  # seconds for `ka web` to say it serves


class LabDashboard:
    """The lab's side of the dashboard: the token, the forward, and `ka web` afterwards."""

    def __init__(self, port: int, workdir: Path, lab: LabNetwork, stack: contextlib.ExitStack,
                 announce: Callable[[str], None]) -> None:
        self.workdir, self.lab, self.announce = workdir, lab, announce
        self.token = new_token()
        self.token_file = workdir / "web.token"
        self.token_file.write_text(self.token + "\n")
        self.token_file.chmod(0o600)
        golden = lab.hosts[0]
        # The forward's port is the port inside the namespace too: nothing else listens there.
        self.forward = stack.enter_context(PortForward(port, golden.netns))
        self.inner = f"0.0.0.0:{self.forward.port}"
        self.announced = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.forward.port}/?token={self.token}"

    def clone_args(self) -> list[str]:
        return ["--web", self.inner, "--web-token-file", str(self.token_file)]

    def tick(self, procs: LabProcesses) -> None:
        """Said once `ka clone` serves it (its own line names the golden namespace's host)."""
        if not self.announced and LINE in procs.log("golden"):
            self.announced = True
            self.announce(self.url)

    def serve_history(self, procs: LabProcesses) -> bool:
        """`ka web` on the same port and token, the clone's reports its history; True once
        it serves (within START_TIMEOUT)."""
        argv = [sys.executable, "-m", "ka", "web", "--logs", str(self.workdir / "logs"),
                "--web-token-file", str(self.token_file), self.inner]
        procs.start("web", self.lab.argv(0, argv), self.workdir / "web.log")
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline and procs.running("web"):
            if LINE in procs.log("web"):
                return True
            time.sleep(0.05)
        return False
