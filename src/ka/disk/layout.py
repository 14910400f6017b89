"""The desc data model: `Size`, `PartitionSpec` (one desc line) and `Layout` (a whole disk).

`to_desc()` writes the canonical desc text; parsing it back gives an equal value.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Literal

from ka import sizes

# The disk layer's units, re-exported: they are ka.sizes'.
from ka.sizes import GIB as GIB
from ka.sizes import KIB as KIB
from ka.sizes import MIB as MIB
from ka.sizes import TIB as TIB
from ka.sizes import format_size

TableLabel = Literal["gpt", "dos"]
Kind = Literal["primary", "extended", "logical"]

_PERCENT_RE = re.compile(r"^(\d+(?:\.\d+)?)%$")


@dataclass(frozen=True)
class Size:
    """A partition size: exact bytes, a percentage of the disk (in hundredths), or fill."""

    kind: Literal["bytes", "percent", "fill"]
    value: int = 0

    @classmethod
    def of_bytes(cls, n: int) -> Size:
        return cls("bytes", n)

    @classmethod
    def mib(cls, n: int) -> Size:
        return cls("bytes", n * MIB)

    @classmethod
    def fill(cls) -> Size:
        return cls("fill")

    @classmethod
    def percent(cls, hundredths: int) -> Size:
        return cls("percent", hundredths)

    def to_desc(self) -> str:
        if self.kind == "fill":
            return "fill"
        if self.kind == "percent":
            whole, frac = divmod(self.value, 100)
            return f"{whole}%" if frac == 0 else f"{whole}.{frac:02d}".rstrip("0") + "%"
        return format_size(self.value)


def parse_size(token: str) -> Size:
    """Parse a desc size: fill, a percentage of the disk, or a size as `ka.sizes` reads it
    (a plain number is MiB, as in the original). Raises ValueError."""
    if token.lower() == "fill":
        return Size.fill()
    m = _PERCENT_RE.match(token)
    if m:
        try:
            hundredths = Decimal(m.group(1)) * 100
        except InvalidOperation as e:
            raise ValueError(token) from e
        if hundredths != hundredths.to_integral_value() or not 0 < hundredths <= 10000:
            raise ValueError(token)
        return Size.percent(int(hundredths))
    if token != token.strip():
        raise ValueError(token)
    n = sizes.parse_size(token)
    if n <= 0:
        raise ValueError(token)
    return Size.of_bytes(n)


@dataclass(frozen=True)
class PartitionSpec:
    """One desc line. `type` is the canonical type token (linux, swap, esp, ..., type7, a GUID)."""

    type: str
    size: Size
    kind: Kind = "primary"
    fs: str | None = None
    mountpoint: str | None = None
    label: str | None = None
    options: str | None = None
    name: str | None = None
    uuid: str | None = None
    boot: bool = False
    root: bool = False
    line: int = field(default=0, compare=False, repr=False)
    column: int = field(default=0, compare=False, repr=False)  # of the size, for misfit errors

    def __post_init__(self) -> None:
        # Normalised here so that parse(to_desc(x)) == x whatever way a layout was built.
        if self.type == "swap" and self.fs is None:
            object.__setattr__(self, "fs", "swap")
        if self.mountpoint == "/":
            object.__setattr__(self, "root", True)

    def to_desc(self) -> str:
        words = ["logical"] if self.kind == "logical" else []
        words += [self.type, self.size.to_desc()]
        if self.fs and not (self.type == "swap" and self.fs == "swap"):
            words.append(f"fs={self.fs}")
        for key, value in (
            ("mount", self.mountpoint),
            ("label", self.label),
            ("name", self.name),
            ("options", self.options),
            ("uuid", self.uuid),
        ):
            if value is not None:
                words.append(
                    f'{key}="{value}"' if re.search(r"[\s#=]", value) else f"{key}={value}"
                )
        if self.boot:
            words.append("boot")
        if self.root and self.mountpoint != "/":
            words.append("root")
        return " ".join(words)


@dataclass(frozen=True)
class Layout:
    """A whole disk as a desc: the label type and the partitions in desc order."""

    label: TableLabel
    partitions: tuple[PartitionSpec, ...]
    source: str = field(default="", compare=False, repr=False)  # the desc file it came from

    def to_desc(self) -> str:
        lines = [f"label {self.label}"] + [p.to_desc() for p in self.partitions]
        return "\n".join(lines) + "\n"

    def numbered(self) -> list[tuple[int, PartitionSpec]]:
        """Partition numbers as the table will have them (MBR logicals start at 5)."""
        out: list[tuple[int, PartitionSpec]] = []
        primary, logical = 0, 4
        for spec in self.partitions:
            if spec.kind == "logical":
                logical += 1
                out.append((logical, spec))
            else:
                primary += 1
                out.append((primary, spec))
        return out
