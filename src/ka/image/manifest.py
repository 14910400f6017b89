"""An image's manifest: what was captured, from where, and how to check every byte of it.

`manifest.json` holds the format version, the image's name, when and where it was captured
and by which ka, the clone plan as the golden node made it (the layout of every disk, the
fstab, the fix-up plan, the streams), and for each stream file its kind, filesystem, mount
point, raw and stored sizes and digests. Captured with a key, it carries a keyed BLAKE3 MAC
over everything else: a manifest that was changed, or an image captured with another key,
is refused, and since the manifest holds every stream's digest, so is any changed stream.
"""

from __future__ import annotations

import hmac
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import blake3

from ka.clone.plan import ClonePlan, PlanError
from ka.errors import KaError

MANIFEST = "manifest.json"
IMAGE_KIND = "ka-image"
IMAGE_FORMAT = 1
_MAC_CONTEXT = "ka image manifest 2026 mac key"


class ImageError(KaError):
    """Base of the image errors; each kind has its own exit status."""

    exit_code = 30


class ImageNotFound(ImageError):
    exit_code = 30


class ImageFormatError(ImageError):
    exit_code = 31


class ImageCorrupt(ImageError):
    exit_code = 32


class ImageAuthError(ImageError):
    exit_code = 33


class CaptureError(ImageError):
    exit_code = 34


class StoreNotFound(ImageError):
    exit_code = 35


@dataclass(frozen=True)
class StreamEntry:
    """One stream file: a filesystem's tar, a raw partition, or a disk's MBR boot code."""

    file: str  # name inside the image directory
    kind: str  # "tar" | "raw" | "mbr"
    disk: str
    number: int  # partition number; 0 for the boot code
    fstype: str | None
    mountpoint: str | None
    encoding: str  # "zstd-seekable" | "none"
    raw_bytes: int
    stored_bytes: int
    digest: str  # BLAKE3 of the raw stream
    stored_digest: str  # BLAKE3 of the file as stored
    session: str | None = None  # the plan's session of this stream (None: the boot code)


@dataclass(frozen=True)
class Manifest:
    name: str
    created: str  # ISO 8601, UTC
    source_host: str
    ka_version: str
    plan: ClonePlan  # boot code left out: it is a stream file of its own
    streams: tuple[StreamEntry, ...]
    authenticated: bool = False
    format: int = IMAGE_FORMAT

    def body(self) -> dict[str, Any]:
        return {
            "kind": IMAGE_KIND, "format": self.format, "name": self.name,
            "created": self.created, "source_host": self.source_host,
            "ka_version": self.ka_version, "authenticated": self.authenticated,
            "plan": json.loads(self.plan.to_json()),
            "streams": [vars(s) for s in self.streams],
        }

    def to_json(self, key: bytes | None) -> str:
        body = self.body()
        if key is not None:
            body["mac"] = manifest_mac(key, body)
        return json.dumps(body, indent=2, sort_keys=True) + "\n"

    def stream_of(self, session: str) -> StreamEntry:
        return next(s for s in self.streams if s.session == session)

    @property
    def stored_bytes(self) -> int:
        return sum(s.stored_bytes for s in self.streams)

    @property
    def raw_bytes(self) -> int:
        return sum(s.raw_bytes for s in self.streams)


def manifest_mac(key: bytes, body: dict[str, Any]) -> str:
    mac_key = blake3.blake3(key, derive_key_context=_MAC_CONTEXT).digest()
    canonical = json.dumps({k: v for k, v in body.items() if k != "mac"}, sort_keys=True,
                           separators=(",", ":")).encode()
    return blake3.blake3(canonical, key=mac_key).hexdigest()


def read_manifest(directory: Path, key: bytes | None, *, authenticate: bool = True,
                  allow_unauthenticated: bool = False) -> Manifest:
    """The manifest of the image at `directory`.

    With `authenticate`, an image captured with a key is read only with that key, and one
    captured without a key only without one, or with `allow_unauthenticated`: with a key
    given, a manifest without a MAC may be one whose MAC was stripped.
    """
    path = directory / MANIFEST
    if not directory.is_dir():
        raise ImageNotFound(f"{directory}: no such image directory",
                            hint="`ka image list` shows the images of the store")
    try:
        text = path.read_text()
    except FileNotFoundError as e:
        raise ImageNotFound(f"{directory} is not an image: it has no {MANIFEST}",
                            hint="a capture that did not finish leaves no image; capture "
                                 "again with `ka image capture`") from e
    except (OSError, UnicodeDecodeError) as e:
        raise ImageFormatError(f"{path}: cannot be read: {e}") from e
    try:
        body = json.loads(text)
    except ValueError as e:
        raise ImageFormatError(f"{path} is not valid JSON: {e}",
                               hint="the manifest was damaged; capture the image again") from e
    if not isinstance(body, dict) or body.get("kind") != IMAGE_KIND:
        raise ImageFormatError(f"{path} is not a ka image manifest")
    if body.get("format") != IMAGE_FORMAT:
        raise ImageFormatError(
            f"{directory}: image format {body.get('format')!r} is not supported (this ka "
            f"reads format {IMAGE_FORMAT})", hint="use the ka version that captured it")
    if authenticate:
        _authenticate(directory, body, key, allow_unauthenticated)
    try:
        plan = ClonePlan.from_json(json.dumps(body["plan"]))
        streams = tuple(StreamEntry(**s) for s in body["streams"])
        return Manifest(name=str(body["name"]), created=str(body["created"]),
                        source_host=str(body["source_host"]),
                        ka_version=str(body["ka_version"]), plan=plan, streams=streams,
                        authenticated=bool(body.get("authenticated")))
    except (KeyError, TypeError, PlanError) as e:
        raise ImageFormatError(f"{path}: malformed manifest: {e}") from e


def _authenticate(directory: Path, body: dict[str, Any], key: bytes | None,
                  allow_unauthenticated: bool) -> None:
    mac = body.get("mac")
    if body.get("authenticated") and not isinstance(mac, str):
        raise ImageAuthError(f"{directory}: the manifest says it is authenticated but has no "
                             "MAC", hint="the manifest was changed; capture the image again")
    if not isinstance(mac, str):
        if key is not None and not allow_unauthenticated:
            raise ImageAuthError(
                f"{directory} was captured without a key: nothing proves it was not changed",
                hint="capture it with --key-file, or deploy it with --unauthenticated-image")
        return
    if key is None:
        raise ImageAuthError(f"{directory} was captured with a key: give it to check the "
                             "image", hint="--key-file FILE (the key of the capture)")
    if not hmac.compare_digest(mac, manifest_mac(key, body)):
        raise ImageAuthError(
            f"{directory}: the manifest does not match the key (it was changed, or the "
            "image was captured with another key)",
            hint="use the key of the capture, or capture the image again")
