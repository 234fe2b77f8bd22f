"""ksds delete: DELETE CLUSTER: remove a data set and its log."""

from __future__ import annotations

import argparse

import ksds

from ._common import OK, CliError, Subparsers, add_verb, is_dataset, require_file

EXAMPLES = """
  ksds delete cust.ksds          (removes cust.ksds and cust.ksds-wal)
"""


def register(sub: Subparsers) -> None:
    p = add_verb(
        sub,
        "delete",
        "remove a data set and its log (DELETE CLUSTER)",
        "Remove the data set PATH and its write-ahead log PATH-wal. Refuses a file that is not a ksds data set, "
        "and a data set that another process has open.",
        EXAMPLES,
    )
    p.add_argument("path", metavar="PATH")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    path: str = args.path
    require_file(path)
    if not is_dataset(path):
        raise CliError(f"{path} is not a ksds data set (no ksds header): not deleted")
    removed = ksds.delete(path)
    print(f"deleted {removed[0]}" + "".join(f" and {p}" for p in removed[1:]))
    return OK
