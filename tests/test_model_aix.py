"""Model-based test of alternate indexes: random request sequences against a plain model of the base and its AIXes.

A hypothesis state machine drives WRITE, REWRITE (alternate keys that change, and that stay), ERASE, batches that
commit and that roll back, reads through paths (EQUAL, GENERIC, GTEQ; the "02" duplicate status), counts,
browses by path both ways from every kind of start, BLDINDEX of a NOUPGRADE AIX, DELETE + DEFINE of an AIX,
close + reopen, and crashes (``_abandon``) + recovery, against a ``SortedDict`` of the base. Each definition has
several AIXes at once: non-unique ones (alternate keys from 5 values: long runs of duplicates), a unique one
(keys from 1,024 values: duplicates refused now and then), one that overlaps the prime key, and a NOUPGRADE one (stale
after the first change, current again after BLDINDEX).

Checked after every step that changes something: every upgrade AIX holds exactly one record per base record,
in (alternate key, prime key) order, both directions; the NOUPGRADE one reads what its last build saw, less what
no longer matches; the catalog's record counts; EXAMINE at reopen, crash and teardown.
"""

from __future__ import annotations

import itertools
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test
from sortedcontainers import SortedDict

import ksds

TMP_ROOT = os.environ.get("KSDS_TEST_TMP") or None


@dataclass(frozen=True)
class Aix:
    name: str
    offset: int
    length: int
    source: str  # "v": 5 values (duplicates), "u": 40 values
    unique: bool = False
    upgrade: bool = True


@dataclass(frozen=True)
class Defn:
    name: str
    key_length: int
    key_offset: int
    record_length: int
    ci_size: int
    cis_per_ca: int
    aixes: tuple[Aix, ...]
    freespace: tuple[int, int] = (0, 0)


DEFINITIONS = [
    Defn(
        "k4", 4, 0, 40, 512, 3,
        (
            Aix("BYCOLOR", 4, 1, "v"),
            Aix("BYCODE", 5, 3, "u", unique=True),
            Aix("OVERLAP", 2, 4, "v"),  # the prime key's last 2 bytes, then the color and the code's first byte
            Aix("STALE", 4, 2, "v", upgrade=False),
        ),
    ),
    Defn(
        "k8-off10", 8, 10, 64, 512, 2,
        (
            Aix("NAME", 0, 6, "v"),
            Aix("ID", 20, 5, "u", unique=True),
        ),
        freespace=(20, 30),
    ),
]

KEY_BYTES = bytes([0x00, 0x01, 0x41, 0x7F, 0xC1, 0xFE, 0xFF])


def key_space(k: int) -> list[bytes]:
    out = set()
    base = len(KEY_BYTES)
    for n in range(base**4):
        digits = [KEY_BYTES[(n // base**i) % base] for i in range(4)]
        out.add(bytes(digits).rjust(k, bytes([digits[0]])))
    return sorted(out)


class AixMachine(RuleBasedStateMachine):
    d: Defn
    keys: list[bytes]
    coverage: dict[str, int]

    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp(prefix="ksds-aix-model-", dir=TMP_ROOT)
        self.path = os.path.join(self.dir, "aix.ksds")
        self.model: SortedDict = SortedDict()
        self.ds: ksds.Dataset | None = None
        #: the NOUPGRADE AIXes: the (alternate key, prime key) pairs their last build saw, and whether current
        self.snapshots: dict[str, set[tuple[bytes, bytes]]] = {}
        self.current: dict[str, bool] = {}
        self.defined = {a.name: a for a in self.d.aixes}

    # --- helpers ------------------------------------------------------------------------------------------

    def open(self, mode: str = "rw") -> ksds.Dataset:
        return ksds.open(self.path, mode)

    def key(self, n: int) -> bytes:
        return self.keys[n % len(self.keys)]

    def record(self, key: bytes, v: int, u: int) -> bytes:
        d = self.d
        rec = bytearray(bytes([(v ^ 0x5A) & 0xFF]) * d.record_length)
        for a in d.aixes:
            if a.source == "v":
                val = bytes([0x40 + v % 5]) * a.length
            else:  # 1,024 values: the unique AIX refuses some writes, and still lets the base grow
                val = ((u % 32) << 8 | v % 32).to_bytes(a.length, "big")
            rec[a.offset : a.offset + a.length] = val
        rec[d.key_offset : d.key_offset + d.key_length] = key
        return bytes(rec)

    def alt(self, a: Aix, rec: bytes) -> bytes:
        return rec[a.offset : a.offset + a.length]

    def prime(self, rec: bytes) -> bytes:
        return rec[self.d.key_offset : self.d.key_offset + self.d.key_length]

    def expected(self, a: Aix, model: SortedDict | None = None) -> list[bytes]:
        """The base records path ``a`` returns, in its order."""
        model = self.model if model is None else model
        if a.upgrade:
            pairs = sorted((self.alt(a, rec), k) for k, rec in model.items())
        else:
            pairs = sorted(
                (alt, k)
                for alt, k in self.snapshots[a.name]
                if k in model and self.alt(a, model[k]) == alt
            )
        return [model[k] for _, k in pairs]

    def conflicts(self, rec: bytes, old: bytes | None, model: SortedDict) -> bool:
        """Whether ``rec`` would give a unique upgrade AIX a second record with one alternate key."""
        for a in self.d.aixes:
            if not (a.unique and a.upgrade) or a.name not in self.defined:
                continue
            alt = self.alt(a, rec)
            if old is not None and self.alt(a, old) == alt:
                continue
            if any(self.alt(a, r) == alt for r in model.values()):
                return True
        return False

    def changed(self) -> None:
        for a in self.d.aixes:
            if not a.upgrade and a.name in self.defined:
                self.current[a.name] = False

    def do_write(self, key: bytes, v: int, u: int, model: SortedDict | None = None) -> None:
        model = self.model if model is None else model
        rec = self.record(key, v, u)
        if key in model or self.conflicts(rec, None, model):
            with pytest.raises(ksds.DuplicateKeyError):
                self.ds.write(rec)
            self.coverage["duplicates"] += key not in model
            return
        self.ds.write(rec)
        model[key] = rec
        self.changed()

    def do_rewrite(self, key: bytes, v: int, u: int, model: SortedDict | None = None) -> None:
        model = self.model if model is None else model
        rec = self.record(key, v, u)
        if key not in model:
            with pytest.raises(ksds.RecordNotFoundError):
                self.ds.rewrite(rec)
            return
        if self.conflicts(rec, model[key], model):
            with pytest.raises(ksds.DuplicateKeyError):
                self.ds.rewrite(rec)
            self.coverage["duplicates"] += 1
            return
        if any(self.alt(a, rec) != self.alt(a, model[key]) for a in self.d.aixes):
            self.coverage["alternate keys changed"] += 1
        self.ds.rewrite(rec)
        model[key] = rec
        self.changed()

    def do_erase(self, key: bytes, model: SortedDict | None = None) -> None:
        model = self.model if model is None else model
        if key not in model:
            with pytest.raises(ksds.RecordNotFoundError):
                self.ds.erase(key)
            return
        self.ds.erase(key)
        del model[key]
        self.changed()

    def apply_ops(self, ops: list[tuple[str, int, int, int]], model: SortedDict) -> None:
        """Writes ("w"), rewrites ("r") and erases ("e"), each checked against ``model``."""
        for op, n, v, u in ops:
            key = model.keys()[n % len(model)] if model and op != "w" else self.key(n)
            if op == "w":
                self.do_write(key, v, u, model)
            elif op == "r":
                self.do_rewrite(key, v, u, model)
            else:
                self.do_erase(key, model)

    def check_paths(self) -> None:
        assert self.ds is not None
        info = self.ds.aixes()
        assert set(info) == set(self.defined)
        for name, a in self.defined.items():
            want = self.expected(a)
            p = self.ds.aix(name)
            assert list(p.browse()) == want, name
            assert list(p.browse(backward=True)) == want[::-1], name
            assert info[name]["unique"] == a.unique and info[name]["upgrade"] == a.upgrade
            if a.upgrade:
                assert info[name]["records"] == len(self.model), (name, info[name])
                assert info[name]["current"]
            else:
                assert info[name]["current"] == self.current[name], name

    def check_examine(self) -> None:
        report = ksds.examine(self.path)
        assert report.sound, [str(f) for f in report.findings]
        assert report.records == len(self.model)

    # --- setup --------------------------------------------------------------------------------------------

    @initialize(n=st.integers(0, 60), seed=st.integers(0, 1000))
    def define(self, n: int, seed: int) -> None:
        d = self.d
        ksds.define(
            self.path, key_length=d.key_length, key_offset=d.key_offset, record_length=d.record_length,
            ci_size=d.ci_size, cis_per_ca=d.cis_per_ca, freespace=d.freespace,
        )
        self.ds = self.open()
        # some records before the AIXes are defined: DEFINE builds them from the base
        for i in range(n):
            key = self.key(seed * 7 + i * 13)
            if key not in self.model:
                rec = self.record(key, seed + i, seed * 3 + i)
                if not self.conflicts(rec, None, self.model):
                    self.ds.write(rec)
                    self.model[key] = rec
        self.ds.close()
        for a in d.aixes:
            ksds.define_aix(
                self.path, a.name, key_length=a.length, key_offset=a.offset, unique=a.unique, upgrade=a.upgrade,
                freespace=d.freespace,
            )
            if not a.upgrade:
                self.snapshots[a.name] = {(self.alt(a, r), k) for k, r in self.model.items()}
                self.current[a.name] = True
        self.ds = self.open()
        self.check_paths()

    # --- changes ------------------------------------------------------------------------------------------

    @rule(n=st.integers(0, 10**6), v=st.integers(0, 255), u=st.integers(0, 255))
    def write(self, n: int, v: int, u: int) -> None:
        self.do_write(self.key(n), v, u)

    @rule(n=st.integers(0, 10**6), count=st.integers(1, 150), v=st.integers(0, 255), u=st.integers(0, 255))
    def write_run(self, n: int, count: int, v: int, u: int) -> None:
        for i in range(count):
            self.do_write(self.key(n + 7 * i), (v + i) & 0xFF, u + 3 * i)

    @rule(n=st.integers(0, 10**6), v=st.integers(0, 255), u=st.integers(0, 255))
    def rewrite(self, n: int, v: int, u: int) -> None:
        if self.model and n % 4:
            key = self.model.keys()[n % len(self.model)]
        else:
            key = self.key(n)
        self.do_rewrite(key, v, u)

    @rule(n=st.integers(0, 10**6))
    def erase(self, n: int) -> None:
        key = self.model.keys()[n % len(self.model)] if self.model and n % 3 else self.key(n)
        self.do_erase(key)

    @rule(n=st.integers(0, 10**6), count=st.integers(1, 80))
    def erase_run(self, n: int, count: int) -> None:
        if not self.model:
            return
        keys = list(self.model.keys())
        i = n % len(keys)
        for key in keys[i : i + count]:
            self.do_erase(key)

    @rule(
        ops=st.lists(st.tuples(st.sampled_from(["w", "r", "e"]), st.integers(0, 10**6), st.integers(0, 255),
                               st.integers(0, 255)), max_size=25),
        commit=st.booleans(),
    )
    def batch(self, ops: list[tuple[str, int, int, int]], commit: bool) -> None:
        model = self.model.copy()
        current = dict(self.current)
        try:
            with self.ds.batch():
                self.apply_ops(ops, model)
                if not commit:
                    raise _Rollback
        except _Rollback:
            self.current = current
            self.coverage["rollbacks"] += 1
        else:
            self.model = model
        self.check_paths()

    # --- paths --------------------------------------------------------------------------------------------

    def pick_alt(self, a: Aix, n: int, v: int, u: int) -> bytes:
        if self.model and n % 3:
            return self.alt(a, self.model.values()[n % len(self.model)])
        return self.alt(a, self.record(self.key(n), v, u))

    @rule(i=st.integers(0, 7), n=st.integers(0, 10**6), v=st.integers(0, 255), u=st.integers(0, 255),
          how=st.sampled_from(["equal", "generic", "gteq", "generic-gteq"]), plen=st.integers(0, 10))
    def path_read(self, i: int, n: int, v: int, u: int, how: str, plen: int) -> None:
        names = sorted(self.defined)
        a = self.defined[names[i % len(names)]]
        key = self.pick_alt(a, n, v, u)
        generic = how.startswith("generic")
        gteq = how.endswith("gteq")
        if generic:
            key = key[: 1 + plen % a.length]
        want = self.expected(a)
        alts = [self.alt(a, r) for r in want]
        if generic and not gteq:
            hits = [j for j, x in enumerate(alts) if x.startswith(key)]
        elif gteq:
            probe = key.ljust(a.length, b"\0")
            hits = [j for j, x in enumerate(alts) if x >= probe]
        else:
            hits = [j for j, x in enumerate(alts) if x == key]
        p = self.ds.aix(a.name)
        if not hits:
            with pytest.raises(ksds.RecordNotFoundError):
                p.read(key, generic=generic, gteq=gteq)
            return
        got = p.read(key, generic=generic, gteq=gteq)
        j = hits[0]
        assert got == want[j], (a.name, key, how)
        dup = j + 1 < len(alts) and alts[j + 1] == alts[j]
        assert p.status == ("02" if dup else "00"), (a.name, key, how)
        self.coverage["02"] += dup
        if not generic and not gteq:
            assert p.count(key) == len(hits)

    @rule(i=st.integers(0, 7), n=st.integers(0, 10**6), v=st.integers(0, 255), u=st.integers(0, 255),
          how=st.sampled_from(["end", "equal", "gteq", "generic"]), plen=st.integers(0, 10), backward=st.booleans(),
          take=st.integers(0, 200))
    def path_browse(self, i: int, n: int, v: int, u: int, how: str, plen: int, backward: bool, take: int) -> None:
        names = sorted(self.defined)
        a = self.defined[names[i % len(names)]]
        want = self.expected(a)
        alts = [self.alt(a, r) for r in want]
        p = self.ds.aix(a.name)
        if how == "end":
            key, gteq, generic = None, True, False
            start = len(want) - 1 if backward else 0
        else:
            key = self.pick_alt(a, n, v, u)
            generic = how == "generic"
            if generic:
                key = key[: 1 + plen % a.length]
            gteq = how != "equal" and not generic
            if backward:
                probe = key.ljust(a.length, b"\xff")
                ok = [j for j, x in enumerate(alts) if x <= probe]
                start = ok[-1] if ok else -1
            else:
                probe = key.ljust(a.length, b"\0")
                ok = [j for j, x in enumerate(alts) if x >= probe]
                start = ok[0] if ok else len(want)
            exact = 0 <= start < len(want) and (alts[start].startswith(key) if generic else alts[start] == key)
            if not gteq and not exact:
                with pytest.raises(ksds.RecordNotFoundError):
                    next(iter(p.browse(key, gteq=gteq, generic=generic, backward=backward)))
                return
        rest = want[: start + 1][::-1] if backward else want[start:]
        it = p.browse(key, gteq=gteq, generic=generic, backward=backward)
        got = list(itertools.islice(it, take))
        assert got == rest[:take], (a.name, key, how, backward)

    @rule(i=st.integers(0, 7))
    def bldindex(self, i: int) -> None:
        names = sorted(self.defined)
        a = self.defined[names[i % len(names)]]
        self.ds.close()
        ksds.build_aix(self.path, a.name)
        if not a.upgrade:
            self.snapshots[a.name] = {(self.alt(a, r), k) for k, r in self.model.items()}
            self.current[a.name] = True
        self.ds = self.open()
        self.check_paths()

    @rule(i=st.integers(0, 7))
    def delete_and_define_again(self, i: int) -> None:
        names = sorted(self.defined)
        a = self.defined[names[i % len(names)]]
        self.ds.close()
        ksds.delete_aix(self.path, a.name)
        del self.defined[a.name]
        self.ds = self.open()
        self.check_paths()
        with pytest.raises(ksds.KsdsError):
            self.ds.aix(a.name).read(b"\0" * a.length)
        if a.unique and self.model:
            # a record that shares the alternate key of another, now that no unique AIX refuses it
            first = self.model.values()[0]
            key = next((k for k in self.keys if k not in self.model), None)
            if key is not None:
                rec = bytearray(first)
                rec[self.d.key_offset : self.d.key_offset + self.d.key_length] = key
                if not self.conflicts(bytes(rec), None, self.model):
                    self.ds.write(bytes(rec))
                    self.model[key] = bytes(rec)
                    self.changed()
        self.ds.close()
        if a.unique and any(
            self.alt(a, r) == self.alt(a, s) for k, r in self.model.items() for j, s in self.model.items() if k < j
        ):
            with pytest.raises(ksds.DuplicateKeyError):
                ksds.define_aix(self.path, a.name, key_length=a.length, key_offset=a.offset, unique=True)
            with ksds.open(self.path, "r") as ds:
                assert a.name not in ds.aixes()
            self.coverage["define refused"] += 1
        else:
            ksds.define_aix(
                self.path, a.name, key_length=a.length, key_offset=a.offset, unique=a.unique, upgrade=a.upgrade
            )
            self.defined[a.name] = a
            if not a.upgrade:
                self.snapshots[a.name] = {(self.alt(a, r), k) for k, r in self.model.items()}
                self.current[a.name] = True
        self.ds = self.open()
        self.check_paths()

    # --- reopen and crashes -------------------------------------------------------------------------------

    @rule()
    def reopen(self) -> None:
        self.ds.close()
        self.check_examine()
        self.ds = self.open()
        self.check_paths()

    @rule(
        ops=st.lists(st.tuples(st.sampled_from(["w", "r", "e"]), st.integers(0, 10**6), st.integers(0, 255),
                               st.integers(0, 255)), max_size=15),
        in_batch=st.booleans(),
    )
    def crash(self, ops: list[tuple[str, int, int, int]], in_batch: bool) -> None:
        """A crash after some requests (acknowledged: kept) or inside a batch (none of it kept)."""
        model = self.model.copy() if in_batch else self.model
        current = dict(self.current)
        cm = self.ds.batch() if in_batch else None
        if cm is not None:
            cm.__enter__()  # kept in a local: a context manager collected would end the batch
        self.apply_ops(ops, model)
        self.ds._abandon()
        if cm is not None:  # ended here, in this thread (not by the garbage collector in whichever thread runs it)
            with pytest.raises(ksds.DatasetClosedError):
                cm.__exit__(None, None, None)
        if in_batch:
            self.current = current
        self.check_examine()
        self.ds = self.open()
        self.check_paths()

    @invariant()
    def length(self) -> None:
        if self.ds is not None:
            assert len(self.ds) == len(self.model)

    def teardown(self) -> None:
        failed = sys.exc_info()[0] is not None
        try:
            if not failed and self.ds is not None and not self.ds.closed:
                self.check_paths()
                for name in self.defined:
                    s = self.ds.aixes()[name]
                    self.coverage["SPLITS-CI"] += s["splits_ci"]
                    self.coverage["SPLITS-CA"] += s["splits_ca"]
                    self.coverage["levels"] = max(self.coverage["levels"], s["levels"])
                self.ds.close()
                self.check_examine()
        finally:
            if self.ds is not None:
                self.ds.close()
            shutil.rmtree(self.dir, ignore_errors=True)


class _Rollback(Exception):
    pass


def machine_for(d: Defn) -> type[AixMachine]:
    coverage = {
        "duplicates": 0, "alternate keys changed": 0, "02": 0, "rollbacks": 0, "define refused": 0,
        "SPLITS-CI": 0, "SPLITS-CA": 0, "levels": 0,
    }
    return type(f"AixMachine_{d.name}", (AixMachine,), {"d": d, "keys": key_space(d.key_length), "coverage": coverage})


SETTINGS = settings(
    phases=[Phase.explicit, Phase.reuse, Phase.generate] + ([Phase.shrink] if os.environ.get("KSDS_SHRINK") else []),
    max_examples=40,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
)


@pytest.mark.parametrize("d", DEFINITIONS, ids=[d.name for d in DEFINITIONS])
def test_model_aix(d: Defn) -> None:
    machine = machine_for(d)
    run_state_machine_as_test(machine, settings=SETTINGS)
    cov = machine.coverage
    assert cov["duplicates"] > 0, cov
    assert cov["alternate keys changed"] > 0, cov
    assert cov["02"] > 0, cov
    assert cov["rollbacks"] > 0, cov
    assert cov["SPLITS-CI"] > 0 and cov["SPLITS-CA"] > 0 and cov["levels"] >= 2, cov
    assert cov["define refused"] > 0, cov
