"""Clone benchmark: a lab clone of >= 1 GiB of files to N = 1 and N = 4 nodes at 1 Gbit/s.

Prints, for each N: the total time, a per-step breakdown taken from the nodes' install
reports (plan, partition+format, transfer, fix-ups), the filesystem sessions' rate against
the link rate, then T(4)/T(1). Every clone is verified as in `ka lab clone`.

With --image, each N also runs from an image (`ka lab clone --image`: the golden captured with
`ka image capture`, the golden disk deleted, the nodes installed by `ka clone --image`), and
prints the capture time, the image's size against the data, and the deploy time against the
live clone's.

Run as root: .venv/bin/python benchmarks/clone.py [--data 1GiB] [--nodes 1,4] [--rate 1gbit]
                                                  [--image]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

from ka.lab.clone import LabCloneOptions, lab_clone
from ka.lab.network import parse_rate
from ka.lab.report import LabCloneReport, NodeOutcome, summary_table

MiB = 1024 * 1024
GiB = 1024 * MiB
# TCP payload per byte on the wire with 1500-byte frames (1448 of 1538 bytes).
PAYLOAD_SHARE = 1448 / 1538
PHASES = ("plan", "partition+format", "transfer", "fix-ups")


def phase_of(step: str) -> str:
    if step in ("receive plan", "map disks"):
        return "plan"
    if step.startswith("partition and format"):
        return "partition+format"
    if step.startswith(("extract ", "raw copy")):
        return "transfer"
    return "fix-ups"


def breakdown(node: NodeOutcome) -> dict[str, float]:
    out = dict.fromkeys(PHASES, 0.0)
    for step in node.steps:
        if step.get("result") != "skipped":
            out[phase_of(str(step.get("name", "")))] += float(step.get("seconds") or 0.0)
    return out


def filesystem_rate(node: NodeOutcome) -> tuple[int, float]:
    """Bytes and seconds of the node's filesystem (tar) sessions."""
    steps: list[dict[str, Any]] = [
        s for s in node.steps if str(s.get("name", "")).startswith("extract ")
    ]
    return (
        sum(int(s.get("bytes") or 0) for s in steps),
        sum(float(s.get("seconds") or 0.0) for s in steps),
    )


def run_one(nodes: int, data: int, size: int, rate: str, key: bool,
            images: str | None, image: bool = False) -> LabCloneReport:
    workdir = Path(tempfile.mkdtemp(prefix="ka-clone-bench-", dir=images)) if images else None
    options = LabCloneOptions(
        nodes=nodes, rate=rate, size=size, data_bytes=data, small_files=5000, timeout=1800.0,
        key=key, workdir=workdir, image=image,
    )
    tag = f"{nodes} node(s){', image' if image else ''}"
    return lab_clone(options, on_step=lambda m: print(f"  [{tag}] {m}", flush=True))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="1GiB", help="file data in the golden tree (default 1GiB)")
    p.add_argument("--nodes", default="1,4", help="comma-separated node counts (default 1,4)")
    p.add_argument("--rate", default="1gbit", help="link rate (default 1gbit)")
    p.add_argument("--no-key", dest="key", action="store_false",
                   help="open sessions (no session key, so no payload encryption)")
    p.add_argument("--images", metavar="DIR",
                   help="put the disk images under DIR (e.g. /dev/shm, to take the host's "
                        "disk out of the measure); default /var/tmp")
    p.add_argument("--image", action="store_true",
                   help="also deploy each N from an image, and compare with the live clone")
    args = p.parse_args(argv)
    data = (
        int(float(args.data.lower().removesuffix("gib")) * GiB)
        if args.data.lower().endswith("gib")
        else int(args.data.lower().removesuffix("mib")) * MiB
    )
    # / gets about 3/4 of the data, /var a quarter; the disk leaves room for both.
    size = max(1 * GiB, data * 2 + 512 * MiB)
    link = (parse_rate(args.rate) or 0) / 8 * PAYLOAD_SHARE
    totals: dict[int, float] = {}
    from_image: dict[int, LabCloneReport] = {}
    failed = False
    runs = [(int(x), mode) for x in args.nodes.split(",")
            for mode in ((False, True) if args.image else (False,))]
    for n, image in runs:
        print(f"lab clone of {data / GiB:.2f} GiB of files to {n} node(s) at {args.rate}"
              + (", from an image" if image else ""), flush=True)
        report = run_one(n, data, size, args.rate, args.key, args.images, image)
        print(summary_table(report))
        failed = failed or not report.ok
        if image:
            from_image[n] = report
        else:
            totals[n] = report.clone_seconds
        print(
            f"\nN={n}: clone {report.clone_seconds:.1f} s (golden disk build and "
            f"verification excluded; whole run {report.seconds:.1f} s)"
        )
        print(
            f"  {'node':<7}" + "".join(f"{ph:>18}" for ph in PHASES) + f"{'fs MB/s':>10}"
            f"{'of link':>9}"
        )
        for node in report.nodes:
            b = breakdown(node)
            moved, secs = filesystem_rate(node)
            mbs = moved / secs / 1e6 if secs else 0.0
            share = f"{mbs * 1e6 / link * 100:.0f} %" if link and secs else "-"
            print(
                f"  {node.node:<7}"
                + "".join(f"{b[ph]:>16.1f} s" for ph in PHASES)
                + f"{mbs:>10.1f}{share:>9}"
            )
        print(flush=True)
    if 1 in totals and 4 in totals:
        print(f"T(4)/T(1) = {totals[4]:.1f} s / {totals[1]:.1f} s = {totals[4] / totals[1]:.3f}")
    for n, report in from_image.items():
        assert report.capture is not None
        seconds, stored, raw = report.capture
        live = totals.get(n)
        vs = f", live clone {live:.1f} s: image / live = {report.clone_seconds / live:.3f}" \
            if live else ""
        print(f"image, N={n}: capture {seconds:.1f} s ({raw / seconds / 1e6:.0f} MB/s), "
              f"image {stored / MiB:.0f} MiB for {raw / MiB:.0f} MiB of streams "
              f"({stored / raw:.0%}); deploy {report.clone_seconds:.1f} s{vs}")
    if link:
        print(f"link payload rate at {args.rate}: {link / 1e6:.1f} MB/s")
    print(signing_cost(data))
    return 1 if failed else 0


def signing_cost(data: int) -> str:
    """What the golden identity costs: one Ed25519 signature per stream (the sender) and one
    verification per stream and node, whatever the stream's size."""
    import os
    import time

    from ka.transport import identity

    private = os.urandom(32)
    public = identity.public_key(private)
    rounds = 500
    t0 = time.perf_counter()
    sigs = [identity.sign(private, b"x" * 88) for _ in range(rounds)]
    t1 = time.perf_counter()
    assert all(identity.verify(public, b"x" * 88, s) for s in sigs)
    t2 = time.perf_counter()
    sign, verify = (t1 - t0) / rounds, (t2 - t1) / rounds
    return (f"golden identity: {sign * 1e6:.0f} us to sign a stream's end, {verify * 1e6:.0f} us "
            f"to verify it; for streams of {data / GiB:.2f} GiB that is "
            f"{(sign + verify) / (data / GiB) * 1e3:.3f} ms per GiB")


if __name__ == "__main__":
    sys.exit(main())
