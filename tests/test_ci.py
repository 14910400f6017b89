"""CI runs what the README tells a newcomer to run, on a machine set up by scripts/setup.sh."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TEST_COMMAND = "bash scripts/setup.sh && .venv/bin/pytest -q --all tests"


def _commands(path: Path) -> list[str]:
    """The lines of a script or of the README's code blocks, comments cut off."""
    return [line.split("#")[0].strip() for line in path.read_text().splitlines()]


def test_ci_runs_the_readmes_test_command_verbatim() -> None:
    readme = _commands(ROOT / "README.md")
    ci = _commands(ROOT / ".ci/run")
    assert TEST_COMMAND in readme, "the README's set-up no longer gives the test command"
    assert TEST_COMMAND in ci, ".ci/run does not run the README's test command"
    assert [line for line in ci if "pytest" in line] == [TEST_COMMAND]
