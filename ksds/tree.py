"""One B+-tree of the data set file: its tree id, its codec, its sizing and its meta.

A data set file holds several B+-trees in one space (its CAs, free lists and HI-U-RBA are shared): the base
cluster's, tree id 0, and the alternate indexes' (1..15, from a later format version). A :class:`Tree` is the
handle :mod:`ksds.btree` works on (as a bbolt bucket has its transaction): it has

* its pager (:attr:`Tree.pager`: the file, the pool, the transactions, shared by every tree);
* its id (:attr:`Tree.tid`, in the descriptor of every data and index CI of the tree) and its
  :class:`~ksds.ci.Codec` (its record layout and index capacity);
* its sizing (records per CI, and what a sequential load leaves free), from its own record length and the data
  set's CI size, CIs per CA and FREESPACE;
* its **meta** (:attr:`Tree.meta`): the root and its stamp, the level count and the statistics (data and index
  CIs, records, CI and CA splits). Tree 0's meta is the pager's :class:`~ksds.format.State` itself, which has
  those attributes (they are persisted in the header and in every commit frame); an alternate index's is a
  :class:`TreeMeta` (not persisted yet: a later step keeps it in a catalog).

The pager replaces its state object (another process's commit adopted, a rollback, recovery): it keeps its trees
(``pager.trees``) and rebinds tree 0's meta wherever it assigns ``pager.state`` (:meth:`ksds.pager.Pager.set_state`),
so the hot path reads ``tree.meta.root`` -- two attribute loads, as ``pager.state.root`` was -- and never a
property or a lookup of the state through the pager.

This module sits below the pager (the pager makes its trees): it names the :class:`~ksds.pager.Pager` type for
the type checker only.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .ci import Codec
from .definition import Definition
from .format import MAX_TREES, State

if TYPE_CHECKING:
    from .pager import Pager

#: the base cluster's tree id
BASE = 0


@dataclass(slots=True)
class TreeMeta:
    """The meta of an alternate index's tree: the attributes of :class:`~ksds.format.State` that describe one tree
    (same names, so :mod:`ksds.btree` reads either). Not persisted yet."""

    root: int = 0  # CI number of the tree's top index CI
    root_stamp: int = 0  # the stamp the top CI's image must carry (0: not known yet, not checked)
    levels: int = 1  # index levels (1: the sequence set alone)
    data_cis: int = 0  # data CIs in use
    index_cis: int = 0  # index CIs in use
    rec_total: int = 0  # records
    splits_ci: int = 0
    splits_ca: int = 0

    def copy(self) -> TreeMeta:
        return dataclasses.replace(self)


#: what :attr:`Tree.meta` is: the pager's state for tree 0, a :class:`TreeMeta` for an alternate index
Meta = State | TreeMeta


class Tree:
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
    )
    pager: Pager
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

    def __init__(self, pager: Pager, tid: int, defn: Definition, meta: Meta) -> None:
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
        self.load_cis_per_ca = defn.load_cis_per_ca

    def __repr__(self) -> str:
        return f"Tree({self.tid}, root CI {self.meta.root}, {self.meta.levels} levels)"
