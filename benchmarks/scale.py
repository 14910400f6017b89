"""The real control plane at N = 10 to 10,000 nodes, simulated links, failures at random times.

    .venv/bin/python benchmarks/scale.py                     # N = 10, 100, 1,000, 10,000
    .venv/bin/python benchmarks/scale.py --nodes 1000 --arity 1 2 4 --seed 3

The sender's Session is the real one; the nodes and their links are simulated
(ka.transport.simulation): 1 Gbit/s links, 0.2 ms a hop, 256 KiB chunks, a 64 MiB stream,
and per run one node killed, one stalled (silent), one slow (its consumer at a quarter of
the rate), one data connection reset, one more kill per 1,000 nodes, and the sender's own
link down for 1.5 s, each at a seeded random time. Printed per run: the worst time from a
failure to its eviction (detect) and to every son of it re-attached (heal), the goal being
3 s; control messages per node per second through the sender (goal: constant in N); the
sender's control-plane CPU per second of session and the Session's memory (goal: linear in
N); and the final state: live nodes complete with the right digest, failed nodes reported
with their reason, anything else. Times are simulated; the CPU is measured on this machine.
"""

from __future__ import annotations

import argparse
import sys
import time

from ka.transport.simulation import Outcome, Scenario, Simulation, random_failures

HEADER = ("| N | arity | session s | detect s | heal s | msgs/node/s | sender CPU ms/s "
          "| memory | complete | failed, reported | wrong | wall s |")


def run(nodes: int, arity: int, seed: int) -> tuple[Outcome, float]:
    # Failures fall within the time the stream takes to reach the last node: a parent's
    # link is shared by its sons, and each level of the tree starts a chunk-time later.
    depth, width = 0, 1
    while width < nodes + 1:
        depth, width = depth + 1, width * arity if arity > 1 else width + 1
    duration = (64 * 2**20 + depth * 256 * 1024) * arity / 125e6
    scenario = Scenario(nodes=nodes, arity=arity,
                        failures=random_failures(nodes, seed, max(duration, 1.0)))
    t0 = time.monotonic()
    out = Simulation(scenario).run()
    return out, time.monotonic() - t0


def row(out: Outcome, wall: float) -> str:
    s = out.scenario
    return (f"| {s.nodes:,} | {s.arity} | {out.seconds:.1f} | {max(out.detect, default=0):.1f} "
            f"| {max(out.heal, default=0):.1f} | {out.per_node_per_second:.2f} "
            f"| {1000 * out.cpu_per_second:.0f} | {out.memory / 1024:,.0f} KiB "
            f"| {out.complete:,} | {out.reported_failed} | {len(out.wrong)} | {wall:.0f} |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, nargs="+", default=[10, 100, 1000, 10000])
    ap.add_argument("--arity", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    print(HEADER)
    print("|" + "---|" * (HEADER.count("|") - 1))
    bad = 0
    for nodes in args.nodes:
        for arity in args.arity:
            out, wall = run(nodes, arity, args.seed)
            print(row(out, wall), flush=True)
            for line in out.wrong[:5]:
                print(f"  wrong: {line}", file=sys.stderr)
            bad += bool(out.wrong)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
