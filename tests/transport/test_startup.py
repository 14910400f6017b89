"""`ka receive` starts on the critical path of every session: it imports only its own side."""

from __future__ import annotations

import json
import subprocess
import sys

from ka.boot.bootenv import probe_imports

SENDER_SIDE = ("ka.transport.sender", "ka.transport.session", "ka.transport.producer")


def loaded_after(code: str) -> set[str]:
    probe = f"import sys\n{code}\nimport json; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    return set(json.loads(out))


def test_a_node_loads_neither_the_sender_nor_zstandard_before_its_stream() -> None:
    loaded = loaded_after(
        "import ka.cli, ka.transport.cli\nfrom ka.transport import receive, FileSink"
    )
    assert "ka.transport.receiver" in loaded  # the check sees what it imports
    assert not loaded & {*SENDER_SIDE, "zstandard", "rich"}


def test_the_sender_is_still_there_for_whoever_asks() -> None:
    loaded = loaded_after("from ka.transport import send\nassert callable(send)")
    assert set(SENDER_SIDE) <= loaded


def test_stage1_holds_what_a_node_imports_only_when_it_needs_it() -> None:
    files = probe_imports(sys.executable)
    assert any("/zstandard/" in f for f in files)  # the first compressed chunk
    assert any(f.endswith("ka/transport/view.py") for f in files)  # once the node runs
