"""The dashboard of a real lab clone (`ka lab clone --web`): its API over HTTP and its pages
in a real browser, during one clone of 3 nodes whose second has a disk too small and joins
under the name `<script>alert(1)</script>`.

One clone serves every test of the file (a module fixture): what happens during the run is
recorded by a reader of the event stream and an API client started the moment the dashboard
serves, and by the browser test, which runs first; once the clone is verified the lab holds
its network up while `ka web` serves the run's history on the same port, until the file's
tests are done.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from ka.lab.clone import LabCancelled, LabCloneOptions, lab_clone
from ka.lab.forward import join_netns
from ka.lab.network import subnet_for
from ka.lab.report import LabCloneReport

from .chromium import chromium, no_alert, texts, wait_for
from .feed import HOSTILE

MiB = 1024 * 1024
# 100 Mbit/s: a clone of some 15 s, time for the browser to look at a node while it runs.
OPTIONS = LabCloneOptions(nodes=3, rate="100mbit", size=640 * MiB, data_bytes=24 * MiB,
                          small_files=1500, timeout=300.0, web=0,
                          node_sizes=((2, 256 * MiB),), node_names=((2, HOSTILE),))
WAIT = 120.0  # seconds for any one thing of the run to happen
pytestmark = [pytest.mark.lab, pytest.mark.timeout(600)]


class LabRun:
    """One lab clone in a thread, and what its dashboard said while it ran."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.url: str | None = None
        self.up = threading.Event()
        self.streamed = threading.Event()
        self.observed = threading.Event()
        self.held = threading.Event()
        self.release = threading.Event()
        self.cancel = threading.Event()
        self.stream: list[dict[str, Any]] = []  # every SSE message: {"id", "event", "data"}
        self.seen: dict[str, Any] = {}  # what the API said during the run
        self.report: LabCloneReport | None = None
        self.error: BaseException | None = None
        self._threads: list[threading.Thread] = []

    @property
    def base(self) -> str:
        assert self.url is not None
        return self.url.partition("/?")[0]

    @property
    def token(self) -> str:
        assert self.url is not None
        return self.url.rpartition("token=")[2]

    def start(self) -> None:
        self._spawn(self._lab)

    def _spawn(self, target: Any) -> None:
        t = threading.Thread(target=self._guarded, args=(target,), daemon=True)
        self._threads.append(t)
        t.start()

    def _guarded(self, target: Any) -> None:
        try:
            target()
        except BaseException as e:  # noqa: BLE001 - re-raised by the tests
            self.error = self.error or e
            self.up.set()
            self.held.set()

    def _lab(self) -> None:
        options = LabCloneOptions(**{**OPTIONS.__dict__, "workdir": self.workdir})
        lab_clone(options, on_dashboard=self._serving, hold=self._hold, cancel=self.cancel)

    def _serving(self, url: str) -> None:
        self.url = url
        self._spawn(self._read_stream)
        self._spawn(self._observe)
        self.up.set()

    def _hold(self, report: LabCloneReport) -> None:
        self.report = report
        self.held.set()
        self.release.wait(WAIT * 2)

    def _read_stream(self) -> None:
        try:
            with httpx.stream("GET", self.base + "/api/v1/events",
                              timeout=httpx.Timeout(WAIT)) as r:
                self.seen["stream_type"] = r.headers["content-type"]
                message: dict[str, Any] = {}
                for line in r.iter_lines():
                    if not line:
                        if "event" in message:
                            self.stream.append(message)
                            if message["event"] == "end":
                                return
                        message = {}
                        continue
                    field, _, value = line.partition(": ")
                    if field in ("id", "event"):
                        message[field] = value
                    elif field == "data":
                        message["data"] = json.loads(value)
        finally:
            self.streamed.set()

    def _observe(self) -> None:
        """Every endpoint of the live deployment, while it runs."""
        try:
            with httpx.Client(base_url=self.base, timeout=10.0) as c:
                nodes = wait_for(lambda: _all_three(c), WAIT)
                self.seen["nodes"] = nodes
                self.seen["deployment"] = c.get("/api/v1/deployment").json()
                self.seen["node"] = {n["key"]: c.get(f"/api/v1/nodes/{n['key']}").json()
                                     for n in nodes}
                logs = {}
                for n in nodes:
                    r = c.get(f"/api/v1/nodes/{n['key']}/log")
                    logs[n["key"]] = (r.status_code, r.json())
                self.seen["logs"] = logs
                self.seen["followed"] = _follow(c, next(
                    n["key"] for n in nodes if n["name"] != HOSTILE))
                self.seen["first"] = c.get("/api/v1/nodes?failures=first").status_code
                self.seen["running"] = c.get("/api/v1/nodes?state=running").json()
                self.seen["outside"] = self._from_a_node()
        finally:
            self.observed.set()

    def _from_a_node(self) -> dict[str, int]:
        """The dashboard from node1's namespace, at the golden node's lab address: another
        host, so the token is needed."""
        pid = os.getpid()
        found = [line.split()[0] for line in subprocess.run(
            ["ip", "netns", "list"], capture_output=True, text=True, check=True
        ).stdout.splitlines() if re.match(rf"ka-t{pid}[0-9a-f]{{4}}-node1\b", line)]
        assert len(found) == 1, found
        name = found[0][len("ka-"):-len("-node1")]
        port = int(self.base.rpartition(":")[2])
        golden = f"http://{subnet_for(name)}.1:{port}"
        bearer = {"Authorization": f"Bearer {self.token}"}

        def ask() -> dict[str, int]:
            with httpx.Client(timeout=10.0) as c:
                return {
                    "none": c.get(golden + "/api/v1/nodes").status_code,
                    "wrong": c.get(golden + "/api/v1/nodes",
                                   headers={"Authorization": "Bearer " + "x" * 30}).status_code,
                    "bearer": c.get(golden + "/api/v1/nodes", headers=bearer).status_code,
                    "query": c.get(golden + f"/?token={self.token}").status_code,
                }

        # A thread that has joined node1's namespace makes the client's sockets there.
        with ThreadPoolExecutor(1, initializer=join_netns, initargs=(found[0],)) as inside:
            return inside.submit(ask).result(timeout=WAIT)

    def join(self) -> None:
        """Ends the lab (early, if the tests stopped early: a failure, Ctrl-C, SIGTERM)."""
        self.cancel.set()
        self.release.set()
        for t in self._threads:
            t.join(WAIT * 2)
        assert not any(t.is_alive() for t in self._threads)


def _follow(c: httpx.Client, key: str, lines: int = 3) -> list[dict[str, Any]]:
    """The first events of a node's followed log; leaving frees its follower."""
    got: list[dict[str, Any]] = []
    with c.stream("GET", f"/api/v1/nodes/{key}/log/follow", timeout=WAIT) as r:
        kind = ""
        for line in r.iter_lines():
            if line.startswith("event: "):
                kind = line[len("event: "):]
            elif line.startswith("data: "):
                got.append({"event": kind, **json.loads(line[len("data: "):])})
                if kind == "end" or sum(e["event"] == "line" for e in got) >= lines:
                    break
    return got


def _all_three(c: httpx.Client) -> list[dict[str, Any]] | None:
    nodes = c.get("/api/v1/nodes").json()
    return nodes if len(nodes) == 3 and all(n["address"] for n in nodes) else None


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabRun]:
    if os.geteuid() != 0:
        pytest.skip("needs root (loop devices / network namespaces / mounts)")
    base = tmp_path_factory.mktemp("lab-web")
    run = LabRun(base / "work")
    run.start()
    try:
        assert run.up.wait(WAIT * 2), "the dashboard never served"
        yield run
    finally:
        run.join()
        pid = os.getpid()
        left = [x for x in subprocess.run(["ip", "netns", "list"], capture_output=True,
                                          text=True).stdout.splitlines()
                if x.startswith(f"ka-t{pid}")]
        assert not left, f"namespaces left: {left}"
        assert not (base / "work").exists()
        if run.url is not None:
            with pytest.raises(httpx.TransportError):
                httpx.get(run.base + "/api/v1/history", timeout=3)
        shutil.rmtree(base, ignore_errors=True)


def _held(lab: LabRun) -> LabCloneReport:
    assert lab.held.wait(WAIT * 2), "the lab clone did not end"
    if lab.error is not None:
        raise lab.error
    assert lab.report is not None
    return lab.report


@pytest.mark.browser
def test_live_page_history_and_timeline_in_a_browser(lab: LabRun, tmp_path: Path) -> None:
    with chromium(tmp_path / "chromium-profile") as browser:
        assert lab.url is not None, lab.error
        browser.get(lab.url)
        assert "token" not in browser.current_url
        # A node that is to be installed, while it runs: its log, through the golden node.
        row = wait_for(lambda: next(
            (r for r in browser.find_elements("css selector", "#nodes tr")
             if HOSTILE not in r.get_attribute("textContent")), None), WAIT)
        row.click()
        wait_for(lambda: "receive plan" in texts(browser, "#log")[0], WAIT)
        assert texts(browser, "#log-status")[0].startswith("following · step:")
        first = len(texts(browser, "#log")[0].splitlines())
        # Followed: the node's next steps come into the same log, without a click.
        wait_for(lambda: len(texts(browser, "#log")[0].splitlines()) > first + 2, WAIT)
        browser.save_screenshot(str(tmp_path / "live-running.png"))

        wait_for(lambda: texts(browser, "#status") == ["finished"], WAIT)
        wait_for(lambda: sorted(texts(browser, "#nodes td.result")) == ["failed", "ok", "ok"])
        assert texts(browser, "#t-installed") == ["2"] and texts(browser, "#t-failed") == ["1"]
        names = texts(browser, "#nodes td.name")
        assert names[0] == HOSTILE and sorted(names[1:]) == ["node01", "node03"]  # failures first
        assert "too small" in texts(browser, "#nodes td.reason")[0]
        assert len(browser.find_elements("css selector", "#chain rect.failed")) == 1
        assert no_alert(browser)
        assert browser.execute_script(
            "return [...document.scripts].every(s => s.src.includes('/static/'))")
        browser.save_screenshot(str(tmp_path / "live-finished.png"))

        _held(lab)  # `ka web` serves the history now
        browser.find_element("link text", "history").click()
        prefix = lab.seen["deployment"]["prefix"]
        wait_for(lambda: texts(browser, "#deployments a") == [prefix], WAIT)
        assert "golden" in texts(browser, "#deployments tr")[0]
        browser.save_screenshot(str(tmp_path / "history.png"))
        browser.find_element("link text", prefix).click()
        wait_for(lambda: len(browser.find_elements("css selector", "#timeline rect.step")) > 6)
        assert sorted(texts(browser, "#timeline text.node-name")) == sorted(
            ["node01", HOSTILE, "node03"])
        assert "too small" in " ".join(texts(browser, "#nodes td.reason"))
        assert no_alert(browser)
        browser.save_screenshot(str(tmp_path / "deployment.png"))
    for name in ("live-running", "live-finished", "history", "deployment"):
        assert (tmp_path / f"{name}.png").stat().st_size > 10_000


def test_every_live_endpoint_during_the_run(lab: LabRun) -> None:
    assert lab.observed.wait(WAIT * 2)
    assert "nodes" in lab.seen, lab.error
    d = lab.seen["deployment"]
    assert d["live"] and d["nodes_expected"] == 3 and d["source"].startswith("golden ")
    nodes = lab.seen["nodes"]
    assert len({n["address"] for n in nodes}) == 3
    for n in nodes:
        one = lab.seen["node"][n["key"]]
        assert one["key"] == n["key"] and one["events"], one
        assert {e["event"] for e in one["events"]} >= {"joined"}
    # Each node's log, fetched by the golden node from the node's status service: one that
    # is still running answers with its steps; one that has ended already is a 502.
    logs = lab.seen["logs"]
    answered = [body for status, body in logs.values() if status == 200]
    assert answered and all("receive plan" in " ".join(b["lines"]) for b in answered), logs
    assert all(status == 502 and body["error"] for status, body in logs.values()
               if status != 200), logs
    followed = lab.seen["followed"]
    assert followed[0]["event"] == "step" and "receive plan" in followed[1]["line"], followed
    assert lab.seen["first"] == 200 and len(lab.seen["running"]) <= 3


def test_the_token_is_needed_from_another_host(lab: LabRun) -> None:
    assert lab.observed.wait(WAIT * 2)
    assert lab.seen.get("outside") == {"none": 401, "wrong": 401, "bearer": 200,
                                       "query": 200}, lab.error
    # From the machine running the lab, on loopback, nothing is needed.
    assert httpx.get(lab.base + "/api/v1/history", timeout=10).status_code == 200


def test_the_event_stream_delivers_every_nodes_steps_in_order(lab: LabRun) -> None:
    assert lab.streamed.wait(WAIT * 2)
    report = _held(lab)
    assert lab.seen["stream_type"].startswith("text/event-stream")
    kinds = [m["event"] for m in lab.stream]
    assert kinds[-1] == "end" and set(kinds[:-1]) == {"update"}
    ids = [int(m["id"]) for m in lab.stream]
    assert ids == sorted(ids)
    updates = [m["data"] for m in lab.stream if m["event"] == "update"]
    events = [e for u in updates for e in u["events"]]
    versions = [e["version"] for e in events]
    assert versions == sorted(set(versions))  # each event once, in order
    sessions = [s["name"] for s in updates[-1]["deployment"]["sessions"]]
    prefix = updates[-1]["deployment"]["prefix"]
    assert sessions[0] == f"{prefix}-plan" and sessions[-1] == f"{prefix}-done"
    final = {}
    for u in updates:
        final.update({n["key"]: n for n in u["nodes"]})
    assert sorted((n["name"], n["result"]) for n in final.values()) == [
        (HOSTILE, "failed"), ("node01", "ok"), ("node03", "ok")]
    order = {s: i for i, s in enumerate(sessions)}
    for key, n in final.items():
        # As it came: a node's rows never go back to an earlier session, and it ends
        # installed or failed.
        rows = [m for u in updates for m in u["nodes"] if m["key"] == key]
        assert [order[r["session"]] for r in rows] == sorted(order[r["session"]] for r in rows)
        assert rows[-1]["step"] == ("installed" if n["result"] == "ok" else "failed")
        mine = [e for e in events if e["node"] == key]
        # Every session the node took part in, in the order of the run, each from its join
        # to its end.
        seen = [s["session"] for s in n["sessions"]]
        assert seen == [s for s in sessions if s in seen] and seen[0] == sessions[0]
        for s in seen:
            said = [e["event"] for e in mine if e["session"] == s]
            ends = [e for e in said if e in ("done", "failed", "evicted")]
            assert said[0] == "joined" and len(ends) == 1, (n["name"], s, said)
            if n["result"] == "ok":
                assert ends == ["done"], (n["name"], s, said)
        if n["result"] == "ok":
            assert seen == sessions
            assert all(s["state"] == "done" for s in n["sessions"])
        else:
            assert "too small" in n["reason"]
    assert report.node("node2").status not in (0, None)
    assert report.node("node1").verdict is not None and report.node("node1").verdict.ok
    assert report.node("node3").verdict is not None and report.node("node3").verdict.ok


def test_the_history_of_the_run(lab: LabRun) -> None:
    _held(lab)
    with httpx.Client(base_url=lab.base, timeout=10.0) as c:
        past = c.get("/api/v1/history").json()
        assert [(p["installed"], p["failed"], p["nodes"]) for p in past] == [(2, 1, 3)]
        name = past[0]["name"]
        one = c.get(f"/api/v1/history/{name}").json()
        by_name = {n["name"]: n for n in one["nodes"]}
        assert set(by_name) == {"node01", HOSTILE, "node03"}
        assert "too small" in by_name[HOSTILE]["reason"]
        for n in ("node01", "node03"):
            steps = [s["name"] for s in by_name[n]["report"]["steps"]]
            assert steps[0] == "receive plan" and "extract /" in steps, steps
        assert c.get("/api/v1/history/../etc").status_code == 404
        # `ka web` serves the history alone: no live deployment any more.
        assert c.get("/api/v1/deployment").status_code == 404
        assert c.post("/api/v1/history").status_code == 405


def _lab_namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {x.split()[0] for x in out.splitlines() if x.startswith(f"ka-t{os.getpid()}")}


def test_cancelled_once_the_dashboard_serves_leaves_nothing(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (loop devices / network namespaces / mounts)")
    before = _lab_namespaces()  # the module's lab, held up meanwhile, if it runs
    cancel, urls = threading.Event(), []

    def serving(url: str) -> None:
        urls.append(url)
        cancel.set()

    options = LabCloneOptions(**{**OPTIONS.__dict__, "workdir": tmp_path / "work",
                                 "node_sizes": (), "node_names": ()})
    with pytest.raises(LabCancelled):
        lab_clone(options, on_dashboard=serving, cancel=cancel)
    assert len(urls) == 1
    assert _lab_namespaces() == before
    loops = subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout
    assert str(tmp_path) not in loops
    assert not (tmp_path / "work").exists()
    with pytest.raises(httpx.TransportError):
        httpx.get(urls[0].partition("/?")[0] + "/", timeout=3)
