"""Alternate indexes (AIX): their definitions, their trees' records, building them, and keeping them in step.

An alternate index is a B+-tree of the data set file (:mod:`ksds.tree`, a tree id 1..15 in the descriptor of each
of its CIs), defined in the catalog that follows the state (:class:`~ksds.format.AixMeta`), and changed in the
same transactions as the base, so that a crash never leaves the two out of step. Each of its records is the
alternate key (``key_length`` bytes at ``key_offset`` of a base record) followed by that base record's prime key,
and the whole record is the tree's key: the base records that share an alternate key follow each other in
prime-key order, a non-unique alternate key costs one record per base record, and the records with one
alternate key are one generic range (``count``, browses). A UNIQUEKEY AIX's tree is keyed by the alternate key
alone (:func:`~ksds.tree.tree_definition`): a read by it is one exact search, and a duplicate is found by one
exact read before anything changes.

* **UPGRADE** (``upgrade=True``): every WRITE, REWRITE and ERASE of the base changes the AIX in the same
  transaction (:func:`check_write` first, so that a duplicate alternate key changes nothing). A NOUPGRADE AIX is
  left as it is, and the first change of the base after its build marks it not current (``current`` False: its
  records may name base records that no longer carry that alternate key, or miss some): :func:`build` (BLDINDEX)
  makes it current again. A path over it still reads, and skips what no longer matches.
* **Building** (:func:`build`): the base's records are read in key order, their AIX records sorted, checked for
  duplicates (unique AIX) and inserted in key order (sequential inserts: FREESPACE honoured, CIs filled to it),
  ``commit_every`` records per transaction; the AIX is marked current in the last one. Until then it is not
  current (a crash part way leaves it not current, and BLDINDEX again empties and builds it).

Every function here changes only CIs and the state of the transaction in progress; the caller commits. Costs: L
index levels, n records per CI, A alternate indexes.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

from . import btree
from .definition import CI_TRAILER, ENTRY_EXTRA, STAMP, Definition, check_freespace
from .errors import DefinitionError, DuplicateKeyError, InvalidRequestError, show_key
from .format import AIX_ENTRY, CATALOG_HEAD, HEADER_SIZE, MAX_AIXES, AixMeta
from .pager import Pager
from .tree import Tree

#: an AIX name: 1 to 31 of these (VSAM names: letters, digits, national characters, hyphens, periods)
_NAME = re.compile(r"[A-Za-z0-9@#$_.\-]{1,31}")


def check_name(name: object) -> str:
    """A valid AIX name, or :class:`~ksds.DefinitionError` saying what a name may be."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise DefinitionError(
            f"an alternate index name is 1 to 31 letters, digits and @ # $ _ . -, not {name!r}"
        )
    return name


def define(
    pager: Pager,
    name: object,
    key_length: object,
    key_offset: object,
    unique: bool,
    upgrade: bool,
    freespace: tuple[int, int],
) -> AixMeta:
    """Add an empty, not yet current AIX to the catalog, with its tree (one CA, its sequence-set CI, one empty
    data CI), in the transaction in progress. Validated once: every error names the value and what would do.
    O(A)."""
    d = pager.defn
    st = pager.state
    nm = check_name(name)
    if any(a.name == nm for a in st.aixes):
        raise DefinitionError(f"{pager.path}: an alternate index named {nm!r} exists (delete it first)")
    for what, v in (("key_length", key_length), ("key_offset", key_offset)):
        if isinstance(v, bool) or not isinstance(v, int):
            raise DefinitionError(f"{what} of an alternate index must be an integer, not {v!r}")
    assert isinstance(key_length, int) and isinstance(key_offset, int)
    if not 1 <= key_length <= 255:
        raise DefinitionError(f"key_length of an alternate index must be between 1 and 255, not {key_length}")
    if key_offset < 0 or key_offset + key_length > d.record_length:
        raise DefinitionError(
            f"the alternate key (key_offset {key_offset} + key_length {key_length} = {key_offset + key_length}) "
            f"does not fit in the base's record_length {d.record_length}"
        )
    n = key_length + d.key_length
    cap = (d.ci_size - CI_TRAILER - STAMP) // (n + ENTRY_EXTRA)
    if cap < 3 or n > d.ci_size - CI_TRAILER:
        raise DefinitionError(
            f"an alternate index record of {n} bytes (key_length {key_length} + the prime key's {d.key_length}) "
            f"needs a larger ci_size than {d.ci_size}: its index CIs would hold {cap} entries (3 or more needed)"
        )
    if len(st.aixes) >= MAX_AIXES:
        raise DefinitionError(f"{pager.path} has {MAX_AIXES} alternate indexes, the most a data set can have")
    room = d.ci_size - HEADER_SIZE - CATALOG_HEAD.size
    if (len(st.aixes) + 1) * AIX_ENTRY.size > room:
        raise DefinitionError(
            f"{pager.path}: a header CI of {d.ci_size} bytes has room for {room // AIX_ENTRY.size} alternate "
            f"indexes; a larger ci_size has room for more"
        )
    fci, fca = check_freespace(freespace)
    used = {a.tid for a in st.aixes}
    tid = min(t for t in range(1, MAX_AIXES + 1) if t not in used)
    a = AixMeta(tid, nm, key_length, key_offset, bool(unique), bool(upgrade), False, fci, fca)
    st.aixes.append(a)
    st.aixes.sort(key=_tid)
    pager.state_dirty = True
    tree = pager.tree_of(a)
    btree.plant(tree)
    return a


def _tid(a: AixMeta) -> int:
    return a.tid


def delete(pager: Pager, a: AixMeta) -> None:
    """Remove AIX ``a``: its tree's space to the free lists and its entry out of the catalog, in the transaction in
    progress. O(CIs of its index)."""
    btree.uproot(pager.tree_of(a))
    pager.state.aixes = [x for x in pager.state.aixes if x.tid != a.tid]
    pager.state_dirty = True
    pager.drop_tree(a.tid)


def find(pager: Pager, name: str) -> AixMeta:
    """The AIX named ``name`` (:class:`~ksds.InvalidRequestError` naming the ones there are)."""
    for a in pager.state.aixes:
        if a.name == name:
            return a
    have = ", ".join(a.name for a in pager.state.aixes) or "none"
    raise InvalidRequestError(f"{pager.path} has no alternate index named {name!r} (it has: {have})")


# --- the records of an AIX ----------------------------------------------------------------------------------------


def entry(a: AixMeta, record: bytes, ko: int, kl: int) -> bytes:
    """The AIX record of base record ``record``: its alternate key, then its prime key. O(key lengths)."""
    o = a.key_offset
    return record[o : o + a.key_length] + record[ko : ko + kl]


def holder(tree: Tree[Pager], altkey: bytes) -> bytes | None:
    """The first AIX record with alternate key ``altkey`` (None if there is none). O(L log n)."""
    if tree.key_length == len(altkey):  # a UNIQUEKEY AIX: keyed by the alternate key
        return btree.find(tree, altkey)
    rec = btree.first_ge(tree, altkey + bytes(tree.key_length - len(altkey)))
    if rec is None or rec[: len(altkey)] != altkey:
        return None
    return rec


# --- keeping the upgrade set in step -----------------------------------------------------------------------------


def _duplicate(pager: Pager, a: AixMeta, altkey: bytes) -> DuplicateKeyError:
    return DuplicateKeyError(
        f"{pager.path}: alternate index {a.name} is UNIQUEKEY and a record with alternate key {show_key(altkey)} "
        f"exists"
    )


def check_write(pager: Pager, old: bytes | None, new: bytes) -> None:
    """Before a WRITE (``old`` None) or a REWRITE of ``old`` by ``new``: :class:`~ksds.DuplicateKeyError` if it
    would give a unique upgrade AIX a second record with one alternate key. Nothing is changed. O(A L log n)."""
    for a in pager.state.aixes:
        if not (a.unique and a.upgrade and a.current):
            continue
        o = a.key_offset
        alt = new[o : o + a.key_length]
        if old is not None and old[o : o + a.key_length] == alt:
            continue
        if holder(pager.tree_of(a), alt) is not None:
            raise _duplicate(pager, a, alt)


def changed(pager: Pager, old: bytes | None, new: bytes | None) -> None:
    """Keep every AIX in step with one change of the base: ``old`` (None: a WRITE) became ``new`` (None: an
    ERASE). Upgrade AIXes gain and lose their records (a REWRITE that keeps an alternate key changes nothing
    there); a NOUPGRADE AIX that was current is marked not current. Call it after :func:`check_write`, in the
    base change's transaction. O(A L log n)."""
    d = pager.defn
    ko, kl = d.key_offset, d.key_length
    for a in pager.state.aixes:
        if not a.upgrade:
            if a.current:
                a.current = False
                pager.state_dirty = True
            continue
        if not a.current:
            continue  # being built (a crash part way): BLDINDEX builds it from the base as it is then
        o = a.key_offset
        e = a.key_length
        if old is not None and new is not None and old[o : o + e] == new[o : o + e]:
            continue
        tree = pager.tree_of(a)
        m = tree.meta
        tk = tree.key_length  # the alternate key (UNIQUEKEY), or the whole record
        if old is not None:
            btree.delete(tree, entry(a, old, ko, kl)[:tk])
            m.rec_total -= 1
        if new is not None:
            rec = entry(a, new, ko, kl)
            btree.insert(tree, rec[:tk], rec, None)
            m.rec_total += 1
        pager.state_dirty = True


# --- building (BLDINDEX) ------------------------------------------------------------------------------------------


def base_records(pager: Pager) -> Iterator[bytes]:
    """Every base record in key order, a CI at a time (read in place, nothing pooled). O(records)."""
    base = pager.base
    pos = btree.seek_ge(base, bytes(pager.defn.key_length))
    if pos is None:
        return
    path, ci, i = pos
    yield from ci.records(i)
    while True:
        recs = btree.next_records(base, path)
        if recs is None:
            return
        yield from recs


def sorted_entries(pager: Pager, a: AixMeta, progress: Callable[[int, int], None] | None = None) -> list[bytes]:
    """The AIX records of every base record, sorted; for a unique AIX, :class:`~ksds.DuplicateKeyError` naming the
    first alternate key two records share. O(N log N) for N base records, N records in memory."""
    d = pager.defn
    o, e, ko, kl = a.key_offset, a.key_length, d.key_offset, d.key_length
    total = pager.state.rec_total
    out: list[bytes] = []
    append = out.append
    for n, rec in enumerate(base_records(pager), 1):
        append(rec[o : o + e] + rec[ko : ko + kl])
        if progress is not None and not n & 0xFFFF:
            progress(n, 2 * total)
    out.sort()
    if a.unique:
        prev = None
        for r in out:
            alt = r[:e]
            if alt == prev:
                raise _duplicate(pager, a, alt)
            prev = alt
    return out


def load(
    tree: Tree[Pager], entries: list[bytes], commit: Callable[[], None], every: int,
    progress: Callable[[int, int], None] | None = None,
) -> None:
    """Insert ``entries`` (sorted, into an empty tree) in key order, as sequential inserts (CIs filled up to
    FREESPACE, a new CI or CA at the end without moving records), calling ``commit`` after each ``every``
    records. O(N L) for N entries."""
    m = tree.meta
    insert = btree.insert
    after: bytes | None = None
    total = len(entries)
    tk = tree.key_length
    for n, rec in enumerate(entries, 1):
        key = rec[:tk]
        insert(tree, key, rec, after)
        after = key
        m.rec_total += 1
        if not n % every:
            tree.pager.state_dirty = True
            commit()
            if progress is not None:
                progress(total + n, 2 * total)


def build(
    pager: Pager, a: AixMeta, commit: Callable[[], None], every: int = 4096,
    progress: Callable[[int, int], None] | None = None,
) -> None:
    """BLDINDEX: empty AIX ``a``'s tree and load it from the base, committing ``every`` records (``commit``), the
    AIX not current until the last transaction, which makes it current. A unique AIX whose base has two records
    with one alternate key: :class:`~ksds.DuplicateKeyError` before anything changed. O(N log N)."""
    entries = sorted_entries(pager, a, progress)
    tree = pager.tree_of(a)
    a.current = False
    btree.uproot(tree)
    btree.plant(tree)
    pager.state_dirty = True
    commit()
    load(tree, entries, commit, every, progress)
    a.current = True
    pager.state_dirty = True
    commit()
    if progress is not None:
        progress(2 * len(entries), 2 * len(entries))


def describe(a: AixMeta, base: Definition) -> dict[str, object]:
    """What :meth:`Dataset.aixes` reports of AIX ``a``: its definition and its tree's statistics."""
    return {
        "key_length": a.key_length,
        "key_offset": a.key_offset,
        "unique": a.unique,
        "upgrade": a.upgrade,
        "current": a.current,
        "records": a.rec_total,
        "record_length": a.key_length + base.key_length,
        "freespace": (a.freespace_ci, a.freespace_ca),
        "levels": a.levels,
        "data_cis": a.data_cis,
        "index_cis": a.index_cis,
        "cas": a.ca_count,
        "splits_ci": a.splits_ci,
        "splits_ca": a.splits_ca,
    }

