"""Where images live, and the checks an image passes before anything is sent from it.

A store is a directory of image directories (default /var/lib/ka/images). Wherever an image
is expected, a path (anything with a "/", or an existing directory) names it directly and a
bare NAME means STORE/NAME. A directory whose name starts with "." is a capture under way
(or one that was killed): never an image.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ka.image.manifest import (
    MANIFEST,
    ImageCorrupt,
    ImageError,
    ImageNotFound,
    Manifest,
    StoreNotFound,
    StreamEntry,
    read_manifest,
)
from ka.image.streamfile import StreamFileError, file_digest, raw_digest, seek_table

DEFAULT_STORE = "/var/lib/ka/images"


def resolve(image: str, store: str | os.PathLike[str] = DEFAULT_STORE) -> Path:
    """The directory of `image`: a path as given, a bare NAME in the store."""
    if "/" in image or image in (".", "..") or Path(image).is_dir():
        return Path(image)
    if not Path(store).is_dir():
        raise StoreNotFound(f"image {image!r}: the image store {store} does not exist",
                            hint="give the image's path, or capture one with `ka image capture "
                                 f"--output {Path(store) / image}`")
    return Path(store, image)


@dataclass(frozen=True)
class Listed:
    path: Path
    manifest: Manifest | None
    problem: str | None = None


def list_images(store: str | os.PathLike[str] = DEFAULT_STORE) -> list[Listed]:
    """The images of a store, and the directories there that are not readable images."""
    root = Path(store)
    if not root.is_dir():
        raise StoreNotFound(f"the image store {store} does not exist",
                            hint="capture an image there with `ka image capture --output "
                                 f"{root}/NAME`, or give another STORE")
    out = []
    for entry in sorted(root.iterdir()):
        if entry.name.startswith(".") or not entry.is_dir():
            continue
        try:
            out.append(Listed(entry, read_manifest(entry, None, authenticate=False)))
        except ImageError as e:
            out.append(Listed(entry, None, str(e)))
    return out


def check_files(directory: Path, manifest: Manifest) -> None:
    """Every stream file present with its recorded size, and its seek table sound: the cheap
    checks, done before anything is sent."""
    for s in manifest.streams:
        path = directory / s.file
        if os.path.basename(s.file) != s.file or s.file in ("", ".", "..", MANIFEST):
            raise ImageCorrupt(f"{directory}: stream file name {s.file!r} is not a plain name")
        try:
            size = path.stat().st_size
        except OSError as e:
            raise ImageCorrupt(f"{directory}: stream file {s.file} is missing ({e.strerror})",
                               hint="the image is incomplete; capture it again") from e
        if size != s.stored_bytes:
            raise ImageCorrupt(f"{directory}: stream file {s.file} holds {size} bytes, the "
                               f"manifest says {s.stored_bytes} (truncated or changed)",
                               hint="capture the image again")
        if s.encoding == "zstd-seekable":
            try:
                with open(path, "rb") as f:
                    frames = seek_table(f)
            except StreamFileError as e:
                raise ImageCorrupt(f"{directory}: stream file {s.file}: {e}") from e
            if sum(d for _c, d in frames) != s.raw_bytes:
                raise ImageCorrupt(f"{directory}: stream file {s.file}: its frames hold "
                                   f"{sum(d for _c, d in frames)} bytes, the manifest says "
                                   f"{s.raw_bytes}")


def label(s: StreamEntry) -> str:
    """"fs-1.tar.zst (tar of /var)", "raw-1.img.zst (raw sda1)", "sda.mbr (MBR boot code)"."""
    if s.kind == "tar":
        return f"{s.file} (tar of {s.mountpoint})"
    if s.kind == "raw":
        return f"{s.file} (raw {s.disk} partition {s.number})"
    return f"{s.file} (MBR boot code of {s.disk})"


def verify_stream(directory: Path, s: StreamEntry, *, deep: bool) -> None:
    """Re-hash one stream file against the manifest; `deep` decompresses it and checks the
    digest of the raw stream too."""
    path = directory / s.file
    if file_digest(path) != s.stored_digest:
        raise ImageCorrupt(f"{directory}: stream file {label(s)} does not match the "
                           "manifest's digest: it was changed", hint="capture the image again")
    if not deep:
        return
    if s.encoding == "zstd-seekable":
        try:
            total, digest = raw_digest(path)
        except StreamFileError as e:
            raise ImageCorrupt(f"{directory}: stream file {s.file}: {e}") from e
    else:
        total, digest = os.path.getsize(path), s.stored_digest
    if (total, digest) != (s.raw_bytes, s.digest):
        raise ImageCorrupt(f"{directory}: stream file {label(s)} decompresses to data that "
                           "does not match the manifest's digest", hint="capture the image again")


def open_image(image: str, key: bytes | None, *, store: str | os.PathLike[str] = DEFAULT_STORE,
               allow_unauthenticated: bool = False, deep: bool = False,
               on_stream: Callable[[StreamEntry], None] | None = None) -> tuple[Path, Manifest]:
    """The image, checked from its manifest down to the hash of every stream file: nothing of
    an image that fails here is ever sent."""
    directory = resolve(image, store)
    if not directory.is_dir():
        raise ImageNotFound(f"image {image}: {directory} does not exist",
                            hint="`ka image list` shows the images of the store")
    manifest = read_manifest(directory, key, allow_unauthenticated=allow_unauthenticated)
    check_files(directory, manifest)
    for s in manifest.streams:
        if on_stream is not None:
            on_stream(s)
        verify_stream(directory, s, deep=deep)
    return directory, manifest
