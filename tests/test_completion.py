"""Shell completion through argcomplete, driven as the shell drives it (its variables, in a
subprocess): commands, options, image names of a store, lab names, session prefixes; and
the shell code of `ka completion bash|zsh` in a real bash."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


def complete(line: str, tmp_path: Path, **env: str) -> list[str]:
    out = tmp_path / "completions"
    variables = dict(os.environ, _ARGCOMPLETE="1", _ARGCOMPLETE_IFS="\n",
                     _ARGCOMPLETE_STDOUT_FILENAME=str(out), COMP_LINE=line,
                     COMP_POINT=str(len(line)), COMP_TYPE="9", **env)
    result = subprocess.run([sys.executable, "-m", "ka"], env=variables, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return [w.strip() for w in out.read_text().split("\n") if w.strip()]


def test_commands(tmp_path: Path) -> None:
    assert complete("ka cl", tmp_path) == ["clone"]
    assert complete("ka do", tmp_path) == ["doctor"]
    assert {"send", "receive", "clone", "install", "image", "pxe", "lab", "doctor", "man",
            "completion"} <= set(complete("ka ", tmp_path))
    assert set(complete("ka image ", tmp_path)) >= {"capture", "info", "verify", "list"}


def test_options(tmp_path: Path) -> None:
    assert complete("ka clone --dry", tmp_path) == ["--dry-run"]
    assert set(complete("ka clone --s", tmp_path)) >= {"--serve", "--session-prefix",
                                                         "--store", "--stall-timeout"}
    assert set(complete("ka doctor --", tmp_path)) >= {"--golden", "--node", "--pxe", "--json"}
    assert complete("ka doctor --uefi ", tmp_path) == ["grub", "ipxe", "none"]


def test_image_names_from_the_store(tmp_path: Path) -> None:
    store = tmp_path / "store"
    for name in ("golden-a", "golden-b", "other", ".capture-under-way"):
        (store / name).mkdir(parents=True)
    (store / "not-a-directory").write_text("")
    assert complete(f"ka image verify --store {store} ", tmp_path)[-3:] == [
        "golden-a", "golden-b", "other"]
    assert complete(f"ka image info --store {store} gol", tmp_path) == ["golden-a", "golden-b"]
    assert complete(f"ka clone --store {store} --image o", tmp_path) == ["other"]
    assert complete(f"ka image info --store {tmp_path / 'absent'} x", tmp_path) == []


def test_lab_names_from_the_lab_state(tmp_path: Path) -> None:
    state = tmp_path / "labs"
    state.mkdir()
    for name in ("alpha", "beta"):
        (state / f"{name}.json").write_text("{}")
    assert complete("ka lab status --name ", tmp_path, KA_LAB_STATE_DIR=str(state)) == [
        "alpha", "beta"]
    assert complete("ka lab down --name a", tmp_path, KA_LAB_STATE_DIR=str(state)) == ["alpha"]


def test_session_prefixes_from_the_logs(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    for name in ("rack1", "rack2"):
        (logs / name).mkdir(parents=True)
    assert complete(f"ka clone --logs {logs} --session-prefix ", tmp_path) == [
        "ka", "rack1", "rack2"]
    assert "ka" in complete("ka install --session-prefix ", tmp_path)


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
def test_the_bash_code_completes_in_bash(tmp_path: Path) -> None:
    ka = Path(sys.prefix, "bin", "ka")
    if not ka.exists():
        pytest.skip("ka is not installed in this environment's bin")
    script = (
        'eval "$(ka completion bash)"\n'
        'COMP_LINE="ka doc"; COMP_POINT=${#COMP_LINE}; COMP_WORDS=(ka doc); COMP_CWORD=1\n'
        "_python_argcomplete ka doc ka\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    env = dict(os.environ, PATH=f"{ka.parent}:{os.environ.get('PATH', '/usr/bin:/bin')}")
    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["doctor"]


def test_zsh_code() -> None:
    result = subprocess.run([sys.executable, "-m", "ka", "completion", "zsh"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.startswith("#compdef ka")
