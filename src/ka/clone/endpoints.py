"""Transport endpoints of the clone sessions: tar at both ends, and a sink that discards.

tar runs from an argv list (no shell), and its stderr goes to a file that is read back and
reported: the original sent it to /dev/null and a disk-full extraction passed as success.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Sequence
from typing import IO

from ka.errors import first_error_line
from ka.run import spawn
from ka.transport.endpoints import ProcessSink, Sink, Source, exit_status
from ka.transport.errors import TransportError

_STDERR_KEEP = 64 * 1024


def _tail(f: tempfile._TemporaryFileWrapper[bytes]) -> str:
    f.flush()
    size = f.seek(0, 2)
    f.seek(max(0, size - _STDERR_KEEP))
    return f.read().decode(errors="replace").strip()


class TarSource(Source):
    """Streams a filesystem with tar; the session fails if tar exits non-zero."""

    def __init__(self, argv: Sequence[str]) -> None:
        self.argv = list(argv)
        self.description = f"tar of {self.argv[3].removeprefix('--directory=')}"
        self._proc: subprocess.Popen[bytes] | None = None
        self._err: tempfile._TemporaryFileWrapper[bytes] | None = None
        self.stderr = ""
        self.status: int | None = None

    def open(self) -> None:
        self._err = tempfile.NamedTemporaryFile(prefix="ka-tar-", suffix=".err")
        self._proc = spawn(self.argv, stdout=subprocess.PIPE, stderr=self._err)

    def read_into(self, buf: memoryview) -> int:
        assert self._proc is not None and self._proc.stdout is not None
        fd, got = self._proc.stdout.fileno(), 0
        while got < len(buf):
            n = os.readv(fd, [buf[got:]])
            if n == 0:
                break
            got += n
        return got

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.stdout is not None:
            proc.stdout.close()
        self.status = exit_status(proc.wait())
        if self._err is not None:
            self.stderr = _tail(self._err)
            self._err.close()
            self._err = None
        # GNU tar exits 1 when a file changed while being read (a live golden node): the
        # archive is still complete, so that is a warning, reported; 2 is a fatal error.
        if self.status not in (0, 1):
            raise TransportError(
                f"tar on the golden node failed with status {self.status}: {self.stderr[-2000:]}",
                hint="read tar's message above; a file system error on the golden node",
            )

    def abort(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
        self.close_quietly()


class TarSink(ProcessSink):
    """Feeds a stream to `tar --extract`; exit status and stderr are kept for the report.

    tar runs in a process group of its own like any consumer command, so a node that ends a
    stuck extraction (a target that takes nothing) ends tar and what it started, before the
    installer unmounts that target.
    """

    def __init__(self, argv: Sequence[str]) -> None:
        super().__init__(argv, "tar extraction")
        self._err: tempfile._TemporaryFileWrapper[bytes] | None = None
        self.stderr = ""

    def _stderr(self) -> IO[bytes]:
        self._err = tempfile.NamedTemporaryFile(prefix="ka-untar-", suffix=".err")
        return self._err

    def _broken(self, e: OSError) -> str:
        return f"tar stopped reading ({e.strerror})"

    def _outcome(self, status: int) -> str | None:
        if self._err is not None:
            self.stderr = _tail(self._err)
            self._err.close()
            self._err = None
        if status == 0:
            return None
        # The first error names the cause; the whole of stderr is in the step's detail.
        cause = first_error_line(self.stderr) or "no message"
        return f"tar --extract exited with status {status}: {cause}"


class DiscardSink(Sink):
    """For a node that cannot install: it stays in the chain as a relay and keeps nothing."""

    description = "discard"

    def __init__(self) -> None:
        self.bytes = 0

    def write(self, data: memoryview) -> None:
        self.bytes += len(data)
