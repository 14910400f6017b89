"""Debian's chromium, headless, through its chromedriver, and what the browser tests share.

Nothing is downloaded: selenium is pointed at /usr/bin/chromium and /usr/bin/chromedriver
(skipped, visibly, when they are missing; required as root or in CI, where scripts/setup.sh
installs them), and the browser talks only to a dashboard on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from needs import need

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


@contextlib.contextmanager
def chromium(profile: Path) -> Iterator[Any]:
    need(CHROMIUM, "chromium")
    need(CHROMEDRIVER, "chromium-driver")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    os.environ["SE_AVOID_STATS"] = "true"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--disable-extensions",
                "--disable-default-apps", "--no-first-run", "--disable-dev-shm-usage",
                "--disable-gpu", "--window-size=1400,1000", f"--user-data-dir={profile}"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def wait_for(what: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = what()
        if got:
            return got
        if time.monotonic() >= deadline:
            raise AssertionError(f"not shown within {timeout} s")
        time.sleep(0.1)


def texts(driver: Any, css: str) -> list[str]:
    return [e.get_attribute("textContent") for e in driver.find_elements("css selector", css)]


def no_alert(driver: Any) -> bool:
    from selenium.common.exceptions import NoAlertPresentException

    try:
        _ = driver.switch_to.alert  # raises when there is none
    except NoAlertPresentException:
        return True
    return False
