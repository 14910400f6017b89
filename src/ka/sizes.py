"""The one reader of sizes that a user writes: in a desc, and for every size option.

A size is a number and a unit: B, KiB, MiB, GiB, TiB (powers of 1024; K, M, G, T and k, m,
g, t are the same, as dd and sfdisk read them). A plain number is MiB, as the original's desc
language has it (`linux 3500`), for every option too. KB, MB, GB, TB are refused: some tools
read them as powers of 1000, others of 1024, and a disk size that is 5 % off is worse than a
question. A fraction is allowed while it gives whole bytes (1.5GiB, not 0.3B).
"""

from __future__ import annotations

import argparse
import re
from decimal import Decimal, InvalidOperation

KIB = 1024
MIB = 1024 * KIB
GIB = 1024 * MIB
TIB = 1024 * GIB

_FACTORS = {"b": 1, "k": KIB, "kib": KIB, "m": MIB, "mib": MIB, "g": GIB, "gib": GIB,
            "t": TIB, "tib": TIB}
_AMBIGUOUS = {"kb": "KiB", "mb": "MiB", "gb": "GiB", "tb": "TiB"}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$")
UNITS_HELP = "a number and a unit: B, KiB, MiB, GiB, TiB (or K, M, G, T); a plain number is MiB"


class SizeError(ValueError):
    """Not a size; the message says why and how to write it."""


def parse_size(text: str) -> int:
    """Bytes of a size written as `text` (see the module's rules). Raises SizeError."""
    m = _SIZE.match(text)
    if not m:
        raise SizeError(f"not a size: {text!r} ({UNITS_HELP}, e.g. 64MiB)")
    number, unit = m.group(1), m.group(2).lower()
    if unit in _AMBIGUOUS:
        raise SizeError(f"{text!r}: {m.group(2)} may mean powers of 1000 or of 1024; write "
                        f"{number}{_AMBIGUOUS[unit]} (powers of 1024) or the size in bytes "
                        f"with B")
    factor = MIB if unit == "" else _FACTORS.get(unit)
    if factor is None:
        raise SizeError(f"{text!r}: unknown unit {m.group(2)!r} ({UNITS_HELP})")
    try:
        amount = Decimal(number) * factor
    except InvalidOperation as e:  # pragma: no cover - the pattern admits only decimals
        raise SizeError(f"not a size: {text!r}") from e
    if amount != amount.to_integral_value():
        raise SizeError(f"{text!r} is not a whole number of bytes")
    return int(amount)


def format_size(n: int) -> str:
    """The shortest exact way to write `n` bytes with the largest unit that divides it."""
    for unit, factor in (("TiB", TIB), ("GiB", GIB), ("MiB", MIB), ("KiB", KIB)):
        if n and n % factor == 0:
            return f"{n // factor}{unit}"
    return f"{n}B"


def size_argument(text: str) -> int:
    """`type=` of every size option: argparse shows the reason on refusal."""
    try:
        return parse_size(text)
    except SizeError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
