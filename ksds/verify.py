"""VERIFY: bring a data set that was not closed cleanly back to a consistent, closed state.

Opening a data set already recovers it (replays the committed transactions of its log); :func:`verify` does that
explicitly and reports it. With ``recover=True`` it also handles a log damaged in the middle (which a plain open
refuses with :class:`~ksds.JournalCorruptError`): the frames before the damage are kept and replayed, the rest is
discarded, and the report says how many bytes of log were given up.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .dataset import Dataset
from .errors import JournalCorruptError
from .format import HEADER_MAX, decode_header
from .journal import Journal
from .pager import Recovery, data_set_path, log_path
from .tree import TreeLayouts


@dataclass(frozen=True)
class VerifyReport:
    path: str
    recovery: Recovery | None  # None: the data set was closed cleanly, nothing to do
    log_bytes_discarded: int = 0  # with recover=True: log given up after damage in its middle
    damage: str | None = None  # the damage that forced it

    def __str__(self) -> str:
        if self.recovery is None and not self.log_bytes_discarded:
            return f"{self.path}: closed cleanly, nothing to recover"
        s = f"{self.path}: {self.recovery or 'recovered'}"
        if self.log_bytes_discarded:
            s += f"; discarded {self.log_bytes_discarded} bytes of damaged log ({self.damage})"
        return s


def verify(path: str, *, recover: bool = False) -> VerifyReport:
    """Recover the data set at ``path`` if it needs it; see the module docstring."""
    path = data_set_path(path)
    discarded = 0
    damage = None
    try:
        ds = Dataset(path, "rw", "power", 1 << 20)
    except JournalCorruptError as e:
        if not recover:
            raise
        damage = str(e)
        discarded = _cut_log(path)
        ds = Dataset(path, "rw", "power", 1 << 20)
    report = VerifyReport(path, ds.recovery, discarded, damage)
    ds.close()
    return report


def _cut_log(path: str) -> int:
    """Cut the log just before its first damaged frame; return the bytes removed."""
    with open(path, "rb") as f:
        defn, created, state = decode_header(f.read(HEADER_MAX), path)
    lp = log_path(path)
    size = os.path.getsize(lp)
    trees = TreeLayouts(defn, path, state)
    journal = Journal(lp, defn.ci_size, created, trees.layouts)
    journal.on_commit = trees.learn
    try:
        journal.read()
        return 0
    except JournalCorruptError:
        pass
    # read() stops at the first bad frame and leaves journal.offset there
    with open(lp, "r+b") as f:
        f.truncate(journal.offset)
    return size - journal.offset
