"""What the verbs share: the argument parser, errors, code pages, keys on the command line, progress bars."""

from __future__ import annotations

import argparse
import codecs
import os
import re
import sys
import time
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, NoReturn

from .. import zowe  # noqa: F401 - registers the cp1047 codec
from ..format import MAGIC

if TYPE_CHECKING:
    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]
else:
    Subparsers = argparse._SubParsersAction

#: exit statuses (IDCAMS condition codes where they fit)
OK = 0
WARNING = 4  # examine: warnings only (e.g. the data set needs recovery)
ERROR = 8  # examine: errors; repro: records rejected
FAILED = 12  # the function could not be done (IDCAMS CC 12)
USAGE = 2  # wrong arguments (the Unix convention)

DEFAULT_ENCODING = "latin-1"


class CliError(Exception):
    """A failure reported as the one line ``ksds VERB: message``, with exit status ``status``."""

    def __init__(self, message: str, status: int = FAILED) -> None:
        super().__init__(message)
        self.status = status


class UsageError(CliError):
    """Wrong arguments: reported with the parser's name (``ksds VERB``)."""

    def __init__(self, prog: str, message: str, status: int = USAGE) -> None:
        super().__init__(message, status)
        self.prog = prog


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (``ksds define: ... (see 'ksds define --help')``), no usage dump."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(self.prog, f"{message} (see '{self.prog} --help')")


def add_verb(sub: Subparsers, name: str, summary: str, description: str, examples: str) -> argparse.ArgumentParser:
    """A verb's parser, with its examples as the epilog of ``--help``."""
    parser: argparse.ArgumentParser = sub.add_parser(
        name,
        help=summary,
        description=description,
        epilog="examples:\n" + examples.strip("\n"),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    return parser


_WHOLE_NUMBER = re.compile(r"[+-]?[0-9]+")


def whole_number(prog: str, option: str, minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    """An argparse ``type`` for a whole-number option (``--lrecl``): a value that is not a whole number, or is out of
    range, is the one line ``ksds VERB: --lrecl takes ..., not '0'`` with exit status 12 (FAILED, as the verbs' other
    bad values are), never argparse's message or a Python error later on."""
    rng = f">= {minimum}" if maximum is None else f"from {minimum} to {maximum}"

    def parse(text: str) -> int:
        n = int(text) if _WHOLE_NUMBER.fullmatch(text) else None
        if n is None or n < minimum or (maximum is not None and n > maximum):
            raise UsageError(prog, f"{option} takes a whole number {rng}, not {text!r} (see '{prog} --help')", FAILED)
        return n

    return parse


def one_line(text: str) -> str:
    return " ".join(str(text).split())


# --- code pages -------------------------------------------------------------------------------------------------


def check_encoding(name: str) -> str:
    """The codec name for ``--encoding`` (cp037, cp1047, cp500, latin-1, ascii, ...), or a CliError."""
    try:
        return codecs.lookup(name).name
    except LookupError:
        raise CliError(f"unknown code page {name!r} (try cp037, cp1047, cp500, latin-1 or ascii)", USAGE) from None


def char_table(encoding: str) -> list[str]:
    """One printable character per byte value in ``encoding``; '.' for the bytes that are not printable text."""
    out = []
    for b in range(256):
        try:
            ch = bytes([b]).decode(encoding)
        except UnicodeDecodeError:
            ch = "."
        out.append(ch if len(ch) == 1 and ch.isprintable() else ".")
    return out


# --- keys on the command line ------------------------------------------------------------------------------------

_HEX_QUOTED = re.compile(r"[xX]'([0-9A-Fa-f\s]*)'")
_HEX_0X = re.compile(r"0[xX]([0-9A-Fa-f]*)")


def parse_key(text: str, encoding: str) -> bytes:
    """A key given on the command line: ``X'C1C2'`` or ``0xC1C2`` in hex, anything else as text in ``encoding``."""
    m = _HEX_QUOTED.fullmatch(text) or _HEX_0X.fullmatch(text)
    if m:
        digits = "".join(m.group(1).split())
        if len(digits) % 2:
            raise CliError(f"key {text}: an odd number of hex digits", USAGE)
        return bytes.fromhex(digits)
    try:
        return text.encode(encoding)
    except UnicodeEncodeError as e:
        raise CliError(
            f"key {text!r} cannot be written in {encoding} ({e.reason}); give it in hex as X'...'", USAGE
        ) from None


def check_key(key: bytes, key_length: int, what: str) -> bytes:
    if not key:
        raise CliError(f"{what} is empty", USAGE)
    if len(key) > key_length:
        raise CliError(f"{what} X'{key.hex().upper()}' has {len(key)} bytes; the keys have {key_length}", USAGE)
    return key


# --- files ---------------------------------------------------------------------------------------------------------


def is_dataset(path: str) -> bool:
    """Whether ``path`` is a file that starts like a ksds data set (its magic, possibly mangled in transfer)."""
    try:
        with open(path, "rb") as f:
            head = f.read(len(MAGIC))
    except (IsADirectoryError, FileNotFoundError, PermissionError):
        return False
    return head == MAGIC or (len(head) == len(MAGIC) and head[1:5] == b"KSDS")


def require_file(path: str) -> None:
    if not os.path.exists(path):
        raise CliError(f"no data set at {path}")
    if os.path.isdir(path):
        raise CliError(f"{path} is a directory, not a ksds data set")


# --- progress ------------------------------------------------------------------------------------------------------


class Progress:
    """A progress bar on stderr, drawn only when stderr is a terminal (quiet when piped or redirected)."""

    WIDTH = 30

    def __init__(self, label: str, *, stream: IO[str] | None = None, enabled: bool | None = None) -> None:
        self.label = label
        self.stream = stream if stream is not None else sys.stderr
        if enabled is None:
            try:
                enabled = self.stream.isatty()
            except (AttributeError, ValueError):
                enabled = False
        self.enabled = enabled
        self._last = 0.0
        self._drawn = False

    def update(self, done: int, total: int, note: str = "") -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last < 0.1 and done < total:
            return
        self._last = now
        frac = min(1.0, done / total) if total > 0 else 0.0
        fill = int(frac * self.WIDTH)
        bar = "#" * fill + "-" * (self.WIDTH - fill)
        self.stream.write(f"\r{self.label} [{bar}] {frac:4.0%} {note}\x1b[K")
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        if self._drawn:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._drawn = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
