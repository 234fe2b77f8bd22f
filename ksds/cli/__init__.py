"""The ``ksds`` command: IDCAMS-style verbs over data sets (``ksds VERB --help`` for each).

    ksds define cust.ksds --keys 8 0 --recordsize 80 --freespace 20 10
    ksds repro customers.jsonl cust.ksds
    ksds define-aix cust.ksds --name BYNAME --keys 20 8
    ksds print cust.ksds --path BYNAME --count 5
    ksds listcat cust.ksds
    ksds print cust.ksds --character --count 5
    ksds examine cust.ksds
    ksds map cust.ksds --output cust.png

Exit statuses: 0 done; 4 warnings (examine: needs recovery); 8 errors (examine: damage found; repro: records
rejected); 12 the verb could not be done (one line on stderr says why); 2 wrong arguments.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import logging
import os
import sys
from collections.abc import Sequence

from .. import __version__
from ..errors import DefinitionError, KsdsError
from . import (
    alter,
    bldindex,
    cache_records,
    define,
    define_aix,
    delete,
    delete_aix,
    examine,
    listcat,
    map,
    print_,
    repro,
    serve,
    static_definition,
    verify,
    zowe_records,
)
from ._common import FAILED, USAGE, ArgumentParser, CliError, UsageError, one_line, option_names

__all__ = ["main", "build_parser"]

VERBS = (define, define_aix, bldindex, delete_aix, listcat, print_, repro, examine, verify, alter, delete, map,
         zowe_records, cache_records, serve, static_definition)


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="ksds",
        description="IDCAMS-style utilities for ksds data sets (VSAM-style key-sequenced data sets).",
        epilog=(__doc__ or "").split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"ksds {version()}", help="show the version and exit")
    sub = parser.add_subparsers(dest="verb", metavar="VERB", required=True, parser_class=ArgumentParser)
    for verb in VERBS:
        verb.register(sub)
    return parser


def version() -> str:
    """The installed package's version (its metadata), else the one ``ksds.__version__`` says."""
    try:
        return importlib.metadata.version("ksds")
    except importlib.metadata.PackageNotFoundError:
        return __version__


def _message(e: BaseException) -> str:
    if isinstance(e, OSError) and not isinstance(e, KsdsError) and e.strerror:
        where = e.filename if e.filename is not None else ""
        return f"{where}: {e.strerror}" if where else e.strerror
    if isinstance(e, UnicodeError):
        return f"text that the code page cannot hold: {e}"
    if isinstance(e, DefinitionError):
        return option_names(str(e))  # the command's option names, not the engine's parameter names
    return str(e) or type(e).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``ksds`` with ``argv`` (default: the command line); return the exit status. Never raises."""
    parser = build_parser()
    who = "ksds"
    handler = _LogHandler()
    log = logging.getLogger("ksds")
    log.addHandler(handler)
    try:
        args = parser.parse_args(argv)
        who = handler.who = f"ksds {args.verb}"
        status: int = args.func(args)
        sys.stdout.flush()
        return status
    except UsageError as e:
        print(f"{e.prog}: {one_line(str(e))}", file=sys.stderr)
        return e.status
    except CliError as e:
        print(f"{who}: {one_line(str(e))}", file=sys.stderr)
        return e.status
    except SystemExit as e:  # --help, --version
        return e.code if isinstance(e.code, int) else (0 if e.code is None else USAGE)
    except KeyboardInterrupt:
        print(f"\n{who}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader of our output went away (``ksds print ... | head``): stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except (KsdsError, OSError, ValueError, UnicodeError) as e:
        print(f"{who}: {one_line(_message(e))}", file=sys.stderr)
        return FAILED
    finally:
        log.removeHandler(handler)


class _LogHandler(logging.Handler):
    """The engine's warnings (e.g. "was not closed cleanly: replayed ...") as ``ksds VERB: ...`` lines."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.who = "ksds"

    def emit(self, record: logging.LogRecord) -> None:
        print(f"{self.who}: {one_line(record.getMessage())}", file=sys.stderr)
