"""The kernel command line that tells a booting node where its ka session is.

`BootOptions` is rendered into the "boot ka" entry of every boot loader menu by `ka pxe`, and read
back from /proc/cmdline by the boot environment's /init (a shell twin of `parse_cmdline` lives in
`ka.boot.init_script`; the tests hold both to the same cases).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field

from ka.boot.init_script import STAGE2_PORT
from ka.errors import UsageError

DEFAULT_RETRIES = 5  # the original stage1's KA_MAX_RETRY
DEFAULT_CONSOLES = ("tty0", "ttyS0,115200")

# A value must survive the kernel's command-line splitting and a shell `case`, unquoted.
_SAFE_VALUE = re.compile(r"^[A-Za-z0-9._:/@%+=,~\[\]-]+$")


@dataclass(frozen=True)
class BootOptions:
    """What the "boot ka" entry passes to the boot environment's kernel.

    `session` (discovery by name) or `host` (direct contact); with neither, the node contacts the
    DHCP next-server, which is the machine that served it the boot files.
    """

    session: str | None = None
    host: str | None = None
    retries: int = DEFAULT_RETRIES
    key_url: str | None = None
    disks: tuple[str, ...] = ()  # "GOLDEN=LOCAL" maps, passed to `ka install --disk`
    consoles: tuple[str, ...] = DEFAULT_CONSOLES
    shell: bool = False  # on final failure open a console shell instead of rebooting
    stage2_port: int = STAGE2_PORT  # where stage1 looks for the stage2 session
    extra: tuple[str, ...] = field(default=())  # other kernel parameters, verbatim

    def __post_init__(self) -> None:
        if self.session is not None and self.host is not None:
            raise UsageError("give either a session name or a host, not both")
        if self.retries < 1:
            raise UsageError(f"retries must be at least 1, not {self.retries}")
        if not 0 < self.stage2_port < 65536:
            raise UsageError(f"stage2 port {self.stage2_port} is not a port number")
        for name, value in (("session", self.session), ("host", self.host),
                            ("key URL", self.key_url)):
            if value is not None:
                _check_value(name, value)
        for disk in self.disks:
            _check_value("disk map", disk)
            if "=" not in disk:
                raise UsageError(f"disk map {disk!r} is not GOLDEN=LOCAL",
                                 hint="for example sda=/dev/vda")

    def kernel_args(self) -> str:
        """The kernel parameters, in a fixed order, as one line."""
        args = [f"console={c}" for c in self.consoles]
        if self.session is not None:
            args.append(f"ka.session={self.session}")
        if self.host is not None:
            args.append(f"ka.host={self.host}")
        args.append(f"ka.retries={self.retries}")
        if self.key_url is not None:
            args.append(f"ka.key_url={self.key_url}")
        if self.disks:
            args.append(f"ka.disk={','.join(self.disks)}")
        if self.shell:
            args.append("ka.shell")
        if self.stage2_port != STAGE2_PORT:
            args.append(f"ka.stage2_port={self.stage2_port}")
        args.extend(self.extra)
        return " ".join(args)


def _check_value(name: str, value: str) -> None:
    if not value or not _SAFE_VALUE.match(value):
        raise UsageError(
            f"{name} {value!r} cannot be put on a kernel command line",
            hint="use letters, digits and . _ : / @ % + = , ~ - only (no spaces or quotes)",
        )


def parse_cmdline(text: str) -> BootOptions:
    """Read `ka.*` options from a kernel command line (the contents of /proc/cmdline).

    Unknown `ka.*` options are an error: a typo must not silently become a default.
    `ka.key-url` is accepted for `ka.key_url` (the kernel treats - and _ alike in parameters).
    """
    session = host = key_url = None
    retries = DEFAULT_RETRIES
    disks: list[str] = []
    consoles: list[str] = []
    extra: list[str] = []
    shell = False
    stage2_port = STAGE2_PORT
    for word in shlex.split(text):
        name, _, value = word.partition("=")
        key = name.replace("-", "_")
        if key == "console":
            consoles.append(value)
        elif not key.startswith("ka."):
            extra.append(word)
        elif key == "ka.session":
            session = value
        elif key == "ka.host":
            host = value
        elif key == "ka.key_url":
            key_url = value
        elif key == "ka.disk":
            disks.extend(d for d in value.split(",") if d)
        elif key == "ka.shell":
            shell = value in ("", "1", "yes")
        elif key == "ka.retries":
            if not value.isdigit():
                raise UsageError(f"ka.retries={value!r} is not a number")
            retries = int(value)
        elif key == "ka.stage2_port":
            if not value.isdigit():
                raise UsageError(f"ka.stage2_port={value!r} is not a number")
            stage2_port = int(value)
        else:
            raise UsageError(f"unknown boot option {name!r}",
                             hint="known: ka.session ka.host ka.retries ka.key_url ka.disk "
                                  "ka.shell ka.stage2_port")
    return BootOptions(session=session, host=host, retries=retries, key_url=key_url,
                       disks=tuple(disks), consoles=tuple(consoles), shell=shell,
                       stage2_port=stage2_port, extra=tuple(extra))
