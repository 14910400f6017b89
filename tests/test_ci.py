"""CI runs what the README tells a newcomer to run, on a machine set up by scripts/setup.sh."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEST_COMMAND = "bash scripts/setup.sh && .venv/bin/pytest -q --all tests"


def _lines(path: Path) -> list[str]:
    """Every line as written (only the line ending cut off): a match is a verbatim match."""
    return path.read_text().splitlines()


def test_ci_runs_the_readmes_test_command_verbatim() -> None:
    readme = _lines(ROOT / "README.md")
    ci = _lines(ROOT / ".ci/run")
    assert TEST_COMMAND in readme, "the README's set-up no longer gives the test command alone"
    assert TEST_COMMAND in ci, ".ci/run does not run the README's test command"
    assert [line for line in ci if "pytest" in line] == [TEST_COMMAND]
    setup = readme[readme.index("## Set-up: two commands, on a fresh Debian machine, as root"):]
    block = setup[setup.index("```") + 1:]
    commands = [line for line in block[:block.index("```")] if not line.startswith("#")]
    assert commands == ["bash scripts/lab-demo.sh", TEST_COMMAND], "two commands, as written"
