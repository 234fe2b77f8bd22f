"""ksds verify: VERIFY [RECOVER]: bring a data set that was not closed cleanly back to a closed, sound state."""

from __future__ import annotations

import argparse
import logging

from .. import verify as _verify
from ..errors import CorruptionError, JournalCorruptError
from ._common import FAILED, OK, CliError, Subparsers, add_verb, require_file
from .examine import check, condition_code, summary

EXAMPLES = """
  ksds verify cust.ksds               (replay the log of a data set that was not closed cleanly)
  ksds verify cust.ksds --recover     (also when the log is damaged in its middle: keep what precedes it)
exit status: 0 sound; 8 damage remains that VERIFY cannot repair (see ksds examine); 12 it could not be done
"""


def register(sub: Subparsers) -> None:
    p = add_verb(
        sub,
        "verify",
        "recover a data set that was not closed cleanly (VERIFY)",
        "Replay the committed requests in the data set's log (what a crash left), drop an unfinished one, close "
        "it cleanly, and say what was done. --recover also handles a log damaged in its middle (the frames before "
        "the damage are kept). Then EXAMINE checks the result (--no-examine skips it).",
        EXAMPLES,
    )
    p.add_argument("path", metavar="PATH")
    p.add_argument("--recover", action="store_true", help="cut a damaged log at the damage and replay what precedes it")
    p.add_argument("--no-examine", action="store_true", help="do not check the data set afterwards")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    require_file(args.path)
    log = logging.getLogger("ksds")
    level = log.level
    log.setLevel(logging.ERROR)  # the report below says what recovery did
    try:
        report = _verify(args.path, recover=args.recover)
    except JournalCorruptError as e:
        raise CliError(str(e), FAILED) from None
    except CorruptionError as e:
        raise CliError(
            f"{e}; VERIFY cannot repair this: restore the data set from a backup "
            f"(ksds examine shows the damage; ksds repro copies out what can be read)",
            FAILED,
        ) from None
    finally:
        log.setLevel(level)
    print(report)
    if args.no_examine:
        return OK
    exam = check(args.path, label="ksds verify")
    for finding in exam.findings:
        print(finding)
    print(summary(exam))
    return condition_code(exam)
