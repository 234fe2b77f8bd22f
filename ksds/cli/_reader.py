"""A data set opened for reading by LISTCAT, PRINT and REPRO: opened as usual, or read without opening it while
another process has it open.

When no open of the data set exists, :func:`open_reader` opens it in mode "r" (which recovers one that was not
closed cleanly, as any open does). When one exists (for update, with any SHAREOPTIONS: even (1), where a second
open would be refused), the data set is read as LISTCAT reads a data set open elsewhere: the file with the
committed transactions of its log laid over it (:class:`ksds.wal_view.View`), without open-mode locks or the
latch, and :attr:`Reader.note` says that the figures are as of that moment.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from .. import dataset
from ..aix import describe
from ..dataset import Dataset
from ..definition import Definition
from ..errors import DatasetInUseError
from ..format import State
from ..pager import Recovery
from ..wal_view import View, in_use, records


class Reader:
    """One data set, read through an open :class:`~ksds.dataset.Dataset` or a live :class:`~ksds.wal_view.View`."""

    def __init__(self, path: str, ds: Dataset | None = None, view: View | None = None) -> None:
        self.path = path
        self._ds = ds
        self._view = view
        #: one line saying that the data set is open elsewhere, so what is shown is as of this moment (else None)
        self.note: str | None = None
        if view is not None:
            self.note = (
                f"{path} is open in another process, so this is as of {time.strftime('%Y-%m-%d %H:%M:%S')} "
                f"(transaction {view.state.txn}; the file with its log's committed transactions, read without "
                "opening it) and may have changed since"
            )

    @property
    def definition(self) -> Definition:
        return self._ds.definition if self._ds is not None else self._require_view().definition

    @property
    def key_offset(self) -> int:
        return self.definition.key_offset

    @property
    def key_length(self) -> int:
        return self.definition.key_length

    @property
    def record_length(self) -> int:
        return self.definition.record_length

    @property
    def recovery(self) -> Recovery | None:
        return self._ds.recovery if self._ds is not None else None

    def key_of(self, record: bytes) -> bytes:
        ko = self.key_offset
        return record[ko : ko + self.key_length]

    def __len__(self) -> int:
        return len(self._ds) if self._ds is not None else self._require_view().state.rec_total

    def browse(self, lo: bytes | None = None) -> Iterator[bytes]:
        """The records in key order from the first key >= ``lo`` (generic: a shorter ``lo`` is a prefix)."""
        if self._ds is not None:
            return iter(self._ds.browse(lo, gteq=True, generic=True) if lo is not None else self._ds.browse())
        return records(self._require_view(), lo)

    def aixes(self) -> dict[str, dict[str, Any]]:
        """The alternate indexes, as :meth:`ksds.dataset.Dataset.aixes` describes them."""
        if self._ds is not None:
            return self._ds.aixes()
        view = self._require_view()
        return {a.name: describe(a, view.definition) for a in view.state.aixes}

    def browse_path(self, name: str, lo: bytes | None = None) -> Iterator[bytes]:
        """The records in the order of alternate index ``name``, from the first alternate key >= ``lo``
        (generic). Only through an open: a data set open elsewhere is refused with a message saying so."""
        if self._ds is None:
            raise DatasetInUseError(
                f"{self.path} is open in another process: a path ({name}) is read only through an open of the data "
                f"set; try again once it is closed"
            )
        p = self._ds.aix(name)
        return iter(p.browse(lo, gteq=True, generic=True) if lo is not None else p.browse())

    def stats(self) -> dict[str, Any]:
        """LISTCAT ALL's statistics (as :meth:`ksds.dataset.Dataset.stats` gives them)."""
        if self._ds is not None:
            return self._ds.stats()
        view = self._require_view()
        return stats_of(view.state, view.definition, view.file_size)

    def close(self) -> None:
        if self._ds is not None:
            self._ds.close()
        if self._view is not None:
            self._view.close()

    def __enter__(self) -> Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _require_view(self) -> View:
        assert self._view is not None
        return self._view


def stats_of(st: State, d: Definition, file_size: int) -> dict[str, Any]:
    """LISTCAT ALL's statistics from a state, as :meth:`ksds.dataset.Dataset.stats` computes them."""
    return dataset.listcat(st, d, file_size)


def open_reader(path: str) -> Reader:
    """The data set at ``path`` for reading: opened (mode "r") when no other open exists, else read without
    opening it (see the module's docstring). Raises what :func:`ksds.open` raises for a missing file or one
    that is not a data set."""
    try:
        busy = in_use(path)
    except OSError:
        busy = False  # not there, a directory, not readable: dataset.open says so
    if not busy:
        try:
            return Reader(path, ds=dataset.open(path, "r"))
        except DatasetInUseError:
            pass  # opened by another process meanwhile
    return Reader(path, view=View(path, live=True))
