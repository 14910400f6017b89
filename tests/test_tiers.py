"""The tiers of tests/conftest.py, run on a little suite of their own (pytester, in process)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

HERE = Path(__file__).parent
SUITE = """
import pytest

def test_plain():
    pass

@pytest.mark.slow
def test_slow():
    pass

@pytest.mark.root
def test_root():
    pass

@pytest.mark.browser
def test_browser():
    pass
"""


@pytest.fixture
def suite(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeconftest((HERE / "conftest.py").read_text())
    pytester.makeini("[pytest]\nmarkers =\n    root\n    lab\n    slow\n    browser\n"
                     # hypothesis sets itself up in every session: a second each.
                     "addopts = -ra --strict-markers -p no:hypothesispytest\n")
    pytester.makepyfile(test_suite=SUITE)
    return pytester


def test_the_fast_tier_leaves_the_marked_tests_out_and_says_so(suite: pytest.Pytester) -> None:
    result = suite.runpytest()
    result.assert_outcomes(passed=1, deselected=3)
    result.stdout.fnmatch_lines(["*fast tier: 3 root, lab, slow or browser tests were not run*"])
    suite.runpytest(".").assert_outcomes(passed=1, deselected=3)  # a directory named


def test_all_runs_every_tier_and_root_tests_skip_visibly_without_root(
        suite: pytest.Pytester) -> None:
    result = suite.runpytest("--all")
    if os.geteuid() == 0:
        result.assert_outcomes(passed=4)
    else:
        result.assert_outcomes(passed=3, skipped=1)
        result.stdout.fnmatch_lines(["SKIPPED*needs root*"])


def test_a_marker_expression_or_a_named_file_selects_instead(suite: pytest.Pytester) -> None:
    suite.runpytest("-m", "slow").assert_outcomes(passed=1, deselected=3)
    outcomes = suite.runpytest("test_suite.py").parseoutcomes()
    assert "deselected" not in outcomes
    assert outcomes["passed"] == (4 if os.geteuid() == 0 else 3)  # the root test skips
    suite.runpytest("test_suite.py::test_slow").assert_outcomes(passed=1)


def test_an_unknown_marker_is_an_error(suite: pytest.Pytester) -> None:
    suite.makepyfile(test_typo="import pytest\n\n@pytest.mark.sloww\ndef test_x():\n    pass\n")
    result = suite.runpytest("--all")
    assert result.ret != 0
    result.stdout.fnmatch_lines(["*'sloww' not found in `markers` configuration option*"])
