"""CI runs what the README tells a newcomer to run, on a machine set up by scripts/setup.sh."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_the_readmes_full_test_command_after_setup() -> None:
    ci = [line.strip() for line in (ROOT / ".ci/run").read_text().splitlines()]
    runs = [line for line in ci if "pytest" in line]
    assert runs == [".venv/bin/pytest -q --all tests"]
    assert ci.index("bash scripts/setup.sh") < ci.index(runs[0])
    readme = [line.split("#")[0].strip() for line in (ROOT / "README.md").read_text().splitlines()]
    assert runs[0] in readme, "the README's full-run command is not the one .ci/run runs"
