"""`ka clone --image`: the live clone's sessions, fed from an image's stream files.

The stored plan becomes the run's plan (the run's prefix, node count, host names, release
delay and --pxe hand-over; the boot code read back from its file), and each stream's source
is its file: seekable zstd frames handed to the transport as stored (a `CompressedSource`),
or a plain file. Everything else is `run_clone`, unchanged; the nodes cannot tell.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from ka.clone.hostnames import HostnameRule
from ka.clone.plan import BootloaderRequest, ClonePlan, Stream
from ka.image.manifest import ImageCorrupt, Manifest
from ka.image.streamfile import StreamFileError, iter_frames
from ka.transport import CompressedSource, FileSource, Source
from ka.transport.errors import TransportError


@dataclasses.dataclass(frozen=True)
class Deployment:
    prefix: str
    nodes: int
    hostnames: HostnameRule | None = None
    release_delay: int | None = None
    reports_before_release: bool = False
    bootloader: BootloaderRequest | None = None  # None: as captured


def image_plan(directory: Path, manifest: Manifest, run: Deployment) -> ClonePlan:
    stored = manifest.plan
    boot = {s.disk: (directory / s.file).read_bytes() for s in manifest.streams
            if s.kind == "mbr"}
    disks = tuple(dataclasses.replace(d, boot_code=boot.get(d.name)) for d in stored.disks)
    streams = tuple(dataclasses.replace(s, session=run.prefix + s.session[len(stored.prefix):])
                    for s in stored.streams)
    return dataclasses.replace(
        stored, prefix=run.prefix, nodes=run.nodes, disks=disks, streams=streams,
        hostnames=run.hostnames, release_delay=run.release_delay,
        reports_before_release=run.reports_before_release, compress=None,
        bootloader=run.bootloader or stored.bootloader)


class StreamFileSource(CompressedSource):
    """A seekable zstd stream file, frame after frame, as stored."""

    def __init__(self, path: Path, digest: str) -> None:
        self.path = path
        self.description = f"stream file {path}"
        self.digest = bytes.fromhex(digest)
        self._file: BinaryIO | None = None
        self._frames: Iterator[tuple[bytes, int]] | None = None

    def check(self) -> None:
        if not self.path.is_file():
            raise TransportError(f"{self.path} is missing", hint="ka image verify the image")

    def open(self) -> None:
        self._file = open(self.path, "rb")  # noqa: SIM115 - closed by close()
        self._frames = iter_frames(self._file)

    def next_chunk(self) -> tuple[bytes, int] | None:
        assert self._frames is not None
        try:
            return next(self._frames)
        except StopIteration:
            return None
        except StreamFileError as e:
            raise TransportError(f"{self.path}: {e}", hint="ka image verify the image") from e

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def image_sources(directory: Path, manifest: Manifest, plan: ClonePlan
                  ) -> Callable[[Stream], Source]:
    """A function giving each stream of `plan` its source in the image."""
    by_index = dict(zip((s.session for s in plan.streams),
                        (manifest.stream_of(s.session) for s in manifest.plan.streams),
                        strict=True))

    def source(stream: Stream) -> Source:
        entry = by_index.get(stream.session)
        if entry is None:
            raise ImageCorrupt(f"no stream file for {stream.session} in {directory}")
        path = directory / entry.file
        if entry.encoding == "zstd-seekable":
            return StreamFileSource(path, entry.digest)
        return FileSource(path)

    return source
