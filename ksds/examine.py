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
from .format import CI_FREE_CA, CI_FREE_INDEX, State
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
        self.cas: set[int] = set()
        self.last_key: bytes | None = None
        self.done = 0
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
        top = self.load(st.root, st.root_stamp) if self.use(st.root, "index") else None
        if not isinstance(top, IndexCI) or top.tid != 0:
            if top is not None:
                self.err("IDC11704I", st.root, "the index's top CI is not an index CI")
            return
        if top.level != st.levels:
            self.err("IDC11711I", st.root, f"top CI has level {top.level}, the header says {st.levels} levels")
        r.levels = top.level
        self.walk(top, None, b"\xff" * self.codec.kl)
        self.free_lists()
        if self.datatest and not r.errors:
            if r.records != st.rec_total:
                self.err("IDC11711I", None, f"REC-TOTAL is {st.rec_total} but {r.records} records were counted")
            if r.data_cis != st.data_cis:
                self.err("IDC11711I", None, f"{r.data_cis} data CIs counted, the header says {st.data_cis}")
        if not r.errors:
            if r.index_cis != st.index_cis:
                self.err("IDC11711I", None, f"{r.index_cis} index CIs counted, the header says {st.index_cis}")
            if len(self.cas) != st.ca_count:
                self.err("IDC11724I", None, f"{len(self.cas)} CAs in the index, the header says {st.ca_count}")

    def walk(self, node: IndexCI, low: bytes | None, high: bytes) -> None:
        """Check ``node``, whose keys must lie in ``(low, high]`` and whose last key must be ``high``."""
        r = self.r
        r.index_cis += 1
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
            self.cas.add(node.ca)
            for j, ptr in enumerate(node.ptrs):
                if not node.ca <= ptr < node.ca + self.cpa:
                    self.err("IDC11725I", ci, f"points at data CI {ptr}, outside its CA ({node.ca}..)")
                    continue
                if not self.use(ptr, "data"):
                    continue
                r.data_cis += 1
                if self.datatest:
                    self.data(ptr, keys[j - 1] if j else low, keys[j], node.stamps[j])
            return
        for j, ptr in enumerate(node.ptrs):
            if not self.use(ptr, "index"):
                continue
            child = self.load(ptr, node.stamps[j])
            if child is None:
                continue
            if not isinstance(child, IndexCI) or child.level != node.level - 1 or child.tid != 0:
                self.err("IDC11704I", ptr, f"expected an index CI of level {node.level - 1} under CI {ci}")
                continue
            self.walk(child, keys[j - 1] if j else low, keys[j])

    def data(self, ci: int, low: bytes | None, high: bytes, expect: int = 0) -> None:
        obj = self.load(ci, expect)
        self.done += 1
        if self.progress is not None and self.done % 256 == 0:
            self.progress(self.done, self.st.data_cis)
        if obj is None:
            return
        if not isinstance(obj, DataCI) or obj.tid != 0:
            self.err("IDC11728I", ci, "the sequence set points at a CI that is not a data CI")
            return
        keys = obj.keys
        self.r.records += len(keys)
        if not keys and self.st.data_cis > 1:
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
