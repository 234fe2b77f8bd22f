"""EXAMINE: the full integrity check of a data set, without opening it (so it works on damaged ones).

It reads the file CI by CI (and, if the data set was not closed cleanly, the committed transactions of its log,
as recovery would replay them: :class:`ksds.wal_view.View`) and reports each finding with the CI it is about:

* INDEXTEST -- every index CI's checksum, level, keys in order and inside the range its parent gives it, every
  pointer inside the data set and used once, sequence-set pointers inside their CA, the level count;
* DATATEST -- every data CI's checksum, its records in key order and inside the CI's key range, records in order
  across CIs; the free index CI and free CA lists; the statistics against what was counted.

Message numbers follow IDCAMS's where one fits (IDC11733I key sequence error, ...).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .ci import Codec, DataCI, FreeCI, IndexCI, codec_for
from .errors import CorruptionError, DamagedCIError, KsdsError
from .format import CI_FREE_CA, CI_FREE_INDEX, AixMeta, State
from .pager import data_set_path
from .wal_view import View, in_use


@dataclass(frozen=True)
class Finding:
    """One thing EXAMINE found. ``severity`` is "error" (the data set is not sound) or "warning"."""

    severity: str
    code: str
    ci: int | None
    message: str

    def __str__(self) -> str:
        where = f"CI {self.ci}: " if self.ci is not None else ""
        return f"{self.code} {self.severity.upper()} {where}{self.message}"


@dataclass
class ExamineReport:
    path: str
    findings: list[Finding] = field(default_factory=list)
    records: int = 0
    data_cis: int = 0
    index_cis: int = 0
    levels: int = 0
    needs_recovery: bool = False
    log_transactions: int = 0

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    @property
    def sound(self) -> bool:
        """No structural error (a pending log replay alone leaves the data set sound)."""
        return not self.errors

    def add(self, severity: str, code: str, ci: int | None, message: str) -> None:
        self.findings.append(Finding(severity, code, ci, message))


#: how many times EXAMINE walks a data set that keeps changing under it before it reports the last walk
_EXAMINE_RETRIES = 5


def examine(
    path: str,
    *,
    indextest: bool = True,
    datatest: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> ExamineReport:
    """Check the data set at ``path``; never raises for damage (it is reported), only for a missing file."""
    path = data_set_path(path)
    if not os.path.isfile(path):
        from .errors import DatasetNotFoundError

        raise DatasetNotFoundError(f"no data set at {path}")
    try:
        busy = in_use(path)
    except OSError:
        busy = False  # View says what is wrong
    # A data set open elsewhere is read live (each CI read from the file is checked against the log and the
    # header, so a checkpoint running meanwhile is noticed); a walk that saw the view change is done again.
    for attempt in range(_EXAMINE_RETRIES):
        report, version = _examine_once(path, busy, indextest, datatest, progress)
        if version is None:
            return report
        time.sleep(0.001 * min(attempt + 1, 10))
    report.add(
        "warning",
        "IDC11768I",
        None,
        f"the data set changed during each of {_EXAMINE_RETRIES} walks (another process is updating it): this "
        f"report may mix two of its states; examine it again when it is quieter",
    )
    return report


def _examine_once(
    path: str, live: bool, indextest: bool, datatest: bool, progress: Callable[[int, int], None] | None
) -> tuple[ExamineReport, int | None]:
    """One examination: the report, and None, or the view's version if the view changed during the walk (the
    report then mixes two states of the data set and is not to be trusted)."""
    report = ExamineReport(path)
    try:
        view = View(path, live=live)
    except KsdsError as e:  # no ksds header, or one that fails its check
        report.add("error", "IDC11701I", 0, str(e))
        return report, None
    with view:
        start = view.version
        defn, state, replay = view.definition, view.state, view.replay
        cisz = defn.ci_size
        size = view.file_size
        durable = view.durable_cis  # what must be in the file (with a log: what its last checkpoint made durable)
        if view.log_error is not None:
            report.add("error", "IDC11768I", None, str(view.log_error))
        if replay is not None and view.transactions:
            report.needs_recovery = True
            report.log_transactions = view.transactions
            report.add(
                "warning",
                "IDC11768I",
                None,
                f"not closed cleanly: {view.transactions} committed transactions in the log to "
                f"replay (opening it, or ksds verify --recover, does); checked as they will be",
            )
        if replay is not None and (replay.discarded_frames or replay.discarded_bytes or replay.damaged_at):
            report.needs_recovery = True
            report.add(
                "warning",
                "IDC11768I",
                None,
                "an unfinished request was cut off by a crash (it was never acknowledged; recovery drops it)",
            )
        elif replay is not None and not replay.transactions:
            report.needs_recovery = True
            report.add(
                "warning",
                "IDC11768I",
                None,
                "not closed cleanly (or open now): its log is there, with nothing to replay",
            )
        if size < durable * cisz:  # CIs the last checkpoint made durable are gone (open refuses this too)
            report.add(
                "error",
                "IDC11727I",
                None,
                f"file truncated: HI-U-RBA {durable * cisz} but the file has {size} bytes "
                f"(CIs {size // cisz} to {durable - 1} missing)",
            )
        checker = _Checker(report, view.codecs, state, defn.cis_per_ca, view.ci, indextest, datatest, progress)
        checker.in_log = view.in_log
        checker.moving = live
        try:
            checker.run()
        except _Moved:
            return report, view.version
        changed = view.version != start
    return report, (view.version if changed else None)


class _Moved(Exception):
    """EXAMINE read a CI that a checkpoint wrote after the view was read: walk again."""




class _Walk:
    """One tree as EXAMINE walks it: its id, codec and meta, and what the walk counts."""

    def __init__(
        self, tid: int, codec: Codec, meta: State | AixMeta, label: str,
        expect: list[tuple[AixMeta, list[bytes]]], sink: list[bytes] | None = None,
    ) -> None:
        self.tid = tid
        self.codec = codec
        self.meta = meta
        self.label = label
        #: the records each current UPGRADE alternate index must hold, gathered from the base's records
        self.expect = expect
        #: the tree's records (an alternate index's), gathered to compare with what its base says
        self.sink = sink
        self.records = 0
        self.data_cis = 0
        self.index_cis = 0
        self.levels = 0
        self.cas: set[int] = set()


class _Checker:
    def __init__(
        self,
        report: ExamineReport,
        codecs: list[Codec | None],
        state: State,
        cis_per_ca: int,
        read: Callable[[int], bytes],
        indextest: bool,
        datatest: bool,
        progress: Callable[[int, int], None] | None,
    ) -> None:
        self.r = report
        #: each tree id's codec (a CI is decoded by the one its descriptor names); the walk is the base cluster's
        self.codecs = codecs
        codec = codecs[0]
        assert codec is not None
        self.codec = codec
        self.st = state
        self.cpa = cis_per_ca
        self.read = read
        self.indextest = indextest
        self.datatest = datatest
        self.progress = progress
        self.seen: set[int] = set()
        #: CAs of every tree's sequence sets
        self.cas: set[int] = set()
        self.last_key: bytes | None = None
        self.done = 0
        #: data CIs to walk, every tree's (for the progress callback)
        self.total = state.data_cis + sum(a.data_cis for a in state.aixes)
        #: whether a CI's bytes come from the log (its stamp is then not checked: the log is newest)
        self.in_log: Callable[[int], bool] = lambda ci: False
        #: the data set is open elsewhere: a CI newer than its index expects means it moved on (not damage)
        self.moving = False

    def err(self, code: str, ci: int | None, msg: str) -> None:
        self.r.add("error", code, ci, msg)

    def load(self, ci: int, expect: int = 0) -> DataCI | IndexCI | FreeCI | None:
        """CI ``ci``, checked; ``expect``: the stamp its index entry keeps (a stale image read from the file is a lost
        or misdirected write)."""
        if not 0 < ci < self.st.hurba:
            self.err("IDC11725I", ci, f"pointer to CI {ci} lies outside the data set (HI-U-RBA CI {self.st.hurba})")
            return None
        try:
            data = self.read(ci)
            obj = codec_for(self.codecs, data, ci).decode(data, ci)
            if expect and not self.in_log(ci):
                stamp = self.codec.stamp(data)
                if stamp != expect:
                    if self.moving and (stamp - expect) & 0xFFFFFFFF < 0x80000000:
                        raise _Moved(ci)  # a newer image: a checkpoint wrote it since the view was read
                    raise self.codec.stale(ci, stamp, expect)
            return obj
        except DamagedCIError as e:
            self.err("IDC11701I", ci, str(e).split(": ", 1)[-1])
            return None
        except CorruptionError as e:
            self.err("IDC11701I", ci, str(e))
            return None

    def use(self, ci: int, what: str) -> bool:
        if ci in self.seen:
            self.err("IDC11705I", ci, f"{what} CI {ci} is pointed at twice")
            return False
        self.seen.add(ci)
        return True

    def run(self) -> None:
        st = self.st
        r = self.r
        # the base, collecting what each current UPGRADE alternate index must hold
        expect: list[tuple[AixMeta, list[bytes]]] = (
            [(a, []) for a in st.aixes if a.upgrade and a.current] if self.datatest else []
        )
        wanted = {a.tid: out for a, out in expect}
        base = _Walk(0, self.codec, st, "the index", expect)
        self.tree(base)
        r.records, r.data_cis, r.index_cis, r.levels = base.records, base.data_cis, base.index_cis, base.levels
        for a in st.aixes:
            codec = self.codecs[a.tid] if 0 < a.tid < len(self.codecs) else None
            if codec is None:
                self.err("IDC11711I", None, f"alternate index {a.name} has tree id {a.tid}, which no codec knows")
                continue
            w = _Walk(a.tid, codec, a, f"alternate index {a.name}", [], sink=[] if self.datatest else None)
            self.tree(w)
            if w.sink is not None:
                self.against_base(a, w.sink, wanted.get(a.tid), base.records)
        self.free_lists()

    def tree(self, w: _Walk) -> None:
        """Walk one tree from its root: its structure, its data CIs, and its meta's counts against what was seen."""
        r = self.r
        m = w.meta
        errors = len(r.errors)
        top = self.load(m.root, m.root_stamp) if self.use(m.root, "index") else None
        if not isinstance(top, IndexCI) or top.tid != w.tid:
            if top is not None:
                self.err("IDC11704I", m.root, f"the top CI of {w.label} is not an index CI of tree {w.tid}")
            return
        if top.level != m.levels:
            self.err("IDC11711I", m.root, f"top CI of {w.label} has level {top.level}, the header says {m.levels}")
        w.levels = top.level
        self.last_key = None
        self.walk(w, top, None, b"\xff" * w.codec.kl)
        if len(r.errors) != errors:
            return
        what = "" if w.tid == 0 else f" of {w.label}"
        if self.datatest:
            if w.records != m.rec_total:
                self.err("IDC11711I", None, f"REC-TOTAL{what} is {m.rec_total} but {w.records} records were counted")
            if w.data_cis != m.data_cis:
                self.err("IDC11711I", None, f"{w.data_cis} data CIs{what} counted, the header says {m.data_cis}")
        if w.index_cis != m.index_cis:
            self.err("IDC11711I", None, f"{w.index_cis} index CIs{what} counted, the header says {m.index_cis}")
        if len(w.cas) != m.ca_count:
            self.err("IDC11724I", None, f"{len(w.cas)} CAs in {w.label}, the header says {m.ca_count}")

    def against_base(self, a: AixMeta, got: list[bytes], want: list[bytes] | None, base_records: int) -> None:
        """An alternate index's records against its base: a current UPGRADE one holds exactly one record (alternate
        key + prime key) per base record; any other holds only records of the base's prime keys' length."""
        r = self.r
        if r.errors:
            return  # the base or the tree is damaged: a comparison would only repeat it
        if want is None:
            return  # NOUPGRADE or not current: not in step with the base, nothing to compare
        want.sort()
        if got == want:
            return
        missing = sorted(set(want) - set(got))
        extra = sorted(set(got) - set(want))
        e = a.key_length

        def show(recs: list[bytes]) -> str:
            return ", ".join(f"X'{x[:e].hex().upper()}' for X'{x[e:].hex().upper()}'" for x in recs[:3]) + (
                f" and {len(recs) - 3} more" if len(recs) > 3 else ""
            )

        parts = []
        if missing:
            parts.append(f"{len(missing)} base records not in it ({show(missing)})")
        if extra:
            parts.append(f"{len(extra)} records for no base record ({show(extra)})")
        if not parts:
            parts.append(f"its {len(got)} records hold duplicates (the base has {base_records})")
        self.err(
            "IDC11733I", None,
            f"alternate index {a.name} is out of step with its base: " + "; ".join(parts) + " (BLDINDEX rebuilds it)",
        )

    def walk(self, w: _Walk, node: IndexCI, low: bytes | None, high: bytes) -> None:
        """Check ``node``, whose keys must lie in ``(low, high]`` and whose last key must be ``high``."""
        w.index_cis += 1
        keys = node.keys
        ci = node.ci
        if any(keys[j] >= keys[j + 1] for j in range(len(keys) - 1)):
            self.err("IDC11704I", ci, "index keys not in ascending order")
            return
        if low is not None and keys[0] <= low:
            self.err("IDC11704I", ci, f"first high key {keys[0].hex()} is not above the range start {low.hex()}")
        if keys[-1] != high:
            self.err("IDC11704I", ci, f"last high key {keys[-1].hex()} differs from its parent's {high.hex()}")
        if node.level == 1:
            w.cas.add(node.ca)
            if node.ca in self.cas:
                self.err("IDC11705I", ci, f"CA {node.ca} is in two sequence sets")
            self.cas.add(node.ca)
            for j, ptr in enumerate(node.ptrs):
                if not node.ca <= ptr < node.ca + self.cpa:
                    self.err("IDC11725I", ci, f"points at data CI {ptr}, outside its CA ({node.ca}..)")
                    continue
                if not self.use(ptr, "data"):
                    continue
                w.data_cis += 1
                if self.datatest:
                    self.data(w, ptr, keys[j - 1] if j else low, keys[j], node.stamps[j])
            return
        for j, ptr in enumerate(node.ptrs):
            if not self.use(ptr, "index"):
                continue
            child = self.load(ptr, node.stamps[j])
            if child is None:
                continue
            if not isinstance(child, IndexCI) or child.level != node.level - 1 or child.tid != w.tid:
                self.err("IDC11704I", ptr, f"expected an index CI of level {node.level - 1} under CI {ci}")
                continue
            self.walk(w, child, keys[j - 1] if j else low, keys[j])

    def data(self, w: _Walk, ci: int, low: bytes | None, high: bytes, expect: int = 0) -> None:
        obj = self.load(ci, expect)
        self.done += 1
        if self.progress is not None and self.done % 256 == 0:
            self.progress(self.done, self.total)
        if obj is None:
            return
        if not isinstance(obj, DataCI) or obj.tid != w.tid:
            self.err("IDC11728I", ci, f"the sequence set of {w.label} points at a CI that is not one of its data CIs")
            return
        keys = obj.keys
        w.records += len(keys)
        if not keys and w.meta.data_cis > 1:
            self.r.add("warning", "IDC11728I", ci, "empty data CI still in the sequence set")
        for j, k in enumerate(keys):
            if (j and keys[j - 1] >= k) or (j == 0 and self.last_key is not None and self.last_key >= k):
                self.err("IDC11733I", ci, f"data key sequence error at key {k.hex()}")
                break
            if (low is not None and k <= low) or k > high:
                self.err("IDC11733I", ci, f"key {k.hex()} lies outside the CI's key range")
                break
        if keys:
            self.last_key = keys[-1]
        if w.sink is not None:
            w.sink += obj.records()  # an alternate index's records: alternate key + prime key
        if w.expect:
            d = w.codec
            ko, kl = d.ko, d.kl
            for rec in obj.records():
                prime = rec[ko : ko + kl]
                for a, out in w.expect:
                    o = a.key_offset
                    out.append(rec[o : o + a.key_length] + prime)

    def free_lists(self) -> None:
        lists = ((self.st.free_index, CI_FREE_INDEX, "free index CI"), (self.st.free_ca, CI_FREE_CA, "free CA"))
        for head, kind, name in lists:
            ci = head
            hops = 0
            while ci:
                hops += 1
                if hops > self.st.hurba:
                    self.err("IDC11711I", ci, f"the {name} list loops")
                    break
                if ci in self.seen or ci in self.cas:
                    self.err("IDC11705I", ci, f"{name} CI {ci} is also in use")
                    break
                obj = self.load(ci)
                if not isinstance(obj, FreeCI) or obj.kind != kind:
                    self.err("IDC11711I", ci, f"on the {name} list but not a {name}")
                    break
                ci = obj.next
