import pytest

from ka.errors import CommandError, ToolMissingError
from ka.run import require, run


def test_run_captures_output_with_fixed_locale() -> None:
    result = run(["sh", "-c", 'printf "%s" "$LC_ALL"'])
    assert result.stdout == "C"
    assert result.returncode == 0


def test_failure_shows_command_status_and_stderr() -> None:
    with pytest.raises(CommandError) as info:
        run(["sh", "-c", "echo boom >&2; exit 3"])
    err = info.value
    assert err.returncode == 3
    assert "boom" in str(err)
    assert "sh -c" in str(err)


def test_missing_tool_names_package() -> None:
    with pytest.raises(ToolMissingError) as info:
        require("definitely-not-a-ka-tool")
    assert info.value.tool == "definitely-not-a-ka-tool"


def test_stdin_is_devnull_by_default() -> None:
    assert run(["cat"]).stdout == ""
