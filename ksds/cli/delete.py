"""ksds delete: DELETE CLUSTER: remove a data set and its log."""

from __future__ import annotations

import argparse
import errno
import fcntl
import importlib
import os
import struct

from ..errors import DatasetInUseError
from ..pager import log_path
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
    fd = os.open(path, os.O_RDWR)
    try:
        if _in_use(fd):
            raise DatasetInUseError(f"{path} is in use: another process has it open; not deleted")
        removed = [p for p in (log_path(path), path + ".lck") if os.path.exists(p)]
        for p in removed:
            os.unlink(p)
        os.unlink(path)
    finally:
        os.close(fd)
    print(f"deleted {path}" + "".join(f" and {p}" for p in removed))
    return OK


def _in_use(fd: int) -> bool:
    """Whether another open of the data set exists: a whole-file lock (flock), or the engine's open-mode byte
    lock (an open-file-description lock on ``ksds.locks.OPEN_ANY``, where the engine has one); held until closed.
    """
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    try:
        probe = getattr(importlib.import_module("ksds.locks"), "OPEN_ANY", None)
    except ImportError:
        probe = None
    if not isinstance(probe, int) or not hasattr(fcntl, "F_OFD_SETLK"):
        return False
    lock = struct.pack("@hhqqi", fcntl.F_WRLCK, os.SEEK_SET, probe, 1, 0).ljust(32, b"\0")
    try:
        fcntl.fcntl(fd, fcntl.F_OFD_SETLK, lock)
    except OSError as e:
        if e.errno in (errno.EAGAIN, errno.EACCES):
            return True
        raise
    return False
