"""ksds delete: DELETE CLUSTER: remove data sets and their logs, one name after another as IDCAMS DELETE does."""

from __future__ import annotations

import argparse
import os
import sys

import ksds

from ..errors import DatasetInUseError, DatasetNotFoundError, KsdsError, NotADatasetError
from ._common import ERROR, FAILED, OK, Subparsers, add_verb, is_dataset, one_line

EXAMPLES = """
  ksds delete cust.ksds          (removes cust.ksds and cust.ksds-wal)
  ksds delete a.ksds b.ksds      (each one deleted or reported)
exit status: the highest condition code: 0 all deleted; 8 one or more not deleted (not found, not a data set,
or open in another process; the others are deleted); 12 one could not be deleted for another reason
"""


def register(sub: Subparsers) -> None:
    p = add_verb(
        sub,
        "delete",
        "remove data sets and their logs (DELETE CLUSTER)",
        "Remove each data set PATH and its write-ahead log PATH-wal, in the order given. Refuses a file that is not "
        "a ksds data set, and a data set that another process has open; the others are still deleted, and the "
        "exit status is the highest condition code, as IDCAMS DELETE's is.",
        EXAMPLES,
    )
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.set_defaults(func=run)


def delete_one(path: str) -> int:
    """Delete one data set; print what was done (stdout) or why not (stderr); return its condition code."""
    try:
        if not os.path.lexists(path):
            raise DatasetNotFoundError(f"no data set at {path}: not deleted")
        if os.path.isdir(path):
            raise NotADatasetError(f"{path} is a directory, not a ksds data set: not deleted")
        if not is_dataset(path):
            raise NotADatasetError(f"{path} is not a ksds data set (no ksds header): not deleted")
        removed = ksds.delete(path)
    except (DatasetNotFoundError, NotADatasetError, DatasetInUseError) as e:
        print(f"ksds delete: {one_line(str(e))}", file=sys.stderr)
        return ERROR
    except (KsdsError, OSError) as e:
        print(f"ksds delete: {path}: {one_line(str(e))}: not deleted", file=sys.stderr)
        return FAILED
    print(f"deleted {removed[0]}" + "".join(f" and {p}" for p in removed[1:]))
    return OK


def run(args: argparse.Namespace) -> int:
    return max(delete_one(path) for path in args.paths)
