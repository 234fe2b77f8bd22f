"""PATHs: the base records of a data set reached by the alternate key of one of its alternate indexes.

``ds.aix(name)`` gives a :class:`Path` over the AIX ``name`` (:mod:`ksds.aix`). Its reads and browses are the
base's records, found through the AIX's records (alternate key + prime key) and then by prime key in the base,
in alternate-key order and, among the records that share an alternate key, in prime-key order. A read whose
alternate key more base records carry sets :attr:`Path.status` to ``"02"`` (COBOL's duplicate-key status; VSAM's
RPL warning), ``"00"`` otherwise.

Paths read the AIX's data CIs without adding them to the pool (as browses read the base's): a browse over an
AIX does not push the base's index out of it. A path holds the data set's :class:`~ksds.session.Session` as a
browse does: every read, and each step of a
browse (up to :data:`STEP` records), holds the open's mutex and, in shared mode, the latch with a view caught up
with other processes; a browse re-seeks after the last AIX record it returned at each step, so it stays right
while the data set changes around it. An AIX that is not current (NOUPGRADE, changed since its build) is read as
it is: its records whose base record is gone, or no longer carries that alternate key, are skipped. Costs: L
index levels, n records per CI; a read is O(L log n) in the AIX and O(L log n) in the base.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from . import aix, btree
from .errors import CorruptionError, DatasetClosedError, InvalidRequestError, RecordNotFoundError, show_key
from .format import AixMeta
from .pager import Pager
from .session import Session
from .tree import Tree

T = TypeVar("T")

#: AIX records a browse takes per step (one mutex and latch hold)
STEP = 64


class Path:
    """A PATH over alternate index ``name`` of an open data set (see the module docstring)."""

    def __init__(self, session: Session, name: str) -> None:
        self._s = session
        self.name = name
        #: the AIX's catalog entry and tree as last found (found again when the tree or its entry changes)
        self._a: AixMeta | None = None
        self._t: Tree[Pager] | None = None
        #: COBOL's status of the last read: "02" if another base record with its alternate key follows, else "00"
        self.status = "00"

    # --- running under the open -----------------------------------------------------------------------------

    def _run(self, fn: Callable[..., T], *args: Any) -> T:
        s = self._s
        s.acquire()
        try:
            p = s.opened()
            if p.shared:
                return s.latched(p, False, fn, p, *args)  # type: ignore[no-any-return]
            return fn(p, *args)
        finally:
            s.release()

    def _tree(self, p: Pager) -> tuple[AixMeta, Tree[Pager]]:
        """The AIX's catalog entry and tree: as last found while the pager still has that tree bound to that
        entry (a rollback, another process's commit or a DELETE AIX rebinds or drops it), else found again. O(1)."""
        a, t = self._a, self._t
        if t is None or a is None or t.meta is not a or p.trees.get(t.tid) is not t:
            a = aix.find(p, self.name)
            t = p.tree_of(a)
            self._a, self._t = a, t
        return a, t

    def _altkey(self, a: AixMeta, key: object, generic: bool) -> bytes:
        if type(key) is bytes and len(key) == a.key_length:
            return key
        if type(key) is not bytes:
            if not isinstance(key, (bytes, bytearray, memoryview)):
                raise InvalidRequestError(f"an alternate key must be bytes, not {type(key).__name__}")
            key = bytes(key)
        assert isinstance(key, bytes)
        n = len(key)
        if generic and 1 <= n <= a.key_length or n == a.key_length:
            return key
        raise InvalidRequestError(
            f"{self._s.path}: alternate index {self.name}'s key is {a.key_length} bytes; {show_key(key)} has {n}"
            + (" (a generic key has 1 or more)" if generic else "")
        )

    def _base(self, p: Pager, a: AixMeta, rec: bytes) -> bytes | None:
        """The base record AIX record ``rec`` names, or None if the AIX is not current and it no longer matches."""
        e = a.key_length
        base = btree.find(p.base, rec[e:])
        if base is not None and base[a.key_offset : a.key_offset + e] == rec[:e]:
            return base
        if a.current:
            raise CorruptionError(
                f"{self._s.path}: alternate index {self.name} has a record for alternate key {show_key(rec[:e])} and "
                f"prime key {show_key(rec[e:])}, which the base does not hold (base and AIX out of step: EXAMINE "
                f"the data set, and rebuild the AIX with BLDINDEX)"
            )
        return None

    # --- reads ----------------------------------------------------------------------------------------------

    def read(self, altkey: bytes, *, generic: bool = False, gteq: bool = False) -> bytes:
        """The first base record (in prime-key order) with alternate key ``altkey`` (EQUAL), with the lowest
        alternate key >= ``altkey`` (``gteq``), or with an alternate key that starts with ``altkey``
        (``generic``). Sets :attr:`status`. Raises :class:`~ksds.RecordNotFoundError`. O(L log n)."""
        s = self._s
        m = s.mutex  # taken inline, as Dataset.read does: this is the path's hot path
        if not m.acquire(False):
            s.wait_turn()
        try:
            p = s.pager
            if p is None:
                raise DatasetClosedError(f"{s.path} is closed")
            if not p.shared and not generic and not gteq:
                # the hot path, inlined: an exclusive open's EQUAL read through a current UNIQUEKEY AIX (as found
                # last time), one exact search in the AIX and one in the base
                a, tree = self._a, self._t
                if (
                    tree is not None
                    and a is not None
                    and a.unique
                    and a.current
                    and tree.meta is a
                    and type(altkey) is bytes
                    and len(altkey) == a.key_length
                    and p.trees.get(tree.tid) is tree
                ):
                    r = btree.find(tree, altkey)
                    if r is not None:
                        e = a.key_length
                        rec = btree.find(p.base, r[e:])
                        ko = a.key_offset
                        if rec is not None and rec[ko : ko + e] == altkey:
                            p.state.rec_retrieved += 1
                            self.status = "00"
                            return rec
            got: tuple[bytes, bool]
            if p.shared:
                got = s.latched(p, False, self._read, p, altkey, generic, gteq)
            else:
                got = self._read(p, altkey, generic, gteq)
        finally:
            m.release()
        self.status = "02" if got[1] else "00"
        return got[0]

    def _read(self, p: Pager, altkey: object, generic: bool, gteq: bool) -> tuple[bytes, bool]:
        a, tree = self._a, self._t  # inlined _tree: the usual case is the AIX as last found
        if tree is None or a is None or tree.meta is not a or p.trees.get(tree.tid) is not tree:
            a, tree = self._tree(p)
        key = altkey if type(altkey) is bytes and len(altkey) == a.key_length else self._altkey(a, altkey, generic)
        assert type(key) is bytes
        if a.current:
            e = a.key_length
            # the AIX record in place in its data CI (no CI object; only it is copied), the base record by its prime
            # key; the next AIX record, in the same CI, says whether another base record follows
            n = len(key)
            rl = tree.record_length
            tk = tree.key_length
            probe = key if n == tk else key + bytes(tk - n)
            buf, base, count = btree.records_at(tree, probe)
            j = tree.codec.bisect(buf, base, count, probe)
            if j < count:
                o = base + j * rl
                r = buf[o : o + rl]
                if type(r) is not bytes:
                    r = bytes(r)
                if not gteq and r[:n] != key:
                    raise self._missing(key, generic)
                rec = btree.find(p.base, r[e:])
                ko = a.key_offset
                if rec is None or rec[ko : ko + e] != r[:e]:
                    rec = self._base(p, a, r)  # raises: base and AIX out of step
                    assert rec is not None
                p.state.rec_retrieved += 1
                if a.unique:
                    return rec, False
                if j + 1 < count:
                    return rec, buf[o + rl : o + rl + e] == r[:e]
                nxt = btree.seek_ge(tree, r[:tk], strict=True, cache=False)
                return rec, nxt is not None and nxt[1].key_at(nxt[2])[:e] == r[:e]
        return self._read_walk(p, a, tree, key, generic, gteq)

    def _read_walk(
        self, p: Pager, a: AixMeta, tree: Tree[Pager], key: bytes, generic: bool, gteq: bool
    ) -> tuple[bytes, bool]:
        """:meth:`read` the general way: AIX record after AIX record from the first >= ``key``, skipping those
        whose base record no longer matches (an AIX not current). O(L log n + skipped records)."""
        n = len(key)
        e = a.key_length
        pos = btree.seek_ge(tree, key + bytes(tree.key_length - n), cache=False)
        found: bytes | None = None
        alt = b""
        while pos is not None:
            path, ci, i = pos
            for r in ci.records(i):
                if found is not None:
                    if r[:e] != alt:
                        return found, False
                    if self._base(p, a, r) is not None:
                        return found, True
                    continue
                if not gteq and r[:n] != key:
                    raise self._missing(key, generic)
                base = self._base(p, a, r)
                if base is not None:
                    found, alt = base, r[:e]
                    p.state.rec_retrieved += 1
            nxt = btree.next_data(tree, path, False)
            pos = None if nxt is None else (path, nxt, 0)
        if found is None:
            raise self._missing(key, generic)
        return found, False

    def _missing(self, key: bytes, generic: bool) -> RecordNotFoundError:
        how = "starting" if generic else ""
        return RecordNotFoundError(
            f"{self._s.path}: no record with alternate key {how + ' ' if how else ''}{show_key(key)} in alternate "
            f"index {self.name}"
        )

    def count(self, altkey: bytes) -> int:
        """How many base records carry alternate key ``altkey``. O(L log n) per data CI of the AIX the records with
        that key are in (one bisect each); for an AIX that is not current, O(k) base reads for k records."""
        return self._run(self._count, altkey)

    def _count(self, p: Pager, altkey: object) -> int:
        a, tree = self._tree(p)
        key = self._altkey(a, altkey, False)
        e = a.key_length
        tk = tree.key_length
        if a.current and tk == e:  # a UNIQUEKEY AIX: one record at most
            return 0 if btree.find(tree, key) is None else 1
        rl = tree.record_length
        pos = btree.seek_ge(tree, key + bytes(tk - e), cache=False)
        n = 0
        if a.current:
            # every AIX record with the key is a base record: in each CI, the run's end found by one bisect
            hi = key + b"\xff" * (rl - e)
            bisect = tree.codec.bisect
            while pos is not None:
                path, ci, i = pos
                buf = ci.buf
                k = bisect(buf, 0, ci.n, hi)
                if k < ci.n and buf[k * rl : k * rl + rl] == hi:
                    k += 1  # the highest possible prime key
                n += k - i
                if k < ci.n:
                    return n
                nxt = btree.next_data(tree, path, False)
                pos = None if nxt is None else (path, nxt, 0)
            return n
        while pos is not None:
            path, ci, i = pos
            for r in ci.records(i):
                if r[:e] != key:
                    return n
                if self._base(p, a, r) is not None:
                    n += 1
            nxt = btree.next_data(tree, path, False)
            pos = None if nxt is None else (path, nxt, 0)
        return n

    # --- browses --------------------------------------------------------------------------------------------

    def browse(
        self, altkey: bytes | None = None, *, gteq: bool = True, generic: bool = False, backward: bool = False
    ) -> Iterator[bytes]:
        """The base records in alternate-key order (prime-key order within one alternate key), forward or
        ``backward``: from the first (``altkey`` None; backward, the last), from the first with alternate key
        ``altkey`` (``gteq=False``: :class:`~ksds.RecordNotFoundError` at the first step if there is none), from
        the first >= ``altkey`` (``gteq``; backward: the last <= it), or from the first starting with ``altkey``
        (``generic``; backward: the last). Runs to the end. Each step of :data:`STEP` records is O(L log n)."""
        first = True
        last: bytes | None = None
        while True:
            recs, last = self._run(self._step, altkey, gteq, generic, backward, last, first)
            first = False
            if not recs:
                return
            yield from recs

    def _step(
        self, p: Pager, altkey: object, gteq: bool, generic: bool, backward: bool, last: bytes | None, first: bool
    ) -> tuple[list[bytes], bytes | None]:
        a, tree = self._tree(p)
        kl = tree.key_length
        if last is not None:
            after = last[:kl]  # the tree's key of the last AIX record seen
            seek = btree.seek_le if backward else btree.seek_ge
            pos = seek(tree, after, strict=True, cache=False)
            key = None
        elif altkey is None:
            start = b"\xff" * kl if backward else bytes(kl)
            pos = (btree.seek_le if backward else btree.seek_ge)(tree, start, cache=False)
            key = None
        else:
            key = self._altkey(a, altkey, generic)
            fill = b"\xff" if backward else b"\0"
            start = key + fill * (kl - len(key))
            pos = (btree.seek_le if backward else btree.seek_ge)(tree, start, cache=False)
        out: list[bytes] = []
        check = key is not None and first and not gteq
        while pos is not None and len(out) < STEP:
            path, ci, i = pos
            recs = ci.records(0, i + 1)[::-1] if backward else ci.records(i)
            for r in recs:
                last = r
                base = self._base(p, a, r)
                if base is None:
                    continue  # a record of an AIX that is not current and no longer matches: skipped
                if check:
                    assert key is not None
                    if r[: len(key)] != key:
                        raise self._missing(key, generic)
                    check = False
                out.append(base)
                if len(out) >= STEP:
                    break
            else:
                step = btree.prev_data(tree, path, False) if backward else btree.next_data(tree, path, False)
                pos = None if step is None else (path, step, step.n - 1 if backward else 0)
                continue
            break
        if check and key is not None:
            raise self._missing(key, generic)
        p.state.rec_retrieved += len(out)
        return out, last
