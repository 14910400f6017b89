from __future__ import annotations

import pytest

from ka.boot.cmdline import BootOptions, parse_cmdline
from ka.errors import UsageError


def test_kernel_args_fixed_order() -> None:
    boot = BootOptions(session="lab1", retries=3, key_url="http://10.0.0.1/k",
                       disks=("sda=/dev/vda", "sdb=/dev/vdb"), shell=True, extra=("quiet",))
    assert boot.kernel_args() == (
        "console=tty0 console=ttyS0,115200 ka.session=lab1 ka.retries=3 "
        "ka.key_url=http://10.0.0.1/k ka.disk=sda=/dev/vda,sdb=/dev/vdb ka.shell quiet"
    )


def test_defaults_keep_original_retry_count() -> None:
    assert BootOptions().kernel_args() == "console=tty0 console=ttyS0,115200 ka.retries=5"


@pytest.mark.parametrize(
    "boot",
    [
        BootOptions(),
        BootOptions(host="10.0.0.1", retries=9, consoles=("ttyS1,9600",)),
        BootOptions(session="x", disks=("sda=/dev/nvme0n1",), shell=True, extra=("a=b", "q")),
    ],
)
def test_parse_reads_back_what_was_rendered(boot: BootOptions) -> None:
    assert parse_cmdline(boot.kernel_args()) == boot


def test_parse_real_proc_cmdline_ignores_foreign_parameters() -> None:
    text = "BOOT_IMAGE=/ka/vmlinuz initrd=initrd.img ka.host=192.0.2.1 ka.key-url=http://h/k\n"
    boot = parse_cmdline(text)
    assert boot.host == "192.0.2.1"
    assert boot.key_url == "http://h/k"
    assert boot.retries == 5
    assert boot.extra == ("BOOT_IMAGE=/ka/vmlinuz", "initrd=initrd.img")


@pytest.mark.parametrize(
    "text, message",
    [
        ("ka.sesion=x", "unknown boot option 'ka.sesion'"),
        ("ka.retries=many", "not a number"),
        ("ka.retries=0", "at least 1"),
        ("ka.session=a ka.host=b", "not both"),
        ("ka.disk=sda", "not GOLDEN=LOCAL"),
    ],
)
def test_parse_rejects(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_cmdline(text)


def test_values_that_would_break_the_command_line_are_refused() -> None:
    with pytest.raises(UsageError, match="cannot be put on a kernel command line"):
        BootOptions(session="two words")
    with pytest.raises(UsageError, match="cannot be put on a kernel command line"):
        BootOptions(host="x;reboot")
