"""ksds examine: EXAMINE INDEXTEST / DATATEST, with IDCAMS condition codes as the exit status."""

from __future__ import annotations

import argparse

from .. import examine as _examine
from ..examine import ExamineReport
from ._common import ERROR, OK, WARNING, CliError, Progress, Subparsers, add_verb, is_dataset, require_file

EXAMPLES = """
  ksds examine cust.ksds                 (both tests)
  ksds examine cust.ksds --indextest     (the index only: quick)
  ksds examine cust.ksds || ksds verify cust.ksds --recover
exit status: 0 sound; 4 warnings only (e.g. not closed cleanly: ksds verify recovers it); 8 errors (damage)
"""


def register(sub: Subparsers) -> None:
    p = add_verb(
        sub,
        "examine",
        "check the data set's integrity (EXAMINE)",
        "Check the data set without opening it (so it works on a damaged one): INDEXTEST checks every index CI, "
        "DATATEST every data CI and record. With neither option both run. Each finding is one line naming the CI "
        "and what is wrong; then a summary. The exit status is the IDCAMS condition code.",
        EXAMPLES,
    )
    p.add_argument("path", metavar="PATH")
    p.add_argument("--indextest", action="store_true", help="check the index (INDEXTEST)")
    p.add_argument("--datatest", action="store_true", help="check the data CIs and records (DATATEST)")
    p.set_defaults(func=run)


def condition_code(report: ExamineReport) -> int:
    if report.errors:
        return ERROR
    if report.findings or report.needs_recovery:
        return WARNING
    return OK


def check(path: str, indextest: bool = True, datatest: bool = True, label: str = "ksds examine") -> ExamineReport:
    """Run EXAMINE with a progress bar on a terminal. A file that does not start as a data set does (a text file,
    an empty file, a picture) is one line saying so, not damage to restore from a backup."""
    require_file(path)
    if not is_dataset(path):
        raise CliError(f"{path} is not a ksds data set (no ksds header)")
    with Progress(label) as bar:
        return _examine(
            path, indextest=indextest, datatest=datatest, progress=lambda d, t: bar.update(d, t, "data CIs")
        )


def summary(report: ExamineReport) -> str:
    errors = len(report.errors)
    warnings = len(report.findings) - errors
    what = (
        f"{report.records} records in {report.data_cis} data CIs; {report.index_cis} index CIs, {report.levels} levels"
    )
    if errors:
        verdict = "NOT SOUND: restore it from a backup, or copy out what can be read (ksds repro)"
    elif report.needs_recovery:
        verdict = "sound once recovered (ksds verify, or any open, replays its log)"
    else:
        verdict = "sound"
    return f"{report.path}: {what}: {errors} errors, {warnings} warnings: {verdict}"


def run(args: argparse.Namespace) -> int:
    both = not args.indextest and not args.datatest
    report = check(args.path, indextest=both or args.indextest, datatest=both or args.datatest)
    for finding in report.findings:
        print(finding)
    print(summary(report))
    cc = condition_code(report)
    print(f"IDC0001I FUNCTION COMPLETED, HIGHEST CONDITION CODE WAS {cc}")
    return cc
