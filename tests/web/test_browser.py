"""The pages in a real browser (Debian's chromium, headless: see chromium.py), fed with a
synthetic deployment while the page is open, so what it shows came over the event stream.
test_lab_web.py does the same during a real lab clone."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ka.clone.deploy import CloneResult
from ka.transport import Event
from ka.web.app import create_app
from ka.web.server import Dashboard
from ka.web.state import Deployment

from .chromium import chromium, no_alert, texts, wait_for
from .feed import DONE, FS, HOSTILE, PLAN, T0, ids, outcomes, session, stored

TOKEN = "a-token-of-the-browser-tests-0123"
pytestmark = pytest.mark.browser


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    with chromium(tmp_path / "chromium-profile") as driver:
        yield driver


def test_live_history_and_timeline_pages(browser: Any, tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    stored(logs)
    live = Deployment("t", 3, source="golden gold", plan_session=PLAN,
                      steps={PLAN: ("receive plan", "partition and format"),
                             FS: ("extract /", "fix-ups"), DONE: ("hand report over", "released")})
    lines = ["[    0.1s] receive plan: ok", HOSTILE]
    closing = threading.Event()
    app = create_app(live, logs, TOKEN, closing=closing,
                     node_log=lambda address: ("partition", [f"{address}: {x}" for x in lines]))
    with Dashboard(app, "127.0.0.1", 0, closing) as d:
        base = f"http://127.0.0.1:{d.port}"
        browser.get(f"{base}/?token={TOKEN}")
        wait_for(lambda: "history only" in texts(browser, "#title")[0] or
                 browser.execute_script("return document.readyState") == "complete")
        browser.execute_script("window.kaNoReload = 1")
        assert "token" not in browser.current_url  # taken out of the address bar

        session(live, PLAN, T0, names=(None, None, None))
        session(live, FS, T0 + 10, failed=2)
        live.event(FS, Event("reattached", "node03 re-attached to node01 at offset 500000",
                             node=ids(FS)[2], time=T0 + 13.2))
        wait_for(lambda: texts(browser, "#nodes td.name") == ["node01", HOSTILE, "node03"]
                 or texts(browser, "#nodes td.name") == [HOSTILE, "node01", "node03"])
        # The hostile name is text in its cell: no script ran, no element was made of it.
        assert no_alert(browser)
        assert browser.execute_script(
            "return [...document.scripts].every(s => s.src.includes('/static/'))")
        wait_for(lambda: texts(browser, "#nodes tr")[0].startswith("2"))  # failures first
        assert "consumer exited with status 2" in texts(browser, "#nodes td.reason")[0]
        # The chain: the golden node and three nodes, the failed one's links broken, and
        # the healed link from node01 past it to node03.
        wait_for(lambda: browser.find_elements("css selector", "#chain path.healed"))
        assert len(browser.find_elements("css selector", "#chain rect")) == 4
        assert len(browser.find_elements("css selector", "#chain rect.failed")) == 1
        assert len(browser.find_elements("css selector", "#chain line.broken")) == 2
        assert HOSTILE in texts(browser, "#chain rect.failed title")[0]
        browser.save_screenshot(str(tmp_path / "live-running.png"))

        session(live, DONE, T0 + 20)
        live.finish(CloneResult((), outcomes(), str(logs / "t")))
        wait_for(lambda: texts(browser, "#status") == ["finished"])
        wait_for(lambda: sorted(texts(browser, "#nodes td.result")) == ["failed", "ok", "ok"])
        assert texts(browser, "#t-installed") == ["2"] and texts(browser, "#t-failed") == ["1"]
        assert browser.execute_script("return window.kaNoReload") == 1  # updated in place

        browser.find_elements("css selector", "#nodes tr")[0].click()  # the failed node
        wait_for(lambda: HOSTILE in texts(browser, "#log")[0])
        assert texts(browser, "#detail-name") == [HOSTILE]
        assert no_alert(browser)
        browser.save_screenshot(str(tmp_path / "live-finished.png"))

        browser.find_element("link text", "history").click()
        wait_for(lambda: texts(browser, "#deployments a") == ["t"])
        assert "golden gold" in texts(browser, "#deployments tr")[0]
        browser.save_screenshot(str(tmp_path / "history.png"))
        browser.find_element("link text", "t").click()
        wait_for(lambda: len(browser.find_elements("css selector", "#timeline rect.step")) == 8)
        assert texts(browser, "#timeline text.node-name") == ["node01", HOSTILE, "node03"]
        assert HOSTILE in texts(browser, "#nodes td")
        assert "disk too small" in " ".join(texts(browser, "#nodes td.reason"))
        assert no_alert(browser)
        browser.save_screenshot(str(tmp_path / "deployment.png"))
    for name in ("live-running", "live-finished", "history", "deployment"):
        assert (tmp_path / f"{name}.png").stat().st_size > 1000


def test_a_thousand_nodes_failures_first_and_filtered(browser: Any, tmp_path: Path) -> None:
    n, failing = 1000, set(range(7, 1001, 100))  # 10 failed nodes along the chain
    live = Deployment("big", n, source="golden gold", plan_session="big-plan")
    order = [f"10.1.{i // 250}.{i % 250 + 1}:4000" for i in range(n)]
    for i, node in enumerate(order, start=1):
        live.event("big-plan", Event("joined", f"node{i:04d} joined", node=node, time=T0))
    live.event("big-plan", Event("start", "starting", data={"order": order}, time=T0 + 1))
    closing = threading.Event()
    app = create_app(live, tmp_path, TOKEN, closing=closing)
    with Dashboard(app, "127.0.0.1", 0, closing) as d:
        browser.get(f"http://127.0.0.1:{d.port}/")
        wait_for(lambda: texts(browser, "#shown") == [f"{n} of {n} node(s) shown"])
        rows = [{"node": node, "name": f"node{i:04d}", "position": i, "bytes": 1_000_000,
                 "mb_per_s": 11.0, "state": "failed" if i in failing else "active"}
                for i, node in enumerate(order, start=1)]
        live.event("big-plan", Event("progress", "produced 1.0 MB",
                                     data={"produced": 1_000_000, "nodes": rows}, time=T0 + 2))
        want = [f"node{i:04d}" for i in sorted(failing)]
        wait_for(lambda: texts(browser, "#nodes tr:nth-child(-n+10) td.name") == want)
        assert len(browser.find_elements("css selector", "#chain rect")) == n + 1
        assert len(browser.find_elements("css selector", "#chain rect.failed")) == len(failing)
        browser.save_screenshot(str(tmp_path / "thousand.png"))
        from selenium.webdriver.support.ui import Select

        Select(browser.find_element("id", "filter")).select_by_value("failed")
        wait_for(lambda: texts(browser, "#shown") == [f"{len(failing)} of {n} node(s) shown"])
        assert texts(browser, "#nodes td.name") == want
        # A square of the chain opens its node, like its row.
        browser.find_elements("css selector", "#chain rect.failed")[0].click()
        wait_for(lambda: texts(browser, "#detail-name") == [want[0]])
