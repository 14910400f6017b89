"""`ka image capture|info|verify|list`: images kept on disk and deployed with `ka clone --image`."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from ka.clone.cli import add_selection_options, selection_options
from ka.image.capture import CaptureOptions, Progress, capture
from ka.image.manifest import ImageError, Manifest, read_manifest
from ka.image.store import DEFAULT_STORE, check_files, label, list_images, resolve, verify_stream
from ka.keys import add_key_option, key_from_args
from ka.options import add_group
from ka.signals import sigterm_interrupts

EPILOG = f"""\
An image is a directory: manifest.json (format version, name, creation time, source host, ka
version, the clone plan with the layout of every disk, the fstab and the fix-ups, and for
every stream file its kind, filesystem, mount point, raw and stored bytes and digests), one
stream file per filesystem (fs-N.tar.zst: its tar, compressed once (zstd:3 unless --compress
says otherwise; --compress none stores it as it is), in zstd's seekable
format: `zstd -dc fs-1.tar.zst | tar -tv` lists it), per raw partition (raw-N.img.zst) and
the MBR boot code (DISK.mbr). A bare NAME means STORE/NAME (STORE: --store, default
{DEFAULT_STORE}). Deploy one with `ka clone --image DIR|NAME --nodes N`. A failed capture
leaves nothing behind (no space, or the output exists).
"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    _image, verbs = add_group(
        sub, "image",
        help="capture a golden machine into an image; check and list images (deploy with "
             "`ka clone --image`)",
        description="Images: a golden machine captured once, deployed any time.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)

    c = verbs.add_parser("capture", help="read the golden tree into a new image directory",
                         description="Read the golden tree, its layout and fix-up plan, "
                                     "exactly as `ka clone` would send them, into an image.",
                         epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    c.add_argument("--output", "-o", required=True, metavar="DIR|NAME",
                   help="the new image directory (a bare NAME: STORE/NAME); never overwritten")
    add_selection_options(c)
    c.add_argument("--name", help="the image's name (default: the directory's)")
    add_key_option(c, "; it authenticates the manifest")
    c.add_argument("--store", default=DEFAULT_STORE, metavar="DIR")
    c.add_argument("--no-space-check", action="store_true",
                   help="do not refuse when the free space is below the uncompressed data")
    c.set_defaults(func=cmd_capture)

    i = verbs.add_parser("info", help="show an image's manifest")
    i.add_argument("image", metavar="DIR|NAME")
    i.add_argument("--store", default=DEFAULT_STORE, metavar="DIR")
    i.add_argument("--json", action="store_true", help="the manifest as JSON")
    i.set_defaults(func=cmd_info)

    v = verbs.add_parser("verify", help="re-hash every stream file against the manifest",
                         description="Check an image at rest: its manifest (and MAC, with "
                                     "--key-file), every stream file's size and digest, and "
                                     "the digest of the decompressed data.")
    v.add_argument("image", metavar="DIR|NAME")
    v.add_argument("--store", default=DEFAULT_STORE, metavar="DIR")
    add_key_option(v, "; the capture's, to check the manifest's MAC")
    v.add_argument("--quick", action="store_true",
                   help="hash the stored files only, without decompressing them")
    v.set_defaults(func=cmd_verify)

    lst = verbs.add_parser("list", help="the images of a store")
    lst.add_argument("store", nargs="?", default=DEFAULT_STORE, metavar="STORE")
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(func=cmd_list)


def _level(spec: str | None) -> int | None:
    if spec == "none":
        return None
    from ka.transport.producer import compression_level

    return compression_level(spec or "zstd")


class _ProgressLine:
    """One line per stream on stderr, refreshed every 2 s while it is read."""

    def __init__(self) -> None:
        self._t0 = time.monotonic()
        self._last = 0.0

    def __call__(self, p: Progress) -> None:
        now = time.monotonic()
        if not p.finished and now - self._last < 2.0:
            return
        self._last = now
        rate = p.done / max(now - self._t0, 1e-6) / 1e6
        of = f" of ~{p.expected / 1e6:.1f}" if p.expected else ""
        state = "done" if p.finished else "reading"
        print(f"ka: {p.stream}: {state}, {p.done / 1e6:.1f}{of} MB, {rate:.1f} MB/s",
              file=sys.stderr, flush=True)
        if p.warning:
            print(f"ka: warning: {p.stream}: {p.warning}", file=sys.stderr)
        if p.finished:
            self._t0 = now


def cmd_capture(args: argparse.Namespace) -> int:
    # A SIGTERM ends a capture like Ctrl-C does: tar is ended, the partial image removed.
    output = resolve(args.output, args.store)
    key = key_from_args(args)
    opts = CaptureOptions(selection=selection_options(args, nodes=0), output=output,
                          name=args.name, level=_level(args.compress), key=key,
                          space_check=not args.no_space_check)
    t0 = time.monotonic()
    with sigterm_interrupts():
        manifest = capture(opts, _ProgressLine())
    seconds = time.monotonic() - t0
    ratio = manifest.stored_bytes / manifest.raw_bytes if manifest.raw_bytes else 0.0
    print(f"image {manifest.name} written to {output}: {len(manifest.streams)} stream file(s), "
          f"{manifest.raw_bytes / 1e6:.1f} MB of data stored in "
          f"{manifest.stored_bytes / 1e6:.1f} MB ({ratio:.0%}) in {seconds:.1f} s"
          + ("; manifest authenticated" if key else "; not authenticated (no --key-file)"))
    for note in manifest.plan.notes:
        print(f"ka: note: {note}", file=sys.stderr)
    return 0


def _read(args: argparse.Namespace) -> tuple[Path, Manifest]:
    directory = resolve(args.image, args.store)
    return directory, read_manifest(directory, None, authenticate=False)


def cmd_info(args: argparse.Namespace) -> int:
    directory, manifest = _read(args)
    if args.json:
        print(json.dumps(manifest.body(), indent=2, sort_keys=True))
        return 0
    plan = manifest.plan
    print(f"image {manifest.name} ({directory}), format {manifest.format}")
    print(f"  captured {manifest.created} on {manifest.source_host} by ka {manifest.ka_version}"
          f"; manifest {'authenticated (MAC)' if manifest.authenticated else 'not authenticated'}")
    print(f"  {manifest.raw_bytes / 1e6:.1f} MB of data in {manifest.stored_bytes / 1e6:.1f} MB")
    for disk in plan.disks:
        print(f"\ndisk {disk.name} ({disk.size >> 20} MiB on the golden):" if disk.size
              else f"\ndisk {disk.name}:")
        print("\n".join("  " + x for x in disk.desc.splitlines()))
    print("\nstream files:")
    for s in manifest.streams:
        print(f"  {label(s)}: {s.fstype or '-'}, {s.raw_bytes / 1e6:.1f} MB -> "
              f"{s.stored_bytes / 1e6:.1f} MB, digest {s.digest[:16]}…")
    print("\nfstab:")
    print("\n".join("  " + x for x in plan.fstab.splitlines()) or "  (empty)")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    directory = resolve(args.image, args.store)
    key = key_from_args(args)
    # Without a key there is no MAC to check: the manifest as it is; with one, authenticated.
    manifest = (read_manifest(directory, None, authenticate=False) if key is None
                else read_manifest(directory, key, allow_unauthenticated=True))
    check_files(directory, manifest)
    for s in manifest.streams:
        t0 = time.monotonic()
        verify_stream(directory, s, deep=not args.quick)
        print(f"ok: {label(s)}: {s.stored_bytes / 1e6:.1f} MB in "
              f"{time.monotonic() - t0:.1f} s", flush=True)
    if manifest.authenticated and key is None:
        print("ka: warning: the manifest's MAC was not checked (no --key-file): the streams "
              "match the manifest, nothing proves the manifest itself", file=sys.stderr)
    elif manifest.authenticated:
        print("ok: the manifest's MAC matches the key")
    print(f"image {manifest.name}: verified, {len(manifest.streams)} stream file(s)")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    listed = list_images(args.store)
    if args.json:
        rows: list[dict[str, Any]] = [
            {"path": str(x.path), "name": x.manifest.name if x.manifest else None,
             "created": x.manifest.created if x.manifest else None,
             "source_host": x.manifest.source_host if x.manifest else None,
             "stored_bytes": x.manifest.stored_bytes if x.manifest else None,
             "problem": x.problem} for x in listed]
        print(json.dumps(rows, indent=2))
        return 0
    if not listed:
        print(f"no image in {args.store}")
    for x in listed:
        if x.manifest is None:
            print(f"{x.path.name}\t(not a usable image: {x.problem})")
        else:
            m = x.manifest
            print(f"{x.path.name}\t{m.name}\t{m.created}\t{m.source_host}\t"
                  f"{m.stored_bytes / 1e6:.1f} MB")
    return 0


__all__ = ["ImageError", "register"]
