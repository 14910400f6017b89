"""Where the stream comes from (Source) and where each node puts it (Sink).

Commands run as `sh -c CMD` through ka.run.spawn. A consumer that exits before reading
everything shows up as BrokenPipeError (Python ignores SIGPIPE), which the node records as a
consumer failure rather than dying.
"""

from __future__ import annotations

import errno
import fcntl
import os
import signal
import stat
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from ka.run import signal_group, spawn
from ka.transport.errors import TransportError

PIPE_SIZE = 1024 * 1024
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


def _grow_pipe(fd: int) -> None:
    try:
        fcntl.fcntl(fd, _F_SETPIPE_SZ, PIPE_SIZE)
    except OSError:
        pass  # an unprivileged process may be limited by /proc/sys/fs/pipe-max-size


def exit_status(returncode: int) -> int:
    """Shell convention: a command killed by signal N has status 128 + N."""
    return 128 - returncode if returncode < 0 else returncode


class Source:
    """The producer side. `read_into` fills as much of `buf` as it can; 0 means end of stream."""

    description = "source"

    def check(self) -> None:
        """Before the session: raise TransportError if the source surely cannot be read."""

    def open(self) -> None: ...

    def length(self) -> int | None:
        """After `open`: the stream's length in bytes if it is known before it is read."""
        return None

    def read_into(self, buf: memoryview) -> int:
        raise NotImplementedError

    def close(self) -> None:
        """Release resources; raise TransportError if the producer did not succeed."""

    def abort(self) -> None:
        self.close_quietly()

    def close_quietly(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - already failing for another reason
            pass



class CompressedSource(Source):
    """A source whose chunks were compressed ahead of time (a stream file of an image).

    The sender frames each chunk as it is, flagged zstd, and never compresses again; the
    nodes forward the compressed frames and decompress only for their own consumer. The
    whole-stream digest is the one recorded when the chunks were made: the sender cannot
    compute it without decompressing, and every node checks its own against it.
    """

    digest: bytes = b""  # BLAKE3 of the decompressed stream

    def read_into(self, buf: memoryview) -> int:
        raise TransportError(f"{self.description} yields compressed chunks, not bytes")

    def next_chunk(self) -> tuple[bytes, int] | None:
        """The next chunk as (zstd frame, decompressed length); None at the end."""
        raise NotImplementedError

def _fill(fd: int, buf: memoryview) -> int:
    got = 0
    while got < len(buf):
        k = os.readv(fd, [buf[got:]])
        if k == 0:
            break
        got += k
    return got


class CommandSource(Source):
    def __init__(self, command: str) -> None:
        self.command = command
        self.description = f"command {command!r}"
        self._proc: subprocess.Popen[bytes] | None = None

    def open(self) -> None:
        self._proc = spawn(["sh", "-c", self.command], stdout=subprocess.PIPE,
                           start_new_session=True)
        assert self._proc.stdout is not None
        _grow_pipe(self._proc.stdout.fileno())

    def read_into(self, buf: memoryview) -> int:
        assert self._proc is not None and self._proc.stdout is not None
        return _fill(self._proc.stdout.fileno(), buf)

    def close(self) -> None:
        proc = self._proc
        if proc is None:
            return
        self._proc = None
        if proc.stdout is not None:
            proc.stdout.close()
        status = exit_status(proc.wait())
        if status != 0:
            raise TransportError(
                f"the producer command exited with status {status}: {self.command}",
                hint="run the command by hand to see why it fails",
            )

    def abort(self) -> None:
        if self._proc is not None:
            signal_group(self._proc, signal.SIGKILL)
        self.close_quietly()


class FileSource(Source):
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.description = f"file {self.path}"
        self._fd: int | None = None

    def check(self) -> None:
        # Without opening it: opening and closing a FIFO would take its writer's only open
        # (it then gets EPIPE and the real open blocks for ever); a tape would rewind.
        try:
            st = os.stat(self.path)
        except OSError as e:
            raise TransportError(f"cannot read {self.path}: {e.strerror}",
                                 hint="check the --input path") from e
        if stat.S_ISDIR(st.st_mode):
            raise TransportError(f"cannot read {self.path}: it is a directory",
                                 hint="--input takes a file, a device or a FIFO")
        if not os.access(self.path, os.R_OK):
            raise TransportError(f"cannot read {self.path}: Permission denied",
                                 hint="check the --input path and its permissions")

    def open(self) -> None:
        try:
            self._fd = os.open(self.path, os.O_RDONLY)
        except OSError as e:
            raise TransportError(f"cannot read {self.path}: {e.strerror}",
                                 hint="check the --input path") from e

    def length(self) -> int | None:
        """A regular file's size or a block device's; None for a FIFO or a character device."""
        assert self._fd is not None
        mode = os.fstat(self._fd).st_mode
        if stat.S_ISREG(mode):
            return os.fstat(self._fd).st_size
        if stat.S_ISBLK(mode):
            try:
                size = os.lseek(self._fd, 0, os.SEEK_END)
            finally:
                os.lseek(self._fd, 0, os.SEEK_SET)
            return size
        return None

    def read_into(self, buf: memoryview) -> int:
        assert self._fd is not None
        try:
            return _fill(self._fd, buf)
        except OSError as e:
            raise TransportError(f"reading {self.path} failed: {e.strerror}") from e

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class BytesSource(Source):
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.description = f"{len(data)} bytes in memory"
        self._pos = 0

    def open(self) -> None:
        self._pos = 0

    def length(self) -> int | None:
        return len(self.data)

    def read_into(self, buf: memoryview) -> int:
        n = min(len(buf), len(self.data) - self._pos)
        buf[:n] = self.data[self._pos : self._pos + n]
        self._pos += n
        return n


class SinkBroken(Exception):
    """The consumer stopped taking data (EPIPE, disk error)."""


class Sink:
    description = "sink"

    def open(self) -> None: ...

    def write(self, data: memoryview) -> None:
        """Take all of `data` now: its buffer is reused for the next chunk after the call."""
        raise NotImplementedError

    def close(self) -> tuple[int, str | None]:
        """Finish; return (consumer exit status, reason when not 0)."""
        return 0, None

    def abort(self) -> tuple[int, str | None]:
        return self.close()

    def interrupt(self) -> None:
        """From another thread: make a `write` blocked on a stuck consumer return at once."""


def _write_all(fd: int, data: memoryview) -> None:
    # Large writes to a pipe may return short; never hand the kernel more than the pipe holds.
    step = PIPE_SIZE
    while data:
        n = os.write(fd, data[:step])
        data = data[n:]


class ProcessSink(Sink):
    """Feeds a process's stdin: the common part of every consumer that is a program.

    The process runs in a session of its own, whose process group id is the pid started
    here, so `interrupt` ends exactly what it made (a pipeline, a sub-shell, tar's
    --to-command): killing only the first process would leave the rest running and holding
    the pipe, or the target, open.
    """

    def __init__(self, argv: Sequence[str], description: str) -> None:
        self.argv = list(argv)
        self.description = description
        self._proc: subprocess.Popen[bytes] | None = None
        self.status: int | None = None

    def _stderr(self) -> IO[bytes] | None:
        """Where the process's stderr goes (None: ka's own)."""
        return None

    def _broken(self, e: OSError) -> str:
        return f"the consumer command stopped reading ({e.strerror})"

    def _outcome(self, status: int) -> str | None:
        """The reason for a non-zero status, said once the process has ended."""
        return None if status == 0 else f"consumer command exited with status {status}"

    def open(self) -> None:
        self._proc = spawn(self.argv, stdin=subprocess.PIPE, stderr=self._stderr(),
                           start_new_session=True)
        assert self._proc.stdin is not None
        _grow_pipe(self._proc.stdin.fileno())

    def write(self, data: memoryview) -> None:
        assert self._proc is not None and self._proc.stdin is not None
        try:
            _write_all(self._proc.stdin.fileno(), data)
        except OSError as e:
            raise SinkBroken(self._broken(e)) from e

    def close(self) -> tuple[int, str | None]:
        proc = self._proc
        if proc is None:
            return 0, None
        if self.status is None:
            if proc.stdin is not None:
                try:
                    proc.stdin.close()
                except OSError:
                    pass
            self.status = exit_status(proc.wait())
        return self.status, self._outcome(self.status)

    def abort(self) -> tuple[int, str | None]:
        self.interrupt()
        return self.close()

    def interrupt(self) -> None:
        """Safe from any thread, also while `write` is blocked on a consumer that reads
        nothing: the write then fails with EPIPE."""
        proc = self._proc
        if proc is not None:
            signal_group(proc, signal.SIGKILL)


class CommandSink(ProcessSink):
    """A command the user gives, run by `sh -c` by design."""

    def __init__(self, command: str) -> None:
        super().__init__(["sh", "-c", command], f"command {command!r}")
        self.command = command


class FileSink(Sink):
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.description = f"file {self.path}"
        self._fd: int | None = None

    def open(self) -> None:
        # No O_TRUNC on a block device; a regular file is truncated as a fresh copy.
        flags = os.O_WRONLY | os.O_CREAT
        if not self.path.exists() or self.path.is_file():
            flags |= os.O_TRUNC
        self._fd = os.open(self.path, flags, 0o644)

    def write(self, data: memoryview) -> None:
        assert self._fd is not None
        try:
            while data:
                n = os.write(self._fd, data)
                data = data[n:]
        except OSError as e:
            raise SinkBroken(f"writing {self.path} failed: {e.strerror}") from e

    def close(self) -> tuple[int, str | None]:
        if self._fd is None:
            return 0, None
        fd, self._fd = self._fd, None
        try:
            os.fsync(fd)
        except OSError as e:
            if e.errno not in (errno.EINVAL, errno.ENOTSUP):  # /dev/null, pipes: no fsync
                os.close(fd)
                return 1, f"fsync of {self.path} failed: {e.strerror}"
        os.close(fd)
        return 0, None


class BytesSink(Sink):
    description = "memory"

    def __init__(self) -> None:
        self._buf = bytearray()

    def open(self) -> None:
        self._buf = bytearray()

    def write(self, data: memoryview) -> None:
        self._buf += data

    @property
    def data(self) -> bytes:
        return bytes(self._buf)
