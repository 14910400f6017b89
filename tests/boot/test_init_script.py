"""The boot environment's shell code, run with busybox sh and stand-ins for ka and reboot."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from ka.boot import init_script
from ka.boot.cmdline import BootOptions, parse_cmdline
from needs import need

BUSYBOX = shutil.which("busybox") or "busybox"


@pytest.fixture(autouse=True)
def busybox() -> None:
    need("busybox", "busybox-static")


@pytest.fixture
def boot_sh(tmp_path: os.PathLike[str]) -> str:
    path = os.path.join(tmp_path, "boot.sh")
    with open(path, "w") as f:
        f.write(init_script.BOOT_SH)
    return path


def isolated() -> list[str]:
    """A prefix that runs a command in new network and PID namespaces when we are root.

    busybox sh runs its own applets (ip, reboot) before anything in PATH, so a stand-in in
    PATH is not enough: in these namespaces a mistake cannot touch this machine's network, and
    reboot(2) only ends the namespace. Without root those calls fail with EPERM anyway; as
    root without `unshare` the test fails rather than run against this machine.
    """
    if os.geteuid() != 0:
        return []
    return [need("unshare", "util-linux"), "--net", "--pid", "--fork"]


def sh(script: str, *args: str, env: dict[str, str] | None = None,
       cwd: str | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {"PATH": os.environ["PATH"], **(env or {})}
    return subprocess.run([*isolated(), BUSYBOX, "sh", "-c", script, "sh", *args],
                          capture_output=True, text=True, env=full_env, cwd=cwd, timeout=30,
                          check=False)


@pytest.mark.parametrize("text", [init_script.INIT, init_script.BOOT_SH,
                                  init_script.UDHCPC_SCRIPT])
def test_scripts_parse(text: str, tmp_path: os.PathLike[str]) -> None:
    path = os.path.join(tmp_path, "script")
    with open(path, "w") as f:
        f.write(text)
    for shell in ([BUSYBOX, "sh"], ["sh"]):
        result = subprocess.run([*shell, "-n", path], capture_output=True, text=True, check=False)
        assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    "boot",
    [
        BootOptions(),
        BootOptions(session="lab1", retries=2),
        BootOptions(host="10.0.0.1", key_url="http://10.0.0.1/k", disks=("sda=/dev/vda",),
                    shell=True),
        BootOptions(session="lab2", stage2_port=31000),
    ],
)
def test_shell_reads_the_command_line_like_python(boot_sh: str, boot: BootOptions) -> None:
    line = f"BOOT_IMAGE=/ka/vmlinuz initrd=initrd.img {boot.kernel_args()} quiet"
    result = sh('. "$1"; ka_parse_cmdline "$2"; '
                'echo "$KA_SESSION|$KA_HOST|$KA_RETRIES|$KA_KEY_URL|$KA_DISKS|$KA_SHELL|'
                '$KA_STAGE2_PORT"',
                boot_sh, line)
    parsed = parse_cmdline(line)
    expected = "|".join([parsed.session or "", parsed.host or "", str(parsed.retries),
                         parsed.key_url or "", ",".join(parsed.disks),
                         "1" if parsed.shell else "0", str(parsed.stage2_port)])
    assert result.stdout.strip() == expected


def test_shell_warns_on_unknown_option_and_bad_retries(boot_sh: str) -> None:
    result = sh('. "$1"; ka_parse_cmdline "ka.sesion=x ka.retries=abc *"; echo "$KA_RETRIES"',
                boot_sh, cwd=os.path.dirname(boot_sh))
    assert result.stdout.splitlines() == [
        "ka: warning: unknown boot option ka.sesion=x (ignored)",
        "ka: warning: ka.retries=abc is not a positive number, using 5",
        "5",
    ]


def test_install_arguments(boot_sh: str) -> None:
    result = sh('. "$1"; KA_HOST=; KA_NEXT_SERVER=10.0.0.1; KA_NAME=52:54:00:00:00:01; '
                'KA_KEY_FILE=/etc/ka/key; KA_DISKS=sda=/dev/vda,sdb=/dev/vdb; ka_install_args',
                boot_sh)
    assert result.stdout.split() == [
        "install", "--host", "10.0.0.1", "--key-file", "/etc/ka/key",
        "--name", "52:54:00:00:00:01", "--find-timeout", "120",
        "--disk", "sda=/dev/vda", "--disk", "sdb=/dev/vdb",
    ]
    result = sh('. "$1"; KA_SESSION=lab1; KA_HOST=; ka_install_args', boot_sh)
    assert result.stdout.split() == ["install", "--session-prefix", "lab1",
                                     "--find-timeout", "120"]


def test_install_arguments_pin_the_golden_identity_baked_in(boot_sh: str,
                                                             tmp_path: os.PathLike[str]) -> None:
    pub = os.path.join(tmp_path, "golden.pub")
    with open(pub, "w") as f:
        f.write("ab" * 32 + "\n")
    result = sh(f'. "$1"; KA_SESSION=lab1; KA_GOLDEN_KEY_FILE={pub}; ka_install_args', boot_sh)
    assert result.stdout.split() == ["install", "--session-prefix", "lab1", "--golden-key", pub,
                                     "--find-timeout", "120"]


FAKE_KA = """#!/bin/sh
# Fails with the statuses listed in $FAKE_STATUSES, one per call, then succeeds.
echo "$*" >> "$FAKE_LOG"
n=$(wc -l < "$FAKE_LOG")
status=$(echo $FAKE_STATUSES | cut -d' ' -f"$n")
exit ${status:-0}
"""


def attempts(boot_sh: str, tmp: str, statuses: str, retries: int,
             where: str = "KA_SESSION=lab1") -> tuple[subprocess.CompletedProcess[str], list[str]]:
    fake = os.path.join(tmp, "fake-ka")
    with open(fake, "w") as f:
        f.write(FAKE_KA)
    os.chmod(fake, 0o755)
    log = os.path.join(tmp, "calls")
    result = sh(f'. "$1"; {where}; KA_RETRIES={retries}; ka_run_attempts; echo "not reached"',
                boot_sh, env={"KA_COMMAND": fake, "KA_REBOOT": "echo REBOOT", "KA_RETRY_DELAY": "0",
                              "KA_GIVE_UP_DELAY": "0", "FAKE_LOG": log,
                              "FAKE_STATUSES": statuses})
    calls = open(log).read().splitlines() if os.path.exists(log) else []
    return result, calls


def test_retries_then_succeeds_and_reboots(boot_sh: str, tmp_path: os.PathLike[str]) -> None:
    result, calls = attempts(boot_sh, os.fspath(tmp_path), "10 14", retries=5)
    assert result.returncode == 0
    assert result.stdout.splitlines() == [
        "ka: install attempt 1 of 5",
        "ka: install attempt 1 of 5 failed (ka exit status 10)",
        "ka: install attempt 2 of 5",
        "ka: install attempt 2 of 5 failed (ka exit status 14)",
        "ka: install attempt 3 of 5",
        "ka: install succeeded; rebooting",
        "REBOOT",
    ]
    assert calls == ["install --session-prefix lab1 --find-timeout 120"] * 3


def test_gives_up_after_retries_with_a_clear_message(boot_sh: str,
                                                     tmp_path: os.PathLike[str]) -> None:
    result, calls = attempts(boot_sh, os.fspath(tmp_path), "10 10 10", retries=2)
    assert result.returncode == 1
    assert result.stdout.splitlines()[-3:] == [
        "ka: !!! could not install this node after 2 attempts !!!",
        "ka: rebooting in 0 seconds",
        "REBOOT",
    ]
    assert len(calls) == 2


def test_nowhere_to_go(boot_sh: str, tmp_path: os.PathLike[str]) -> None:
    result, calls = attempts(boot_sh, os.fspath(tmp_path), "", retries=3, where="KA_SESSION=")
    assert "no ka.session= or ka.host= option and no DHCP next-server" in result.stdout
    assert calls == []


def test_udhcpc_hook_configures_and_records(tmp_path: os.PathLike[str]) -> None:
    tmp = os.fspath(tmp_path)
    hook = os.path.join(tmp, "hook")
    with open(hook, "w") as f:
        f.write(init_script.UDHCPC_SCRIPT)
    os.chmod(hook, 0o755)
    # A stand-in `ip` that records its arguments, named by absolute path (busybox sh would run
    # its own `ip` applet for a bare name), and new namespaces around it all the same.
    fake_ip = os.path.join(tmp, "ip")
    with open(fake_ip, "w") as f:
        f.write(f'#!/bin/sh\necho "$*" >> {tmp}/ip.log\n')
    os.chmod(fake_ip, 0o755)
    env = {"PATH": os.environ["PATH"], "KA_IP": fake_ip, "KA_RUN": tmp, "interface": "eth0",
           "ip": "10.9.0.123", "mask": "24", "broadcast": "10.9.0.255", "router": "10.9.0.1",
           "siaddr": "10.9.0.2", "serverid": "10.9.0.3", "hostname": "node07"}
    subprocess.run([*isolated(), BUSYBOX, "sh", hook, "bound"], env=env, check=True, timeout=10)
    with open(os.path.join(tmp, "dhcp.env")) as f:
        assert f.read() == "KA_ADDRESS='10.9.0.123'\nKA_NEXT_SERVER='10.9.0.2'\nKA_NAME='node07'\n"
    with open(os.path.join(tmp, "ip.log")) as f:
        assert f.read().splitlines() == [
            "-4 addr flush dev eth0",
            "addr add 10.9.0.123/24 broadcast 10.9.0.255 dev eth0",
            "route add default via 10.9.0.1 dev eth0",
        ]


@pytest.mark.parametrize("hostname", ["x$(touch {tmp}/pwned)", "a;touch {tmp}/pwned", "a'b",
                                      "`touch {tmp}/pwned`", "two words", "x\ntouch {tmp}/pwned"])
def test_a_hostile_dhcp_host_name_is_never_run(hostname: str, tmp_path: os.PathLike[str]) -> None:
    # Whoever answers DHCP on the LAN names the node; /init sources what the hook wrote.
    tmp = os.fspath(tmp_path)
    hook = os.path.join(tmp, "hook")
    with open(hook, "w") as f:
        f.write(init_script.UDHCPC_SCRIPT)
    fake_ip = os.path.join(tmp, "ip")
    with open(fake_ip, "w") as f:
        f.write("#!/bin/sh\n")
    os.chmod(fake_ip, 0o755)
    env = {"PATH": os.environ["PATH"], "KA_IP": fake_ip, "KA_RUN": tmp, "interface": "eth0",
           "ip": "10.9.0.123", "siaddr": "10.9.0.2", "hostname": hostname.format(tmp=tmp)}
    subprocess.run([*isolated(), BUSYBOX, "sh", hook, "bound"], env=env, check=True, timeout=10)
    result = subprocess.run([BUSYBOX, "sh", "-c", f'. {tmp}/dhcp.env; echo "name=$KA_NAME"'],
                            capture_output=True, text=True, timeout=10, check=True)
    assert not os.path.exists(os.path.join(tmp, "pwned"))
    assert result.stdout == "name=\n"
