"""Model-based test of the whole request set: random request sequences against a plain in-memory model.

A hypothesis state machine drives WRITE (new and duplicate keys, single and ascending runs), READ EQUAL / GTEQ /
GENERIC (hits and misses), REWRITE, ERASE (single and runs), browses forward and backward from every kind of start
(several open at once, stepped while the data set changes under them), batches that commit and batches that roll
back, close + reopen, a read-only open, and crashes (``_abandon``) + recovery, against a ``SortedDict``.

Each definition is small (512- or 1024-byte CIs, 2..4 CIs per CA, a key space of a few hundred keys) so that CI
splits, CA splits, CA reclaim and index level changes happen in every run; the test checks at the end that they
did. EXAMINE checks the structure after every reopen, crash, batch and at teardown.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sortedcontainers import SortedDict

import ksds


@dataclass(frozen=True)
class Defn:
    name: str
    key_length: int
    key_offset: int
    record_length: int
    ci_size: int
    cis_per_ca: int
    freespace: tuple[int, int] = (0, 0)
    durability: str = "process"
    buffer_space: int = 1 << 20


DEFINITIONS = [
    # key length 1: every byte value is a key, so keys collide all the time
    Defn("k1", 1, 0, 100, 512, 2),
    Defn("k2-off3", 2, 3, 100, 512, 3),
    Defn("k3", 3, 0, 120, 1024, 4, buffer_space=8 * 1024),  # a pool of 8 CIs: CIs are read back from the file
    Defn("k4-off10", 4, 10, 200, 512, 2),
    Defn("k8", 8, 0, 100, 1024, 3, durability="power"),
    Defn("k16-off5", 16, 5, 120, 512, 4),
    # long keys: 4 entries per index CI, so the index grows to 3 and 4 levels and shrinks back
    Defn("k100-off20", 100, 20, 160, 512, 3),
    Defn("k60", 60, 0, 248, 1024, 2),
    Defn("k4-freespace", 4, 0, 50, 512, 4, freespace=(20, 25)),
]

#: byte values the keys are built from (both ends of the byte range included, so all-X'00' and all-X'FF' keys exist)
ALPHABETS = {
    2: bytes([0x00, 0x01, 0x02, 0x10, 0x41, 0x42, 0x43, 0x7F, 0x80, 0x81, 0xC1, 0xC2, 0xF0, 0xF1, 0xFE, 0xFF]),
    3: bytes([0x00, 0x01, 0x41, 0x80, 0xC1, 0xFE, 0xFF]),
}
DEFAULT_ALPHABET = bytes([0x00, 0x01, 0x41, 0x7F, 0xFE, 0xFF])


def key_space(k: int) -> list[bytes]:
    """A few hundred keys of length ``k``, sorted; they share prefixes so generic requests find groups."""
    if k == 1:
        return [bytes([b]) for b in range(256)]
    alpha = ALPHABETS.get(k, DEFAULT_ALPHABET)
    digits = min(k, 3)
    base = len(alpha)
    keys = set()
    for n in range(base**digits):
        head = bytes(alpha[(n // base**j) % base] for j in reversed(range(digits)))
        last = head[-1]
        fill = 0xFF if last == 0xFF else 0x00 if last == 0x00 else 0x20
        keys.add(head + bytes([fill]) * (k - digits))
    return sorted(keys)


#: a RAM file system if there is one: durability="power" syncs are then cheap and the run stays short
TMP_ROOT = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


class BoomError(Exception):
    """Raised inside a batch to make it roll back."""


class KsdsMachine(RuleBasedStateMachine):
    """Drives one data set of definition ``self.d`` (set by the subclass made in ``machine_for``)."""

    d: Defn
    keys: list[bytes]
    coverage: dict[str, int]

    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="ksds-model-", dir=TMP_ROOT)
        self.path = os.path.join(self.dir, "model.ksds")
        self.model: SortedDict = SortedDict()
        self.browses: list[dict] = []
        self.ds: ksds.Dataset | None = None
        self.levels = 1
        #: the LISTCAT counters the model knows exactly
        self.counts = {"REC-INSERTED": 0, "REC-UPDATED": 0, "REC-DELETED": 0}
        d = self.d
        self.records_per_ca = (d.ci_size - 16) // d.record_length * d.cis_per_ca

    # --- helpers ------------------------------------------------------------------------------------------

    def open(self, mode: str = "rw") -> ksds.Dataset:
        return ksds.open(self.path, mode, durability=self.d.durability, buffer_space=self.d.buffer_space)

    def key(self, n: int) -> bytes:
        return self.keys[n % len(self.keys)]

    def record(self, key: bytes, v: int) -> bytes:
        d = self.d
        rest = d.record_length - d.key_offset - d.key_length
        return bytes([v]) * d.key_offset + key + bytes([v ^ 0x5A]) * rest

    def first_ge(self, model: SortedDict, key: bytes) -> bytes | None:
        i = model.bisect_left(key)
        return model.keys()[i] if i < len(model) else None

    def first_gt(self, model: SortedDict, key: bytes) -> bytes | None:
        i = model.bisect_right(key)
        return model.keys()[i] if i < len(model) else None

    def last_le(self, model: SortedDict, key: bytes) -> bytes | None:
        i = model.bisect_right(key)
        return model.keys()[i - 1] if i > 0 else None

    def last_lt(self, model: SortedDict, key: bytes) -> bytes | None:
        i = model.bisect_left(key)
        return model.keys()[i - 1] if i > 0 else None

    def start_key(self, key: bytes | None, gteq: bool, generic: bool, backward: bool) -> bytes | None:
        """Where a browse with these start options begins in the model; raises if it must not start."""
        m = self.model
        k = self.d.key_length
        if key is None:
            if not m:
                return None
            return m.keys()[-1] if backward else m.keys()[0]
        if generic:
            pos = self.last_le(m, key.ljust(k, b"\xff")) if backward else self.first_ge(m, key.ljust(k, b"\0"))
            if not gteq and (pos is None or not pos.startswith(key)):
                raise ksds.RecordNotFoundError("model: no record with that prefix")
            return pos
        pos = self.last_le(m, key) if backward else self.first_ge(m, key)
        if not gteq and pos != key:
            raise ksds.RecordNotFoundError("model: no record with that key")
        return pos

    def start_args(self, how: str, n: int, plen: int) -> tuple[bytes | None, bool, bool]:
        """(key, gteq, generic) for a browse or reposition of kind ``how``."""
        key = self.key(n)
        if how == "end":
            return None, True, False
        if how == "equal":
            return key, False, False
        if how == "gteq":
            return key, True, False
        prefix = key[: 1 + plen % self.d.key_length]
        return prefix, how == "generic-gteq", True

    def do_write(self, key: bytes, v: int, model: SortedDict | None = None, counts: dict | None = None) -> None:
        """WRITE, checked against ``model`` (the committed model unless given) and its statistics."""
        model = self.model if model is None else model
        counts = self.counts if counts is None else counts
        rec = self.record(key, v)
        if key in model:
            with pytest.raises(ksds.DuplicateKeyError):
                self.ds.write(rec)
            return
        append = not model or key > model.keys()[-1]
        self.ds.write(rec)
        model[key] = rec
        if not append:
            counts["REC-INSERTED"] += 1  # LISTCAT counts only inserts before the last record

    def do_rewrite(self, key: bytes, v: int, model: SortedDict | None = None, counts: dict | None = None) -> None:
        model = self.model if model is None else model
        counts = self.counts if counts is None else counts
        rec = self.record(key, v)
        if key not in model:
            with pytest.raises(ksds.RecordNotFoundError):
                self.ds.rewrite(rec)
            return
        self.ds.rewrite(rec)
        model[key] = rec
        counts["REC-UPDATED"] += 1

    def do_erase(self, key: bytes, model: SortedDict | None = None, counts: dict | None = None) -> None:
        model = self.model if model is None else model
        counts = self.counts if counts is None else counts
        if key not in model:
            with pytest.raises(ksds.RecordNotFoundError):
                self.ds.erase(key)
            return
        self.ds.erase(key)
        del model[key]
        counts["REC-DELETED"] += 1

    def check_all(self) -> None:
        """Every record, both directions, against the model."""
        assert self.ds is not None
        assert list(self.ds.browse()) == list(self.model.values())
        assert list(self.ds.browse(backward=True)) == list(reversed(self.model.values()))

    def check_examine(self) -> None:
        report = ksds.examine(self.path)
        assert report.sound, [str(f) for f in report.findings]
        assert report.records == len(self.model)

    def drop_browses_closed(self) -> None:
        """The data set was closed: a browse that still has records to give must refuse to go on."""
        for b in self.browses:
            if b["last"] is not None:
                with pytest.raises(ksds.DatasetClosedError):
                    next(b["it"])
        self.browses.clear()

    # --- setup --------------------------------------------------------------------------------------------

    @initialize()
    def define(self) -> None:
        d = self.d
        ksds.define(
            self.path,
            key_length=d.key_length,
            key_offset=d.key_offset,
            record_length=d.record_length,
            ci_size=d.ci_size,
            cis_per_ca=d.cis_per_ca,
            freespace=d.freespace,
        )
        self.ds = self.open()
        assert len(self.ds) == 0

    # --- keyed requests -----------------------------------------------------------------------------------

    @rule(n=st.integers(0, 10**6), v=st.integers(0, 255))
    def write(self, n: int, v: int) -> None:
        self.do_write(self.key(n), v)

    @rule(n=st.integers(0, 10**6), count=st.integers(1, 60), step=st.integers(1, 3), v=st.integers(0, 255))
    def write_ascending(self, n: int, count: int, step: int, v: int) -> None:
        """A run of inserts in ascending key order (the sequential insert strategy: appends, FREESPACE)."""
        start = n % len(self.keys)
        for j in range(start, min(len(self.keys), start + count * step), step):
            self.do_write(self.keys[j], v)

    @rule(n=st.integers(0, 10**6), how=st.sampled_from(["equal", "gteq"]))
    def read(self, n: int, how: str) -> None:
        key = self.key(n)
        if how == "equal":
            want = key if key in self.model else None
            assert self.ds.get(key) == self.model.get(key)
            assert (key in self.ds) == (key in self.model)
            call = lambda: self.ds.read(key)  # noqa: E731
        else:
            want = self.first_ge(self.model, key)
            call = lambda: self.ds.read(key, gteq=True)  # noqa: E731
        if want is None:
            with pytest.raises(ksds.RecordNotFoundError):
                call()
        else:
            assert call() == self.model[want]

    @rule(n=st.integers(0, 10**6), plen=st.integers(0, 255), gteq=st.booleans())
    def read_generic(self, n: int, plen: int, gteq: bool) -> None:
        k = self.d.key_length
        prefix = self.key(n)[: 1 + plen % k]
        want = self.first_ge(self.model, prefix.ljust(k, b"\0"))
        if want is not None and not gteq and not want.startswith(prefix):
            want = None
        if want is None:
            with pytest.raises(ksds.RecordNotFoundError):
                self.ds.read(prefix, generic=True, gteq=gteq)
        else:
            assert self.ds.read(prefix, generic=True, gteq=gteq) == self.model[want]

    @rule(n=st.integers(0, 10**6), v=st.integers(0, 255))
    def rewrite(self, n: int, v: int) -> None:
        key = self.key(n)
        self.do_rewrite(key, v)
        assert self.ds.get(key) == self.model.get(key)

    @rule(n=st.integers(0, 10**6), v=st.integers(0, 255))
    def put(self, n: int, v: int) -> None:
        """Upsert: a WRITE of a new key, a REWRITE of an existing one, in one request."""
        key = self.key(n)
        rec = self.record(key, v)
        new = key not in self.model
        append = not self.model or key > self.model.keys()[-1]
        assert self.ds.put(rec) is new
        self.model[key] = rec
        if not new:
            self.counts["REC-UPDATED"] += 1
        elif not append:
            self.counts["REC-INSERTED"] += 1
        assert self.ds[key] == rec

    @rule(n=st.integers(0, 10**6))
    def getitem(self, n: int) -> None:
        key = self.key(n)
        if key in self.model:
            assert self.ds[key] == self.model[key]
        else:
            with pytest.raises(KeyError):
                self.ds[key]

    @rule()
    def keys_and_items(self) -> None:
        assert list(self.ds.keys()) == list(self.model.keys())
        assert list(self.ds.items()) == list(self.model.items())

    @rule(
        n=st.integers(0, 10**6),
        stop=st.integers(0, 10**6),
        gteq=st.booleans(),
        backward=st.booleans(),
        change=st.integers(-1, 20),
        v=st.integers(0, 255),
    )
    def browse_stop(self, n: int, stop: int, gteq: bool, backward: bool, change: int, v: int) -> None:
        """A browse with an exclusive end key, with a write on either side of the end while it runs."""
        start, end = self.key(n), self.key(stop)
        m = self.model
        if backward:
            want = [k for k in reversed(m.keys()) if k <= start and k > end]
        else:
            want = [k for k in m.keys() if k >= start and k < end]
        b = self.ds.browse(start, backward=backward, stop=end)
        got = []
        for rec in b:
            got.append(self.ds.key_of(rec))
            if len(got) == change:
                # a write just past the end key and one just inside (if free): the browse must see the second only
                j = self.keys.index(end)
                for kk in {self.keys[max(0, j - 1)], self.keys[min(len(self.keys) - 1, j + 1)], end}:
                    if kk not in m:
                        self.do_write(kk, v)
                        inside = kk > got[-1] and kk < end if not backward else kk < got[-1] and kk > end
                        if inside:
                            want.append(kk)
                            want.sort(reverse=backward)
        assert got == want

    @rule(n=st.integers(0, 10**6), plen=st.integers(0, 255), backward=st.booleans())
    def browse_prefix_only(self, n: int, plen: int, backward: bool) -> None:
        prefix = self.key(n)[: 1 + plen % self.d.key_length]
        want = [r for k, r in self.model.items() if k.startswith(prefix)]
        if backward:
            want.reverse()
        try:
            got = list(self.ds.browse(prefix, generic=True, prefix_only=True, backward=backward))
        except ksds.RecordNotFoundError:
            got = []  # gteq=True is the default: no record at or after the prefix at all
        assert got == want

    @rule(n=st.integers(0, 10**6))
    def erase(self, n: int) -> None:
        key = self.key(n)
        self.do_erase(key)
        with pytest.raises(ksds.RecordNotFoundError):
            self.ds.read(key)

    @precondition(lambda self: len(self.model) > 0)
    @rule(n=st.integers(0, 10**6), count=st.integers(1, 400), backward=st.booleans())
    def erase_run(self, n: int, count: int, backward: bool) -> None:
        """Erase up to ``count`` neighbouring records: empties CIs and CAs, so the index shrinks."""
        keys = list(self.model.keys())
        start = n % len(keys)
        victims = keys[max(0, start - count + 1) : start + 1] if backward else keys[start : start + count]
        for key in victims:
            self.do_erase(key)

    @precondition(lambda self: len(self.model) > 2 * self.records_per_ca)
    @rule(keep=st.integers(0, 3), backward=st.booleans())
    def erase_nearly_all(self, keep: int, backward: bool) -> None:
        """Erase all records but ``keep``: CAs are freed and the index goes back down to one or two levels."""
        keys = list(self.model.keys())
        victims = keys[: len(keys) - keep] if backward else keys[keep:]
        for key in victims:
            self.do_erase(key)

    # --- browses ------------------------------------------------------------------------------------------

    def step(self, b: dict) -> bool:
        """One READNEXT / READPREV of browse ``b`` against the model; False once it has reached its end."""
        if b["last"] is None:
            key, _, generic = b["start"]
            want = self.start_key(key, True, generic, b["backward"])
        elif b["backward"]:
            want = self.last_lt(self.model, b["last"])
        else:
            want = self.first_gt(self.model, b["last"])
        if want is None:
            with pytest.raises(StopIteration):
                next(b["it"])
            return False
        got = next(b["it"], None)
        if got != self.model[want]:
            key, gteq, generic = b["start"]
            got_key = None if got is None else self.ds.key_of(got).hex()
            raise AssertionError(
                f"browse {'backward' if b['backward'] else 'forward'} started at "
                f"{'first/last' if key is None else key.hex()} (gteq={gteq}, generic={generic}), "
                f"last returned {None if b['last'] is None else b['last'].hex()}: "
                f"got key {got_key}, expected key {want.hex()}"
                + ("" if got is None or got_key != want.hex() else " (same key, other contents)")
            )
        b["last"] = want
        return True

    def start_browse(self, how: str, n: int, plen: int, backward: bool) -> dict | None:
        key, gteq, generic = self.start_args(how, n, plen)
        try:
            self.start_key(key, gteq, generic, backward)
        except ksds.RecordNotFoundError:
            with pytest.raises(ksds.RecordNotFoundError):
                self.ds.browse(key, gteq=gteq, generic=generic, backward=backward)
            return None
        it = self.ds.browse(key, gteq=gteq, generic=generic, backward=backward)
        return {"it": it, "backward": backward, "last": None, "start": (key, gteq, generic)}

    HOW = st.sampled_from(["end", "equal", "gteq", "generic", "generic-gteq"])

    @rule(how=HOW, n=st.integers(0, 10**6), plen=st.integers(0, 255), backward=st.booleans(), steps=st.integers(0, 40))
    def browse(self, how: str, n: int, plen: int, backward: bool, steps: int) -> None:
        """A browse run for a bounded number of steps and ended."""
        b = self.start_browse(how, n, plen, backward)
        if b is None:
            return
        for _ in range(steps):
            if not self.step(b):
                break
        b["it"].close()

    @rule(how=HOW, n=st.integers(0, 10**6), plen=st.integers(0, 255), backward=st.booleans(), steps=st.integers(0, 5))
    def browse_open(self, how: str, n: int, plen: int, backward: bool, steps: int) -> None:
        """Open a browse that stays open across later requests (at most four at once)."""
        b = self.start_browse(how, n, plen, backward)
        if b is None:
            return
        for _ in range(steps):
            if not self.step(b):
                b["it"].close()
                return
        self.browses.append(b)
        if len(self.browses) > 4:
            self.browses.pop(0)["it"].close()

    @rule(
        how=HOW,
        n=st.integers(0, 10**6),
        plen=st.integers(0, 255),
        backward=st.booleans(),
        near=st.lists(st.tuples(st.booleans(), st.integers(-6, 6), st.integers(0, 255)), min_size=1, max_size=8),
        steps=st.integers(1, 10),
    )
    def browse_after_changes(
        self, how: str, n: int, plen: int, backward: bool, near: list[tuple[bool, int, int]], steps: int
    ) -> None:
        """Start a browse, then write and erase records around its start before its first step."""
        b = self.start_browse(how, n, plen, backward)
        if b is None:
            return
        base = n % len(self.keys)
        for write, delta, v in near:
            key = self.keys[(base + delta) % len(self.keys)]
            if write:
                self.do_write(key, v)
            else:
                self.do_erase(key)
        for _ in range(steps):
            if not self.step(b):
                break
        b["it"].close()

    @precondition(lambda self: self.browses)
    @rule(i=st.integers(0, 3), steps=st.integers(1, 12))
    def browse_step(self, i: int, steps: int) -> None:
        b = self.browses[i % len(self.browses)]
        for _ in range(steps):
            if not self.step(b):
                self.browses.remove(b)
                return

    @precondition(lambda self: self.browses)
    @rule(i=st.integers(0, 3), how=HOW, n=st.integers(0, 10**6), plen=st.integers(0, 255), backward=st.booleans())
    def browse_reposition(self, i: int, how: str, n: int, plen: int, backward: bool) -> None:
        b = self.browses[i % len(self.browses)]
        key, gteq, generic = self.start_args(how, n, plen)
        try:
            self.start_key(key, gteq, generic, backward)
        except ksds.RecordNotFoundError:
            with pytest.raises(ksds.RecordNotFoundError):
                b["it"].reposition(key, gteq=gteq, generic=generic, backward=backward)
            self.browses.remove(b)  # a failed RESETBR leaves no valid position: end the browse
            b["it"].close()
            return
        b["it"].reposition(key, gteq=gteq, generic=generic, backward=backward)
        b.update(backward=backward, last=None, start=(key, gteq, generic))
        assert b["it"].backward == backward

    @precondition(lambda self: self.browses)
    @rule(i=st.integers(0, 3))
    def browse_close(self, i: int) -> None:
        b = self.browses.pop(i % len(self.browses))
        b["it"].close()
        with pytest.raises(StopIteration):
            next(b["it"])

    @precondition(lambda self: len(self.model) > 0)
    @rule(backward=st.booleans(), erase_every=st.integers(1, 3), v=st.integers(0, 255))
    def browse_while_changing(self, backward: bool, erase_every: int, v: int) -> None:
        """One pass over the data set that erases every ``erase_every``-th record it returns and writes
        new records ahead of and behind itself as it goes."""
        b = {"it": self.ds.browse(backward=backward), "backward": backward, "last": None, "start": (None, True, False)}
        j = 0
        while self.step(b):
            j += 1
            last = b["last"]
            if j % erase_every == 0:
                self.do_erase(last)
            if j % 5 == 0:
                i = self.keys.index(last)
                for key in (self.keys[(i + 3) % len(self.keys)], self.keys[(i - 2) % len(self.keys)]):
                    self.do_write(key, v)
            assert j <= 4 * len(self.keys), "a browse that never ends"

    # --- batches ------------------------------------------------------------------------------------------

    OPS = st.lists(
        st.tuples(st.sampled_from(["write", "rewrite", "erase", "read"]), st.integers(0, 10**6), st.integers(0, 255)),
        min_size=1,
        max_size=15,
    )

    def apply_ops(self, ops: list[tuple[str, int, int]]) -> tuple[SortedDict, dict]:
        """Run ``ops`` on the open data set (inside a batch), checking each against a copy of the model;
        returns the model and counters as they are if the batch commits."""
        model = self.model.copy()
        counts = dict(self.counts)
        for op, n, v in ops:
            key = self.key(n)
            if op == "write":
                self.do_write(key, v, model, counts)
            elif op == "rewrite":
                self.do_rewrite(key, v, model, counts)
            elif op == "erase":
                self.do_erase(key, model, counts)
            else:
                assert self.ds.get(key) == model.get(key)
            assert len(self.ds) == len(model)
        return model, counts

    @rule(ops=OPS)
    def batch(self, ops: list[tuple[str, int, int]]) -> None:
        with self.ds.batch():
            pending = self.apply_ops(ops)
        self.model, self.counts = pending
        self.check_examine()

    @rule(ops=OPS)
    def batch_rolled_back(self, ops: list[tuple[str, int, int]]) -> None:
        before = len(self.ds)
        with pytest.raises(BoomError):
            with self.ds.batch():
                self.apply_ops(ops)
                raise BoomError("roll it back")
        assert len(self.ds) == before == len(self.model)
        for _, n, _ in ops:
            key = self.key(n)
            assert self.ds.get(key) == self.model.get(key)
        self.check_all()

    # --- close, reopen, crash -----------------------------------------------------------------------------

    @rule()
    def close_reopen(self) -> None:
        self.ds.close()
        self.drop_browses_closed()
        with pytest.raises(ksds.DatasetClosedError):
            self.ds.read(self.keys[0])
        self.check_examine()
        self.ds = self.open()
        assert self.ds.recovery is None
        self.check_all()

    @rule(n=st.integers(0, 10**6))
    def reopen_read_only(self, n: int) -> None:
        self.ds.close()
        self.drop_browses_closed()
        self.ds = self.open("r")
        assert len(self.ds) == len(self.model)
        key = self.key(n)
        assert self.ds.get(key) == self.model.get(key)
        with pytest.raises(ksds.ReadOnlyError):
            self.ds.write(self.record(key, 0))
        with pytest.raises(ksds.ReadOnlyError):
            self.ds.rewrite(self.record(key, 0))
        with pytest.raises(ksds.ReadOnlyError):
            self.ds.erase(key)
        self.ds.close()
        self.ds = self.open()

    @rule(read_only=st.booleans())
    def crash_reopen(self, read_only: bool) -> None:
        """A crash (no close): every acknowledged request is there after recovery (by a reader or an updater)."""
        self.ds._abandon()
        self.drop_browses_closed()
        self.check_examine()
        self.ds = self.open("r" if read_only else "rw")
        assert self.ds.recovery is not None
        if read_only:
            self.check_all()
            self.ds.close()
            self.ds = self.open()
        self.check_all()
        assert len(self.ds) == len(self.model)

    @rule(ops=OPS)
    def crash_in_batch(self, ops: list[tuple[str, int, int]]) -> None:
        """A crash with a batch open: none of the batch survives."""
        cm = self.ds.batch()
        cm.__enter__()
        self.apply_ops(ops)
        self.ds._abandon()
        self.drop_browses_closed()
        self.ds = self.open()
        self.check_all()
        self.check_examine()

    # --- invariants ---------------------------------------------------------------------------------------

    @invariant()
    def length_and_levels(self) -> None:
        if self.ds is None:
            return
        assert len(self.ds) == len(self.model)
        s = self.ds.stats()
        assert s["REC-TOTAL"] == len(self.model)
        assert {k: s[k] for k in self.counts} == self.counts
        levels = s["LEVELS"]
        cov = self.coverage
        if levels > self.levels:
            cov["levels up"] += 1
        elif levels < self.levels:
            cov["levels down"] += 1
        self.levels = levels
        cov["max levels"] = max(cov["max levels"], levels)

    def teardown(self) -> None:
        failed = sys.exc_info()[0] is not None  # a step failed: only clean up, keep its error
        try:
            if not failed and self.ds is not None and not self.ds.closed:
                self.check_all()
                s = self.ds.stats()
                self.coverage["SPLITS-CI"] += s["SPLITS-CI"]
                self.coverage["SPLITS-CA"] += s["SPLITS-CA"]
                self.ds.close()
                self.check_examine()
                # erasing every record frees every CA but one and takes the index back to one level
                self.ds = self.open()
                keys = list(self.model.keys())
                for key in keys[1::2] + keys[::2]:
                    self.do_erase(key)
                self.length_and_levels()
                s = self.ds.stats()
                assert (s["LEVELS"], s["CAS"], s["DATA-CIS"], len(self.ds)) == (1, 1, 1, 0), s
                assert list(self.ds.browse()) == []
                self.ds.close()
                self.check_examine()
        finally:
            if self.ds is not None:
                self.ds.close()
            shutil.rmtree(self.dir, ignore_errors=True)


def machine_for(d: Defn) -> type[KsdsMachine]:
    coverage = {"SPLITS-CI": 0, "SPLITS-CA": 0, "levels up": 0, "levels down": 0, "max levels": 0}
    return type(
        f"KsdsMachine_{d.name}", (KsdsMachine,), {"d": d, "keys": key_space(d.key_length), "coverage": coverage}
    )


#: shrinking a failing run of this machine takes minutes; KSDS_SHRINK=1 turns it on when reproducing a failure
SETTINGS = settings(
    phases=[Phase.explicit, Phase.reuse, Phase.generate] + ([Phase.shrink] if os.environ.get("KSDS_SHRINK") else []),
    max_examples=30,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)


@pytest.mark.parametrize("d", DEFINITIONS, ids=[d.name for d in DEFINITIONS])
def test_model(d: Defn) -> None:
    machine = machine_for(d)
    run_state_machine_as_test(machine, settings=SETTINGS)
    cov = machine.coverage
    # the definitions are small enough that every kind of split and index change happens
    assert cov["SPLITS-CI"] > 0, cov
    assert cov["SPLITS-CA"] > 0, cov
    assert cov["levels up"] > 0 and cov["levels down"] > 0, cov
    if d.key_length >= 100:  # 4 entries per index CI
        assert cov["max levels"] >= 3, cov
