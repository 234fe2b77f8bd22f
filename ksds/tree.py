"""One B+-tree of the data set file: its tree id, its codec, its sizing and its meta.

A data set file holds several B+-trees in one space (its CAs, free lists and HI-U-RBA are shared): the base
cluster's, tree id 0, and the alternate indexes' (1..15, :mod:`ksds.aix`; format version 3). A :class:`Tree` is the
handle :mod:`ksds.btree` works on (as a bbolt bucket has its transaction): it has

* its pager (:attr:`Tree.pager`: the file, the pool, the transactions, shared by every tree);
* its id (:attr:`Tree.tid`, in the descriptor of every data and index CI of the tree) and its
  :class:`~ksds.ci.Codec` (its record layout and index capacity);
* its sizing (records per CI, and what a sequential load leaves free), from its own record length and the data
  set's CI size, CIs per CA and FREESPACE;
* its **meta** (:attr:`Tree.meta`): the root and its stamp, the level count and the statistics (data and index
  CIs, records, CI and CA splits). Tree 0's meta is the pager's :class:`~ksds.format.State` itself, which has
  those attributes (they are persisted in the header and in every commit frame); an alternate index's is its
  entry in the state's catalog, :class:`~ksds.format.AixMeta` (persisted with the state).

The pager replaces its state object (another process's commit adopted, a rollback, recovery): it keeps its trees
(``pager.trees``) and rebinds every tree's meta wherever it assigns ``pager.state`` (:meth:`ksds.pager.Pager.set_state`:
tree 0's to the state, each alternate index's to its catalog entry, and the trees made or forgotten to match),
so the hot path reads ``tree.meta.root`` -- two attribute loads, as ``pager.state.root`` was -- and never a
property or a lookup of the state through the pager.

This module sits below the pager (the pager makes its trees) and does not import it: a tree is generic over its
pager's type (``Tree[Pager]`` where the tree module and its users name it), of which it needs only ``path``.
"""

from __future__ import annotations

from typing import Generic, Protocol, TypeVar

from .ci import Codec
from .definition import Definition
from .format import MAX_TREES, STATE_SIZE, AixMeta, State

#: the base cluster's tree id
BASE = 0


def tree_definition(base: Definition, a: AixMeta) -> Definition:
    """The definition of alternate index ``a``'s tree: records of its alternate key followed by the base's prime
    key, in the base's CI size and CAs, with the AIX's FREESPACE. The tree's key is the alternate key for a
    UNIQUEKEY AIX (one record per alternate key), the whole record otherwise (the base records that share an
    alternate key follow in prime-key order). O(1)."""
    n = a.key_length + base.key_length
    return Definition(
        key_length=a.key_length if a.unique else n,
        key_offset=0,
        record_length=n,
        ci_size=base.ci_size,
        cis_per_ca=base.cis_per_ca,
        freespace=(a.freespace_ci, a.freespace_ca),
        share_options=base.share_options,
    )


class TreeLayouts:
    """The codec and the record layout of each tree a data set's state names (the base's and its catalog's
    alternate indexes'), for readers that decode CIs and apply log record operations without a pager (the view of
    a data set open elsewhere, EXAMINE, VERIFY). :meth:`learn` takes a later state (a commit frame's, as the log
    is read: ``Journal.on_commit``). O(A) per state with a catalog of A alternate indexes."""

    def __init__(self, base: Definition, path: str, state: State) -> None:
        self.base = base
        self.path = path
        base_codec = Codec(base, path)
        #: the codec of each tree id (None: no such tree)
        self.codecs: list[Codec | None] = [base_codec] + [None] * (MAX_TREES - 1)
        #: each tree's (record length, key offset, key length) by tree id
        self.layouts: dict[int, tuple[int, int, int]] = {BASE: base.layout}
        self.take(state)

    def take(self, state: State) -> None:
        """Know the trees of ``state``'s catalog (a tree defined again with another layout takes the new one)."""
        for a in state.aixes:
            d = tree_definition(self.base, a)
            if self.layouts.get(a.tid) != d.layout:
                self.layouts[a.tid] = d.layout
                self.codecs[a.tid] = Codec(d, self.path, a.tid)

    def learn(self, state: bytes) -> None:
        """:meth:`take` a state from its bytes, if it has a catalog (``Journal.on_commit``)."""
        if len(state) > STATE_SIZE:
            self.take(State.unpack(state))


class _Pager(Protocol):
    """What a tree needs of its pager itself (:mod:`ksds.btree` uses the rest, as ``Tree[Pager]``)."""

    path: str


P = TypeVar("P", bound=_Pager)


#: what :attr:`Tree.meta` is: the pager's state for tree 0, the catalog's entry for an alternate index
Meta = State | AixMeta


class Tree(Generic[P]):
    """One B+-tree of the data set file (see the module's docstring). Attribute reads only on the hot paths."""

    __slots__ = (
        "pager",
        "tid",
        "defn",
        "codec",
        "meta",
        "record_length",
        "key_length",
        "records_per_ci",
        "load_records_per_ci",
        "load_cis_per_ca",
        "cis_per_ca",
    )
    pager: P
    tid: int
    #: the tree's definition: its own record layout, the data set's CI size, CIs per CA and FREESPACE
    defn: Definition
    codec: Codec
    meta: Meta
    record_length: int
    key_length: int
    #: most records a data CI of the tree holds
    records_per_ci: int
    #: records a data CI takes in a sequential insert (FREESPACE ci% left free)
    load_records_per_ci: int
    #: CIs of a CA used in a sequential insert (FREESPACE ca% left free)
    load_cis_per_ca: int
    #: CIs of a CA the tree uses: the data set's CIs per CA, or fewer when its sequence-set CIs hold fewer entries
    #: (an alternate index's long keys); the rest of each of its CAs stays unused
    cis_per_ca: int

    def __init__(self, pager: P, tid: int, defn: Definition, meta: Meta) -> None:
        if not 0 <= tid < MAX_TREES:
            raise ValueError(f"tree id {tid} is outside 0..{MAX_TREES - 1}")
        self.pager = pager
        self.tid = tid
        self.codec = Codec(defn, pager.path, tid)
        self.meta = meta
        self.size(defn)

    def size(self, defn: Definition) -> None:
        """Take the sizing of ``defn`` (the tree's layout; ALTER changes its FREESPACE)."""
        self.defn = defn
        self.record_length = defn.record_length
        self.key_length = defn.key_length
        self.records_per_ci = defn.records_per_ci
        self.load_records_per_ci = defn.load_records_per_ci
        self.cis_per_ca = min(defn.cis_per_ca, self.codec.index_cap)
        self.load_cis_per_ca = min(defn.load_cis_per_ca, self.cis_per_ca)

    def __repr__(self) -> str:
        return f"Tree({self.tid}, root CI {self.meta.root}, {self.meta.levels} levels)"
