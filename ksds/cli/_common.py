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


def add_freespace_shareoptions(p: argparse.ArgumentParser, defaults: bool) -> None:
    """--freespace CI CA and --shareoptions R S (define, with their defaults; alter, without)."""
    p.add_argument(
        "--freespace",
        nargs=2,
        type=whole_number(p.prog, "--freespace", 0, 100),
        default=(0, 0) if defaults else None,
        metavar=("CI", "CA"),
        help="FREESPACE(ci%% ca%%)" + (" (default 0 0)" if defaults else ""),
    )
    p.add_argument(
        "--shareoptions",
        nargs=2,
        type=whole_number(p.prog, "--shareoptions", 1, 4),
        default=(1, 3) if defaults else None,
        metavar=("R", "S"),
        help="SHAREOPTIONS(cross-region cross-system)" + (" (default 1 3)" if defaults else ""),
    )


def one_line(text: str) -> str:
    return " ".join(str(text).split())


#: the engine's parameter names (in DefinitionError messages) and the options of ``ksds define`` / ``alter`` that
#: give them, longest first so that "freespace ci%" is replaced before "freespace"
OPTION_NAMES = (
    ("share_options cross-region", "--shareoptions R"),
    ("share_options cross-system", "--shareoptions S"),
    ("freespace ci%", "--freespace CI"),
    ("freespace ca%", "--freespace CA"),
    ("record_length", "--recordsize"),
    ("share_options", "--shareoptions"),
    ("key_length", "--keys LENGTH"),
    ("key_offset", "--keys OFFSET"),
    ("cis_per_ca", "--cis-per-ca"),
    ("freespace", "--freespace"),
    ("ci_size", "--cisize"),
)
_OPTION_NAME = re.compile("|".join(rf"(?<![\w-]){re.escape(name)}(?![\w%])" for name, _ in OPTION_NAMES))
_OPTION_OF = dict(OPTION_NAMES)


def option_names(message: str) -> str:
    """An engine message (a :class:`~ksds.DefinitionError`'s) with the parameters it names given as the command's
    options: "ci_size 40000 is above ..." -> "--cisize 40000 is above ..."."""
    return _OPTION_NAME.sub(lambda m: _OPTION_OF[m.group(0)], message)


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


def check_key(key: bytes, key_length: int, what: str, encoding: str | None = None) -> bytes:
    if not key:
        raise CliError(f"{what} is empty", USAGE)
    if len(key) > key_length:
        raise CliError(f"{what} {show_key(key, encoding)} has {len(key)} bytes; the keys have {key_length}", USAGE)
    return key


#: code pages that say nothing about the keys' text (the default, and ASCII): keys are shown as ASCII text when they
#: are, else as EBCDIC (cp037) text when they are that
_UNTOLD = ("latin-1", "iso8859-1", "ascii")
_EBCDIC = "cp037"


def key_text(key: bytes, encoding: str | None = None) -> tuple[str, str | None] | None:
    """The key as printable text and the code page it is in (None: ASCII), or None if it is not text.

    With a code page given (``--encoding cp1047``) the key is read in it; with none (or the default latin-1, or
    ascii) it is text if every byte is printable ASCII, else if every byte is a printable character of cp037
    that is also in ASCII (an EBCDIC key such as X'C1C2C3', 'ABC')."""
    if not key:
        return None
    name = codecs.lookup(encoding).name if encoding else None
    if name is not None and name not in _UNTOLD:
        try:
            text = key.decode(name)
        except UnicodeDecodeError:
            return None
        return (text, name) if text.isprintable() else None
    if all(0x20 <= b < 0x7F for b in key):
        return key.decode("ascii"), None
    text = key.decode(_EBCDIC)
    if all(" " <= ch < "\x7f" for ch in text):
        return text, _EBCDIC
    return None


def show_key(key: bytes, encoding: str | None = None) -> str:
    """A key in a message: ``X'C1C2C3' ('ABC' in cp037)``, ``X'414243' ('ABC')``, or ``X'00FF'`` (not text)."""
    hx = f"X'{key.hex().upper()}'"
    t = key_text(key, encoding)
    if t is None:
        return hx
    text, page = t
    return f"{hx} ('{text}' in {page})" if page else f"{hx} ('{text}')"


def short_key(key: bytes, encoding: str | None = None, limit: int = 24) -> str:
    """A key in a label (``ksds map``): its text when it is text, else ``X'...'``; cut to ``limit`` characters."""
    t = key_text(key, encoding)
    s = t[0] if t is not None else f"X'{key.hex().upper()}'"
    return s if len(s) <= limit else s[: limit - 1] + "~"


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
