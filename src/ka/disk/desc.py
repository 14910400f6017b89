"""The desc language: one line per partition, a superset of the original ka-deploy format.

An original desc (`linux 3500`, `extended fill`, `logical swap 500`, `logical linux fill`) still
parses and means what it meant: an MBR label, sizes in MiB, `fill` for the rest. Extensions add
the label type, partition roles, sizes with units, filesystems, mount points, labels and flags.
See docs/desc.md. Parsing is pure: text in, `Layout` or `DescError` out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ka.disk.checks import Report, check_layout, spec_problems
from ka.disk.errors import DescError, DescProblem
from ka.disk.layout import Kind, Layout, PartitionSpec, TableLabel, parse_size
from ka.disk.types import EXTENDED_BYTES, FILESYSTEMS, ROLES, canonical_type

_KEYS = ("fs", "mount", "label", "name", "options", "uuid")
_SIZE_EXPECTED = (
    "a size: MiB as a plain number (3500), a number with a unit (512MiB, 20GiB, 1TiB), "
    "a percentage of the disk (25%), or fill"
)


@dataclass
class _Line:
    number: int
    text: str
    tokens: list[tuple[int, str]]  # (1-based column, token)
    original_syntax: bool = True
    # Where each part of the line starts: "kind" (the first word), "type", "size", and every
    # attribute by its key, so that a problem of the whole layout points at its column.
    columns: dict[str, int] = field(default_factory=dict)


def _tokens(text: str) -> list[tuple[int, str]]:
    out = []
    # A token may hold double-quoted parts with spaces: label="EFI System". An unclosed quote
    # runs to the end of the line and is reported by the caller.
    for m in re.finditer(r'(?:"[^"]*"?|[^\s"])+', text):
        if m.group().startswith("#"):
            break
        out.append((m.start() + 1, m.group()))
    return out


def parse_desc(text: str, filename: str = "<desc>") -> Layout:
    """Parse a desc file; raises `DescError` listing every wrong line (file:line:col)."""
    problems: list[DescProblem] = []

    def problem(line: int, col: int, found: str, expected: str, hint: str) -> None:
        problems.append(DescProblem(filename, line, col, found, expected, hint))

    label: TableLabel | None = None
    label_line = 0
    lines: list[_Line] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        toks = _tokens(raw)
        if not toks:
            continue
        if toks[0][1].lower() == "label":
            if len(toks) != 2 or toks[1][1].lower() not in ("gpt", "dos", "mbr", "msdos"):
                col, found = toks[1] if len(toks) > 1 else (len(raw) + 1, "end of line")
                problem(
                    number,
                    col,
                    found,
                    "'gpt' or 'dos' after 'label'",
                    "write `label gpt` or `label dos`",
                )
            elif label is not None:
                problem(
                    number,
                    1,
                    "label",
                    "a single `label` line",
                    f"the label was already set on line {label_line}",
                )
            elif lines:
                problem(
                    number,
                    1,
                    "label",
                    "the `label` line before the partition lines",
                    "move `label ...` to the top of the file",
                )
            else:
                label = "gpt" if toks[1][1].lower() == "gpt" else "dos"
                label_line = number
            continue
        lines.append(_Line(number, raw, toks))

    specs: list[PartitionSpec] = []
    columns: dict[int, dict[str, int]] = {}
    for ln in lines:
        spec = _parse_line(ln, problem)
        columns[ln.number] = ln.columns
        if spec is not None:
            specs.append(spec)

    if label is None:
        uses_mbr_only = any(s.kind != "primary" for s in specs)
        label = "dos" if uses_mbr_only or all(ln.original_syntax for ln in lines) else "gpt"
    if not lines and label_line == 0 and not problems:
        problem(
            1,
            1,
            "an empty file",
            "at least one partition line, e.g. `linux fill`",
            "see docs/desc.md for the syntax",
        )
    if not problems:

        def column(spec: PartitionSpec, key: str) -> int:
            cols = columns.get(spec.line, {})
            if key == "root" and "root" not in cols:
                key = "mount"  # the root given as mount=/
            return cols.get(key, cols.get("kind", 1))

        check_layout(label, specs, problem, column)
    if problems:
        raise DescError(tuple(sorted(problems, key=lambda p: (p.line, p.column))))
    return Layout(label, tuple(specs), source=filename)


def _parse_line(ln: _Line, problem: Report) -> PartitionSpec | None:
    toks = list(ln.tokens)
    ln.columns["kind"] = toks[0][0]
    kind: Kind = "primary"
    if toks[0][1].lower() == "logical":
        kind = "logical"
        toks = toks[1:]
    elif toks[0][1].lower() == "primary":
        ln.original_syntax = False
        toks = toks[1:]
    end_col = len(ln.text) + 1
    if not toks:
        problem(
            ln.number,
            end_col,
            "end of line",
            "a partition type after 'logical'",
            "e.g. `logical linux fill`",
        )
        return None
    type_col, type_tok = toks[0]
    ln.columns["type"] = type_col
    canonical = canonical_type(type_tok)
    if canonical is None:
        hint = "`linux` is a Linux filesystem, `type83` the same in MBR hex"
        m = re.fullmatch(r"type(?:0x)?([0-9a-f]{1,2})", type_tok.lower())
        if m and int(m.group(1), 16) in EXTENDED_BYTES:
            hint = "an extended partition is written `extended` (then `logical` lines inside it)"
        elif m:
            hint = "MBR type 0 means an unused entry: leave the line out"
        problem(
            ln.number,
            type_col,
            type_tok,
            "a partition type: " + ", ".join(ROLES) + ", typeXX (MBR hex) or a GPT type GUID",
            hint,
        )
        return None
    if type_tok.lower() not in ("linux", "swap", "extended") and not type_tok.lower().startswith(
        "type"
    ):
        ln.original_syntax = False
    if canonical == "extended":
        if kind == "logical":
            problem(
                ln.number,
                type_col,
                type_tok,
                "a logical partition type (not extended)",
                "an MBR has one extended partition; put logicals inside it",
            )
            return None
        kind = "extended"
    if len(toks) < 2:
        problem(
            ln.number,
            end_col,
            "end of line",
            _SIZE_EXPECTED,
            f"e.g. `{type_tok} 500` or `{type_tok} fill`",
        )
        return None
    size_col, size_tok = toks[1]
    ln.columns["size"] = size_col
    try:
        size = parse_size(size_tok)
    except ValueError:
        hint = "e.g. 3500, 512MiB, 20GiB, 25% or fill"
        if re.search(r"\d[kmgtKMGT][bB]$", size_tok):
            hint = "decimal units (MB, GB) are not accepted: write MiB, GiB or a plain MiB number"
        problem(ln.number, size_col, size_tok, _SIZE_EXPECTED, hint)
        return None
    if size.kind != "fill" and not re.fullmatch(r"\d+", size_tok):
        ln.original_syntax = False
    attrs: dict[str, str] = {}
    flags: set[str] = set()
    cols: dict[str, int] = {}
    ok = True
    for col, tok in toks[2:]:
        ln.original_syntax = False
        if tok.count('"') % 2:
            problem(
                ln.number,
                col,
                tok,
                'a closing " after the quoted value',
                'quote values that hold spaces: name="EFI System"',
            )
            ok = False
            continue
        key, value = _attribute(tok)
        if key is None:
            problem(
                ln.number,
                col,
                tok,
                "an attribute: fs=TYPE, mount=/PATH, label=L, name=N, options=O, uuid=U, "
                "boot or root",
                "filesystems: " + ", ".join(FILESYSTEMS),
            )
            ok = False
            continue
        if key in attrs or key in flags:
            problem(ln.number, col, tok, f"a single `{key}` on this line", "remove the duplicate")
            ok = False
            continue
        if key in ("boot", "root"):
            flags.add(key)
        else:
            attrs[key] = value
        cols[key] = col
    ln.columns.update(cols)
    if not ok:
        return None
    spec = PartitionSpec(
        type=canonical,
        size=size,
        kind=kind,
        fs=attrs.get("fs"),
        mountpoint=attrs.get("mount"),
        label=attrs.get("label"),
        options=attrs.get("options"),
        name=attrs.get("name"),
        uuid=attrs.get("uuid"),
        boot="boot" in flags,
        root="root" in flags,
        line=ln.number,
        column=size_col,
    )
    for key, message, hint in spec_problems(spec):
        problem(ln.number, cols.get(key, type_col), _found(spec, key, type_tok), message, hint)
        ok = False
    return spec if ok else None


def _found(spec: PartitionSpec, key: str, type_tok: str) -> str:
    value = {
        "fs": spec.fs,
        "mount": spec.mountpoint,
        "label": spec.label,
        "uuid": spec.uuid,
        "name": spec.name,
        "options": spec.options,
    }.get(key)
    return f"{key}={value}" if value is not None else type_tok


def _attribute(tok: str) -> tuple[str | None, str]:
    if "=" in tok:
        key, _, value = tok.partition("=")
        value = value.replace('"', "")
        key = {"opts": "options", "mountpoint": "mount", "type": "fs"}.get(key.lower(), key.lower())
        if key in _KEYS and value:
            return key, value
        return None, ""
    low = tok.lower()
    if low in ("boot", "root"):
        return low, ""
    if low in FILESYSTEMS:
        return "fs", low
    if tok.startswith("/"):
        return "mount", tok
    return None, ""
