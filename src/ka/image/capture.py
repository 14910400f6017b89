"""`ka image capture`: read the golden machine once, exactly as a live clone does, into an
image directory.

The plan is the live clone's (`build_plan`), and each stream is read by the live clone's own
source (`source_for`: the same tar command, the same raw partition read). Only where the
bytes go differs: into a stream file, compressed once, instead of into a session. The golden
is only read. The image is written into a hidden directory beside the output and renamed
into place once its manifest is written, so a capture that fails or is interrupted leaves
no image behind, never half of one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import os
import shutil
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import blake3

from ka import __version__
from ka.clone.deploy import source_for
from ka.clone.golden import CloneOptions, build_plan, check_disk_options
from ka.clone.plan import ClonePlan, Stream
from ka.errors import KaError
from ka.image.manifest import MANIFEST, CaptureError, Manifest, StreamEntry
from ka.image.streamfile import StreamFileWriter, WrittenStream, file_digest

CAPTURE_PREFIX = "image"  # session names in a stored plan; a deploy renames them
MiB = 1024 * 1024


@dataclass(frozen=True)
class CaptureOptions:
    selection: CloneOptions  # what to read, exactly as `ka clone` selects it
    output: Path
    name: str | None = None
    level: int | None = 3  # zstd level; None: streams stored uncompressed
    key: bytes | None = None  # authenticates the manifest
    space_check: bool = True


@dataclass(frozen=True)
class Progress:
    stream: str  # the stream file being written
    done: int  # raw bytes read so far
    expected: int  # raw bytes expected (0: unknown)
    finished: bool = False
    warning: str | None = None


ProgressSink = Callable[[Progress], None]


def plan_capture(opts: CaptureOptions) -> ClonePlan:
    selection = dataclasses.replace(opts.selection, prefix=CAPTURE_PREFIX, nodes=0,
                                    reports_before_release=False, release_delay=None,
                                    hostnames=None, compress=None)
    plan = build_plan(selection)
    check_disk_options(selection, plan)
    return plan


def expected_size(plan: ClonePlan, stream: Stream, root: str) -> int:
    """Raw bytes the stream will hold, about: a raw partition's size, a mounted filesystem's
    used bytes, or, for a plain directory, what its files hold (nested mount points of the
    plan left out: their own stream carries them)."""
    if stream.kind == "raw":
        return stream.size
    used = sum(p.used for p in plan.partitions
               if (p.disk, p.number) == (stream.disk, stream.number))
    if used or stream.mountpoint is None:
        return used
    top = os.path.join(os.path.realpath(root), stream.mountpoint.lstrip("/"))
    others = {os.path.join(os.path.realpath(root), s.mountpoint.lstrip("/"))
              for s in plan.streams if s.mountpoint and s is not stream}
    total = 0
    for here, dirs, files in os.walk(top):
        dirs[:] = [d for d in dirs if os.path.join(here, d) not in others]
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(here, name)).st_size
    return total


def capture(opts: CaptureOptions, on_progress: ProgressSink | None = None) -> Manifest:
    output = opts.output
    if output.exists() or output.is_symlink():
        raise CaptureError(f"--output {output} exists already",
                           hint="give a new directory; images are never overwritten")
    parent = output.parent
    if not parent.is_dir():
        raise CaptureError(f"--output {output}: {parent} does not exist",
                           hint=f"create it first (mkdir -p {parent})")
    plan = plan_capture(opts)
    # A plain directory's size is a walk of its tree: once, for the check and the progress.
    expected = {s.session: expected_size(plan, s, opts.selection.root) for s in plan.streams}
    need = sum(expected.values())
    if opts.space_check:
        _check_space(parent, need)
    partial = parent / f".{output.name}.partial-{os.getpid()}"
    partial.mkdir(mode=0o700)
    try:
        manifest = _write(opts, plan, partial, expected, on_progress or (lambda _p: None))
        _fsync_dir(partial)
        os.rename(partial, output)
        _fsync_dir(parent)
        return manifest
    except BaseException as e:
        shutil.rmtree(partial, ignore_errors=True)
        if isinstance(e, OSError) and not isinstance(e, KaError):
            raise CaptureError(f"writing the image into {parent} failed: {e.strerror or e}",
                               hint="nothing was left behind; free some space or choose "
                                    "another --output" if e.errno == 28 else None) from e
        raise


def _check_space(parent: Path, need: int) -> None:
    st = os.statvfs(parent)
    free = st.f_bavail * st.f_frsize
    if free < need:
        raise CaptureError(
            f"{parent} has {free / MiB:.0f} MiB free; the image may need up to "
            f"{need / MiB:.0f} MiB (the golden's data, before compression)",
            hint="free some space, choose another --output, or give --no-space-check if "
                 "you know how well it compresses")


def _write(opts: CaptureOptions, plan: ClonePlan, directory: Path, expected: dict[str, int],
           on_progress: ProgressSink) -> Manifest:
    root = opts.selection.root
    entries: list[StreamEntry] = []
    counts = {"tar": 0, "raw": 0}
    for stream in plan.streams:
        counts[stream.kind] += 1
        base = f"fs-{counts['tar']}.tar" if stream.kind == "tar" else f"raw-{counts['raw']}.img"
        name = base + (".zst" if opts.level else "")
        part = next(p for p in plan.partitions
                    if (p.disk, p.number) == (stream.disk, stream.number))
        written = _capture_stream(plan, stream, root, directory / name, opts.level,
                                  expected[stream.session], on_progress)
        entries.append(StreamEntry(
            file=name, kind=stream.kind, disk=stream.disk, number=stream.number,
            fstype=part.fstype, mountpoint=stream.mountpoint,
            encoding="zstd-seekable" if opts.level else "none", raw_bytes=written.raw_bytes,
            stored_bytes=written.stored_bytes, digest=written.digest,
            stored_digest=written.stored_digest, session=stream.session))
    disks = []
    for disk in plan.disks:
        if disk.boot_code is not None:
            name = f"{disk.name}.mbr"
            (directory / name).write_bytes(disk.boot_code)
            digest = file_digest(directory / name)
            entries.append(StreamEntry(
                file=name, kind="mbr", disk=disk.name, number=0, fstype=None, mountpoint=None,
                encoding="none", raw_bytes=len(disk.boot_code),
                stored_bytes=len(disk.boot_code), digest=digest, stored_digest=digest))
        disks.append(dataclasses.replace(disk, boot_code=None))
    manifest = Manifest(
        name=opts.name or opts.output.name,
        created=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        source_host=socket.gethostname(), ka_version=__version__,
        plan=dataclasses.replace(plan, disks=tuple(disks)), streams=tuple(entries),
        authenticated=opts.key is not None)
    path = directory / MANIFEST
    with open(path, "w") as f:
        f.write(manifest.to_json(opts.key))
        f.flush()
        os.fsync(f.fileno())
    return manifest


def _capture_stream(plan: ClonePlan, stream: Stream, root: str, path: Path, level: int | None,
                    expected: int, on_progress: ProgressSink) -> WrittenStream:
    from ka.transport.options import CHUNK_SIZE

    source = source_for(plan, stream, root)
    source.check()
    buf = bytearray(CHUNK_SIZE)
    view = memoryview(buf)
    with open(path, "wb") as out:
        writer: StreamFileWriter | PlainWriter = (
            StreamFileWriter(out, level) if level else PlainWriter(out))
        source.open()
        try:
            done = 0
            while n := source.read_into(view):
                writer.write_chunk(view[:n])
                done += n
                on_progress(Progress(path.name, done, expected))
        except BaseException:
            source.abort()
            raise
        source.close()  # raises when tar failed: the image is not written
        written = writer.finish()
        out.flush()
        os.fsync(out.fileno())
    said = getattr(source, "stderr", "")
    on_progress(Progress(path.name, written.raw_bytes, expected, finished=True,
                         warning=f"tar said: {said[-2000:]}" if said else None))
    return written


class PlainWriter:
    """A stream stored as it is (`--compress none`)."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self._hash = blake3.blake3()
        self.size = 0

    def write_chunk(self, chunk: memoryview) -> None:
        self._out.write(chunk)
        self._hash.update(chunk)
        self.size += len(chunk)

    def finish(self) -> WrittenStream:
        digest = self._hash.hexdigest()
        return WrittenStream(self.size, self.size, digest, digest, 0)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

