"""`python -m ka.lab.uts NAME COMMAND...`: run COMMAND with NAME as its host name, in a UTS
namespace of its own, so that what a lab host says of itself (`ka receive` joins with its
host name, `hostname` prints it) is its lab name, not the name of the machine running the
lab, the same on every host.

The lab's argv (`LabNetwork.argv`) puts it after `ip netns exec`; it replaces itself with
COMMAND (same pid: a signal to the lab's process reaches COMMAND). Needs root, as the lab.
"""

from __future__ import annotations

import ctypes
import os
import socket
import sys
from collections.abc import Sequence

CLONE_NEWUTS = 0x04000000  # <sched.h>; os.unshare only came with Python 3.12


def unshare_uts() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWUTS) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"unshare(CLONE_NEWUTS): {os.strerror(err)}")


def main(argv: Sequence[str]) -> int:
    if len(argv) < 2:
        print("usage: python -m ka.lab.uts NAME COMMAND [ARG...]", file=sys.stderr)
        return 2
    name, *command = argv
    try:
        unshare_uts()
        socket.sethostname(name)
        os.execvp(command[0], command)
    except OSError as e:
        print(f"ka.lab.uts: {e.strerror or e}: {command[0]}", file=sys.stderr)
        return 127 if isinstance(e, FileNotFoundError) else 126
    raise AssertionError("execvp returned")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
