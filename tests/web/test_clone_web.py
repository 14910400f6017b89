"""`ka clone --web`: the dashboard lives for the run and shows what the run's sessions said.

The sessions are replaced by the synthetic feed (no network, no disk): what is tested is the
wiring of the command line, from the clone's event sink to the API and back down at the end.
"""

from __future__ import annotations

import json
import threading
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from ka import cli
from ka.clone.deploy import CloneResult

from .feed import DONE, FS, HOSTILE, PLAN, T0, outcomes, session


def test_clone_with_web(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                        capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "golden"
    (root / "etc").mkdir(parents=True)
    (tmp_path / "layout.desc").write_text("linux 100MiB fs=ext4 mount=/\n")
    token_file = tmp_path / "token"
    token_file.write_text("the-token-of-this-clone-0123456789\n")
    seen: dict[str, Any] = {}

    def fake_run_clone(plan: Any, settings: Any, on_event: Any, **_kw: Any) -> CloneResult:
        class Model:
            event = staticmethod(on_event)
        session(Model, PLAN, T0, names=(None, None, None))  # type: ignore[arg-type]
        session(Model, FS, T0 + 10)  # type: ignore[arg-type]
        session(Model, DONE, T0 + 20)  # type: ignore[arg-type]
        line = [x for x in capsys.readouterr().err.splitlines() if "dashboard at" in x]
        seen["line"] = line
        url = line[0].rpartition(" ")[2].partition("/?")[0]
        seen["url"] = url
        with urllib.request.urlopen(url + "/api/v1/nodes", timeout=5) as r:
            seen["nodes"] = json.load(r)
        seen["source"] = settings.source
        return CloneResult((), outcomes(), str(tmp_path / "logs/t"))

    monkeypatch.setattr("ka.clone.cli.run_clone", fake_run_clone)
    threads = threading.active_count()
    status = cli.main(["clone", "--nodes", "3", "--root", str(root), "--desc",
                       f"sda={tmp_path / 'layout.desc'}", "--session-prefix", "t",
                       "--logs", str(tmp_path / "logs"), "--web", "127.0.0.1:0",
                       "--web-token-file", str(token_file)])
    assert status == 1  # one node failed
    assert seen["line"][0].endswith("/?token=the-token-of-this-clone-0123456789")
    assert [n["name"] for n in seen["nodes"]] == ["node01", HOSTILE, "node03"]
    assert seen["source"].startswith("golden ")
    assert threading.active_count() <= threads  # the server's thread was joined
    with pytest.raises(OSError):
        urllib.request.urlopen(seen["url"] + "/api/v1/nodes", timeout=2)


def test_web_token_file_needs_web(tmp_path: Path) -> None:
    root = tmp_path / "golden"
    root.mkdir()
    (tmp_path / "layout.desc").write_text("linux 100MiB fs=ext4 mount=/\n")
    (tmp_path / "token").write_text("x" * 20)
    status = cli.main(["clone", "--nodes", "1", "--root", str(root), "--desc",
                       f"sda={tmp_path / 'layout.desc'}", "--logs", str(tmp_path / "logs"),
                       "--web-token-file", str(tmp_path / "token")])
    assert status == 2


def test_lab_clone_web_takes_a_port() -> None:
    parser = cli.build_parser()
    args = parser.parse_args(["lab", "clone", "--web", "8080"])
    assert args.web == 8080
    assert parser.parse_args(["lab", "clone"]).web is None
    for bad in ("0.0.0.0:8080", "65536", "http"):
        with pytest.raises(SystemExit):
            parser.parse_args(["lab", "clone", "--web", bad])
