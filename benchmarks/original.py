"""The original ka-deploy (ka-d-server, ka-d-client) as a method of benchmarks/broadcast.py.

Its C sources are not part of ka: they are read from a directory holding the original's
sources and its build.sh (default: ../shared/reference/ka-deploy-src next to the repository),
built once per benchmark run into a temporary directory (`gcc -O -m32`, static: needs
gcc-multilib), unless --original DIR or $KA_ORIGINAL names a directory that already holds the
two programs.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from ka.run import run

ENV = "KA_ORIGINAL"
SOURCES = Path(__file__).resolve().parents[2] / "shared" / "reference" / "ka-deploy-src"
PROGRAMS = ("ka-d-server", "ka-d-client")
# ka-d-client's last words: "Elapsed time = 0.240 seconds, throughput = 79.629 Mbytes/second",
# timed from its first byte of data to the end of the stream.
ELAPSED = re.compile(r"Elapsed time = ([0-9.]+) seconds")


class OriginalUnavailable(Exception):
    """The original cannot be run here; the message says why and what to do."""


def programs(given: str | None, work: Path) -> Path:
    """The directory holding ka-d-server and ka-d-client: `given`, $KA_ORIGINAL, or a fresh
    build from SOURCES into `work`."""
    where = given or os.environ.get(ENV)
    if where:
        folder = Path(where)
        missing = [p for p in PROGRAMS if not os.access(folder / p, os.X_OK)]
        if missing:
            raise OriginalUnavailable(f"{folder} holds no {', '.join(missing)}")
        return folder
    build = SOURCES / "build.sh"
    if not build.is_file():
        raise OriginalUnavailable(
            f"no {build}: give --original DIR (or ${ENV}) with ka-d-server and ka-d-client"
        )
    folder = work / "original"
    result = run(["bash", str(build), str(folder)], check=False)
    if result.returncode != 0:
        raise OriginalUnavailable(
            f"building the original failed (gcc -m32 needs gcc-multilib): {result.stderr[-400:]}"
        )
    return folder


def commands(
    folder: Path, golden: str, n: int, data: Path, outputs: Sequence[str], session: str
) -> list[tuple[int, str, list[str]]]:
    """(host, role, argv) in launch order: the nodes, then the server.

    The server hands out the address its own host name resolves to (gethostbyname of
    gethostname), so it runs in a UTS namespace of its own whose host name is the golden's
    address: it resolves to itself without /etc/hosts.
    """
    client = str(folder / "ka-d-client")
    server = str(folder / "ka-d-server")
    nodes = [
        (i, f"node{i}", [client, "-s", session, "-e", f"cat > {out}"])
        for i, out in enumerate(outputs, start=1)
    ]
    serve = f'hostname {golden} && exec {server} -s {session} -n {n} -e "cat {data}"'
    return [*nodes, (0, "sender", ["unshare", "--uts", "sh", "-c", serve])]


def stream_seconds(outputs: Sequence[Sequence[str]]) -> list[float]:
    """Per node (its output lines), the stream time ka-d-client reports."""
    seconds = []
    for lines in outputs:
        found = [float(m.group(1)) for line in lines if (m := ELAPSED.search(line))]
        if found:
            seconds.append(found[-1])
    return seconds

