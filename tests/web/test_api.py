"""The JSON API and the token, through starlette's TestClient, over a synthetic deployment."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from ka.web.access import COOKIE
from ka.web.app import create_app
from ka.web.state import Deployment

from .feed import HOSTILE, fed, stored

TOKEN = "t0ken-for-the-tests-0123456789"
OUTSIDE = ("203.0.113.7", 40000)  # TEST-NET-3: never a loopback address


def client(live: Deployment | None, logs: Path, peer: tuple[str, int] = ("127.0.0.1", 5000),
           node_log=None, base: str = "http://127.0.0.1:8080") -> TestClient:
    app = create_app(live, logs, TOKEN, node_log=node_log)
    return TestClient(app, client=peer, base_url=base)


def test_deployment_nodes_and_one_node(tmp_path: Path) -> None:
    c = client(fed(), tmp_path)
    d = c.get("/api/v1/deployment").json()
    assert d["prefix"] == "t" and d["finished"] and d["totals"]["installed"] == 2
    nodes = c.get("/api/v1/nodes").json()
    assert [n["name"] for n in nodes] == ["node01", HOSTILE, "node03"]
    first = c.get("/api/v1/nodes", params={"failures": "first"}).json()
    assert first[0]["name"] == HOSTILE
    assert [n["name"] for n in c.get("/api/v1/nodes?state=installed").json()] == [
        "node01", "node03"]
    assert c.get("/api/v1/nodes?state=bogus").status_code == 400
    one = c.get("/api/v1/nodes/10.0.0.2").json()
    assert one["name"] == HOSTILE and one["result"] == "failed"
    assert {e["event"] for e in one["events"]} >= {"joined", "start", "done"} - {"start"}
    assert c.get("/api/v1/nodes/nobody").status_code == 404


def test_the_event_stream_carries_every_change_in_order_and_ends(tmp_path: Path) -> None:
    c = client(fed(), tmp_path)
    with c.stream("GET", "/api/v1/events") as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        text = "".join(r.iter_text())
    blocks = [b for b in text.split("\n\n") if b.startswith("id:")]
    kinds = [b.split("\n")[1] for b in blocks]
    assert kinds == ["event: update", "event: end"]
    update = json.loads(blocks[0].split("\ndata: ", 1)[1])
    assert [n["name"] for n in update["nodes"]] == ["node01", HOSTILE, "node03"]
    versions = [e["version"] for e in update["events"]]
    assert versions == sorted(versions)
    per_node = [e["event"] for e in update["events"] if e["node"] == "10.0.0.1"]
    assert per_node == ["joined", "done"] * 3  # each session, in order


def test_the_event_stream_from_a_version_sends_only_what_is_newer(tmp_path: Path) -> None:
    model = fed()
    c = client(model, tmp_path)
    with c.stream("GET", f"/api/v1/events?after={model.version}") as r:
        text = "".join(r.iter_text())
    assert "event: update" not in text and "event: end" in text
    assert c.get("/api/v1/events?after=x").status_code == 400


def test_a_live_stream_ends_when_the_server_closes(tmp_path: Path) -> None:
    closing = threading.Event()
    app = create_app(fed(finished=False), tmp_path, TOKEN, closing=closing)
    c = TestClient(app, client=("127.0.0.1", 1), base_url="http://127.0.0.1")
    threading.Timer(0.6, closing.set).start()
    with c.stream("GET", "/api/v1/events") as r:
        text = "".join(r.iter_text())
    assert text.count("event: update") == 1 and "event: end" not in text


def test_the_runs_last_change_is_sent_though_the_server_stops_at_once(tmp_path: Path) -> None:
    from ka.clone.deploy import CloneResult

    from .feed import outcomes

    model, closing = fed(finished=False), threading.Event()
    c = TestClient(create_app(model, tmp_path, TOKEN, closing=closing),
                   client=("127.0.0.1", 1), base_url="http://127.0.0.1")

    def end() -> None:  # as `ka clone` ends: the result, then the server stops
        model.finish(CloneResult((), outcomes(), "/logs/t"))
        closing.set()

    threading.Timer(0.6, end).start()
    with c.stream("GET", f"/api/v1/events?after={model.version}") as r:
        text = "".join(r.iter_text())
    assert text.count("event: update") == 1 and text.endswith("event: end\ndata: {}\n\n")
    assert '"finished": true' in text


def test_history_and_one_past_deployment(tmp_path: Path) -> None:
    stored(tmp_path)
    (tmp_path / "junk").mkdir()
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken/summary.json").write_text("{not json")
    c = client(None, tmp_path)
    past = c.get("/api/v1/history").json()
    byname = {p["name"]: p for p in past}
    assert set(byname) == {"t", "broken"}
    t = byname["t"]
    assert (t["nodes"], t["installed"], t["failed"], t["seconds"]) == (3, 2, 1, 30.0)
    assert t["source"] == "golden gold" and t["mb_per_s"] == 10.0
    assert "unreadable" in byname["broken"]["error"]
    one = c.get("/api/v1/history/t").json()
    assert [n["name"] for n in one["nodes"]] == ["node01", HOSTILE, "node03"]
    assert one["nodes"][1]["report"]["steps"][1]["detail"] == "disk too small"
    for bad in ("../etc", "t/../../etc", "nope", "%2e%2e"):
        assert c.get(f"/api/v1/history/{bad}").status_code == 404, bad
    assert c.get("/api/v1/deployment").status_code == 404  # `ka web`: history alone


def test_history_of_a_served_run(tmp_path: Path) -> None:
    d = tmp_path / "s"
    wave = d / "wave-1"
    wave.parent.mkdir()
    stored(d)
    (d / "t").rename(wave)
    (d / "serve.json").write_text(json.dumps({
        "image": "img", "installed": 2, "failed_attempts": 1, "ok": True,
        "interrupted": False, "nodes": [{"node": "node01"}, {"node": "node03"}]}))
    c = client(None, tmp_path)
    (entry,) = c.get("/api/v1/history").json()
    assert entry["kind"] == "serve" and entry["source"] == "image img"
    assert [w["name"] for w in entry["waves"]] == ["s/wave-1"]
    assert c.get("/api/v1/history/s/wave-1").json()["installed"] == 2


def test_node_log_through_the_golden_node(tmp_path: Path) -> None:
    asked = []

    def node_log(address: str) -> tuple[str, list[str]]:
        asked.append(address)
        return "partition", ["[ 0.1s] receive plan: ok", HOSTILE]

    c = client(fed(), tmp_path, node_log=node_log)
    log = c.get("/api/v1/nodes/10.0.0.2/log").json()
    assert log == {"node": "10.0.0.2", "step": "partition",
                   "lines": ["[ 0.1s] receive plan: ok", HOSTILE], "error": None}
    assert asked == ["10.0.0.2"]
    assert client(fed(), tmp_path).get("/api/v1/nodes/10.0.0.2/log").status_code == 501


# --- access, from the attacker's side -----------------------------------------------------

PATHS = ("/", "/history", "/deployments/t", "/static/live.js", "/api/v1/deployment",
         "/api/v1/nodes", "/api/v1/nodes/10.0.0.1", "/api/v1/nodes/10.0.0.1/log",
         "/api/v1/events", "/api/v1/history", "/api/v1/history/t")


@pytest.mark.parametrize("path", PATHS)
def test_a_remote_request_without_the_token_is_refused(tmp_path: Path, path: str) -> None:
    stored(tmp_path)
    c = client(fed(), tmp_path, peer=OUTSIDE, base="http://192.0.2.1:8080")
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Cookie": f"{COOKIE}=wrong"},
                    {"Authorization": f"Basic {TOKEN}"}):
        r = c.get(path, headers=headers)
        assert r.status_code == 401, (path, headers)
        assert TOKEN not in r.text and "node01" not in r.text
    assert c.get(path, params={"token": "wrong"}).status_code == 401


def test_a_remote_request_with_the_token(tmp_path: Path) -> None:
    stored(tmp_path)
    c = client(fed(), tmp_path, peer=OUTSIDE, base="http://192.0.2.1:8080")
    assert c.get("/api/v1/nodes", headers={"Authorization": f"Bearer {TOKEN}"}).status_code \
        == 200
    first = c.get("/", params={"token": TOKEN})
    assert first.status_code == 200
    cookie = first.headers["set-cookie"]
    assert f"{COOKIE}={TOKEN}" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    # The cookie of the first visit lets the page's own requests through.
    assert c.get("/api/v1/history").status_code == 200
    c.cookies.clear()
    assert c.get("/api/v1/history").status_code == 401


def test_loopback_is_trusted_only_under_a_loopback_host_name(tmp_path: Path) -> None:
    for base in ("http://127.0.0.1:8080", "http://localhost:8080", "http://[::1]:8080"):
        assert client(fed(), tmp_path, base=base).get("/api/v1/nodes").status_code == 200
    # A page elsewhere whose name now points at 127.0.0.1 (DNS rebinding).
    rebound = client(fed(), tmp_path, base="http://evil.example:8080")
    assert rebound.get("/api/v1/nodes").status_code == 401
    ipv6 = client(fed(), tmp_path, peer=("::1", 1), base="http://[::1]:8080")
    assert ipv6.get("/api/v1/nodes").status_code == 200


def test_read_only_and_guarded_headers(tmp_path: Path) -> None:
    c = client(fed(), tmp_path)
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        assert c.request(method, "/api/v1/nodes").status_code == 405
    r = c.get("/")
    assert "script-src 'self'" in r.headers["content-security-policy"]
    assert r.headers["referrer-policy"] == "no-referrer"
    assert r.headers["x-content-type-options"] == "nosniff"


def test_a_node_log_followed_from_its_status_service(tmp_path: Path) -> None:
    from ka.clone.status import StatusService
    from ka.web.nodelog import follow_log

    key = b"k" * 32
    service = StatusService("node01", key, port=0, bind="127.0.0.1")
    service.step("extract /")
    service.log("[    0.1s] receive plan: ok")
    service.log(HOSTILE)
    asked: list[str] = []

    def follow(address: str, put, stopped) -> None:  # type: ignore[no-untyped-def]
        asked.append(address)
        follow_log("127.0.0.1", service.port, key, put, stopped)

    def later() -> None:  # once the stream is open: what comes after the backlog
        time.sleep(0.5)
        service.log("[    2.0s] extract /: ok")
        time.sleep(0.5)
        service.close()

    c = TestClient(create_app(fed(finished=False), tmp_path, TOKEN, follow_log=follow),
                   client=("127.0.0.1", 5000), base_url="http://127.0.0.1:8080")
    writer = threading.Thread(target=later)
    writer.start()
    try:
        with c.stream("GET", "/api/v1/nodes/10.0.0.1/log/follow") as r:
            assert r.status_code == 200
            text = "".join(r.iter_text())
    finally:
        writer.join()
    assert asked == ["10.0.0.1"]
    events = [(b.split("\n")[0], json.loads(b.split("\ndata: ", 1)[1]))
              for b in text.split("\n\n") if b.startswith("event:")]
    assert [kind for kind, _ in events] == ["event: step"] + ["event: line"] * 3 + ["event: end"]
    assert [d["line"] for _, d in events[1:4]] == [
        "[    0.1s] receive plan: ok", HOSTILE, "[    2.0s] extract /: ok"]
    assert "goodbye" in events[-1][1]["reason"]
    assert c.get("/api/v1/nodes/nobody/log/follow").status_code == 404
    without = client(fed(finished=False), tmp_path)
    assert without.get("/api/v1/nodes/10.0.0.1/log/follow").status_code == 501


def test_a_node_log_that_cannot_be_followed_says_why(tmp_path: Path) -> None:
    from ka.web.nodelog import follow_log

    with socket.socket() as s:  # a port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    app = create_app(fed(finished=False), tmp_path, TOKEN, follow_log=lambda _a, put, stopped:
                     follow_log("127.0.0.1", port, None, put, stopped))
    c = TestClient(app, client=("127.0.0.1", 5000), base_url="http://127.0.0.1:8080")
    with c.stream("GET", "/api/v1/nodes/10.0.0.1/log/follow") as r:
        text = "".join(r.iter_text())
    assert "event: end" in text and "cannot reach the status service" in text
