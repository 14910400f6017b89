"""Session keys: the one reader of key files, the one `--key-file` option, and `ka keygen`.

Every command that takes a key (`ka send`, `receive`, `clone`, `install`, `console`,
`bootenv build`, the lab) reads it here, so one rule holds everywhere. A key file holds
either

* hex digits (at least 64, an even number, one trailing newline allowed): the key is the
  bytes they spell; this is what `ka keygen` writes, or
* at least 32 bytes of binary key material, used as they are (e.g. `head -c 32
  /dev/urandom`).

Anything else is refused: an empty file (it once opened a node to anyone), fewer than 32
bytes, or readable text that is not hex: a word or a passphrase is found by guessing
offline (a listener answers anyone with a proof under the key), and ka does not stretch
passphrases. `KA_KEY_FILE` is the default of `--key-file` for every command.
"""

from __future__ import annotations

import argparse
import os
import secrets
import string
import sys
import tempfile
from pathlib import Path

from ka.errors import UsageError

KEY_ENV = "KA_KEY_FILE"
KEY_BYTES = 32  # the least key material ka accepts, and what `ka keygen` makes
KEYGEN_HINT = "make a key with `ka keygen FILE` and give that file to every machine"
_HEX = frozenset(string.hexdigits.encode())


def parse_key(data: bytes, where: str = "the key") -> bytes:
    """The key a key file's bytes hold (see the module's docstring); UsageError otherwise."""
    text = data[:-1] if data.endswith(b"\n") else data
    text = text[:-1] if text.endswith(b"\r") else text
    if not text.strip():
        raise UsageError(f"{where} is empty", hint=KEYGEN_HINT)
    if text and set(text) <= _HEX and len(text) % 2 == 0:
        if len(text) < 2 * KEY_BYTES:
            raise UsageError(f"{where} holds {len(text) // 2} bytes of hex key, fewer than "
                             f"{KEY_BYTES}", hint=KEYGEN_HINT)
        return bytes.fromhex(text.decode())
    if _is_text(text):
        raise UsageError(f"{where} holds a word or a passphrase, not a key: it could be "
                         "guessed offline", hint=KEYGEN_HINT)
    check_key(data, where)
    return data


def _is_text(data: bytes) -> bool:
    try:
        decoded = data.decode()
    except UnicodeDecodeError:
        return False
    return all(c.isprintable() or c in "\t\r\n" for c in decoded)


def check_key(key: bytes | None, where: str = "the session key") -> None:
    """Refuse key material too short to resist guessing (None: an open session, allowed)."""
    if key is not None and len(key) < KEY_BYTES:
        raise UsageError(f"{where} has {len(key)} bytes; ka needs at least {KEY_BYTES} "
                         "random bytes", hint=KEYGEN_HINT)


def read_key_file(path: str) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise UsageError(f"cannot read the key file {path}: {e.strerror}") from e
    return parse_key(data, f"the key file {path}")


def key_file_path(given: str | None) -> str | None:
    """The key file a command uses: `--key-file`, else $KA_KEY_FILE; None when neither."""
    return given or os.environ.get(KEY_ENV) or None


def key_from_args(args: argparse.Namespace) -> bytes | None:
    """The key of `--key-file` (or $KA_KEY_FILE), None when neither is given."""
    path = key_file_path(getattr(args, "key_file", None))
    return read_key_file(path) if path else None


def add_key_option(parser: argparse.ArgumentParser, what: str = "") -> None:
    """`--key-file`, declared once for every command. The default is read when the command
    runs (key_from_args), not when the parser is built."""
    parser.add_argument("--key-file", metavar="FILE",
                        help=f"session key file (default: ${KEY_ENV}); make one with "
                             f"`ka keygen`{what}")


# --- the golden identity (Ed25519) -----------------------------------------------------------

IDENTITY_ENV = "KA_IDENTITY"
GOLDEN_KEY_ENV = "KA_GOLDEN_KEY"
IDENTITY_HINT = "make one with `ka keygen --identity DIR` on the golden node"


def read_identity(path: str) -> bytes:
    """The golden's private key: DIR/golden.key of `ka keygen --identity DIR`, or that file."""
    file = Path(path, "golden.key") if Path(path).is_dir() else Path(path)
    try:
        data = file.read_bytes()
    except OSError as e:
        raise UsageError(f"cannot read the golden identity {file}: {e.strerror}",
                         hint=IDENTITY_HINT) from e
    key = _hex32(data, f"the golden identity {file}", IDENTITY_HINT)
    if file.stat().st_mode & 0o077:
        raise UsageError(f"the golden identity {file} is readable by others",
                         hint=f"chmod 600 {file}: its private key must never leave this node")
    return key


def read_golden_key(value: str) -> bytes:
    """The pinned public key: 64 hex digits, or a file holding them (DIR/golden.pub)."""
    text = value.strip()
    if len(text) == 2 * KEY_BYTES and set(text.encode()) <= _HEX:
        return bytes.fromhex(text)
    file = Path(value, "golden.pub") if Path(value).is_dir() else Path(value)
    try:
        data = file.read_bytes()
    except OSError as e:
        raise UsageError(f"--golden-key {value}: neither 64 hex digits nor a readable file "
                         f"({e.strerror})", hint="give the golden.pub of `ka keygen "
                         "--identity DIR`, or its content") from e
    return _hex32(data, f"the golden key {file}", "give the golden.pub of `ka keygen "
                  "--identity DIR`")


def _hex32(data: bytes, where: str, hint: str) -> bytes:
    text = data.strip()
    if len(text) != 2 * KEY_BYTES or not set(text) <= _HEX:
        raise UsageError(f"{where} is not {2 * KEY_BYTES} hex digits", hint=hint)
    return bytes.fromhex(text.decode())


def add_identity_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--identity", metavar="DIR|FILE",
                        help=f"the golden identity (default: ${IDENTITY_ENV}): sign every "
                             "stream, so that nodes pinning its public key (--golden-key) "
                             "accept nothing from a key holder posing as this node")


def add_golden_key_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--golden-key", metavar="PUB|FILE",
                        help=f"the golden node's public key (default: ${GOLDEN_KEY_ENV}): "
                             "refuse every stream it did not sign")


def identity_from_args(args: argparse.Namespace) -> bytes | None:
    path = getattr(args, "identity", None) or os.environ.get(IDENTITY_ENV) or None
    return read_identity(path) if path else None


def golden_key_from_args(args: argparse.Namespace) -> bytes | None:
    value = getattr(args, "golden_key", None) or os.environ.get(GOLDEN_KEY_ENV) or None
    return read_golden_key(value) if value else None


def write_identity(directory: str, *, force: bool = False) -> tuple[Path, Path]:
    """DIR/golden.key (private, 0600) and DIR/golden.pub (public, 0644), as hex."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        NoEncryption,
        PrivateFormat,
        PublicFormat,
    )

    folder = Path(directory)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    private = Ed25519PrivateKey.generate()
    raw = private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    public = private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    key, pub = folder / "golden.key", folder / "golden.pub"
    if not force and pub.exists():
        raise UsageError(f"{pub} exists: nodes may pin it", hint="give --force to replace it")
    write_key_file(str(key), raw, force=force)
    pub.write_bytes(encode_key(public))
    pub.chmod(0o644)
    return key, pub


# --- ka keygen ------------------------------------------------------------------------------


def new_key() -> bytes:
    return secrets.token_bytes(KEY_BYTES)


def encode_key(key: bytes) -> bytes:
    return key.hex().encode() + b"\n"


def write_key_file(path: str, key: bytes, *, force: bool = False) -> None:
    """Write `key` to `path` (mode 0600) atomically: a reader sees the old file or the new
    one, never half of one; an existing file is kept unless `force`."""
    target = Path(path)
    if target.is_dir():
        raise UsageError(f"{path} is a folder; give a file name")
    if not force and (target.exists() or target.is_symlink()):
        raise UsageError(f"{path} exists: its key may be in use",
                         hint="give --force to replace it, or another file name")
    folder = target.parent
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=folder)
    except OSError as e:
        raise UsageError(f"cannot write the key file {path}: {e.strerror}") from e
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(encode_key(key))
            f.flush()
            os.fsync(f.fileno())
        if force:
            os.replace(tmp, target)
        else:
            os.link(tmp, target)  # fails if the file appeared meanwhile: never clobbered
            os.unlink(tmp)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise UsageError(f"cannot write the key file {path}: {e.strerror}") from e


KEYGEN_EPILOG = f"""\
The key is {KEY_BYTES} random bytes from the operating system, written as
{2 * KEY_BYTES} hex digits and a newline, mode 0600. FILE '-' writes it to stdout.
An existing FILE is kept unless --force. Give the same file to the golden node and every
node (--key-file or ${KEY_ENV}); see docs/security.md for what it protects.
"""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    g = sub.add_parser("keygen", help="make a session key file (32 random bytes)",
                       description="Make a random session key for --key-file.",
                       epilog=KEYGEN_EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    g.add_argument("file", metavar="FILE", nargs="?",
                   help="where to write the key ('-': stdout)")
    g.add_argument("--identity", metavar="DIR",
                   help="instead: make the golden identity, DIR/golden.key (private, never "
                        "leaves the golden node; `ka clone --identity DIR`) and DIR/golden.pub "
                        "(public: `ka install --golden-key`, `ka bootenv build --golden-key`)")
    g.add_argument("--force", action="store_true", help="replace an existing FILE")
    g.set_defaults(func=cmd_keygen)


def cmd_keygen(args: argparse.Namespace) -> int:
    if args.identity is not None:
        if args.file is not None:
            raise UsageError("give FILE or --identity DIR, not both")
        key_path, pub = write_identity(args.identity, force=args.force)
        print(f"ka: wrote the golden identity {key_path} (private, mode 0600) and {pub} "
              f"(public: pin it on the nodes with --golden-key {pub})", file=sys.stderr)
        return 0
    if args.file is None:
        raise UsageError("give the FILE to write the key to, or --identity DIR")
    key = new_key()
    if args.file == "-":
        sys.stdout.buffer.write(encode_key(key))
        sys.stdout.flush()
        return 0
    write_key_file(args.file, key, force=args.force)
    print(f"ka: wrote a new session key to {args.file} (mode 0600)", file=sys.stderr)
    return 0
