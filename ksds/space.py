"""Space in a data set: index CIs and CAs, allocated from the free lists or at the end of the file.

A data set grows only at its end (HI-U-RBA, ``state.hurba``, in CIs) and never shrinks while defined: an index CI
that leaves the tree goes on the free index CI list, a CA left empty on the free CA list (each list is chained
through its members' ``next`` field, its head in the state), and the next allocation of that kind takes the head.
Free CIs *within* a CA are not listed: they are the CIs of the CA's range that no sequence-set entry points at
(:func:`free_ci`). Every function changes only the state and CIs of the transaction in progress (the pager's
rollback undoes it). Costs: O(1) each, except :func:`free_ci`.

Space is the data set's, shared by every tree of the file (:mod:`ksds.tree`): the free lists, HI-U-RBA and the
CA count are in the pager's state. Only the index CI count is a tree's: the functions that change it are given
the meta of the tree whose index grows or shrinks.
"""

from __future__ import annotations

from .ci import FreeCI, IndexCI
from .errors import NoSpaceError
from .format import CI_FREE_CA, CI_FREE_INDEX
from .pager import Pager
from .tree import Meta

#: highest CI number (CI numbers are 32-bit)
MAX_CI = 0xFFFFFFFF


def extend(pager: Pager, count: int) -> int:
    """``count`` new CIs at the end of the data set (the file grows at the commit): the first one's number."""
    st = pager.state
    ci = st.hurba
    if ci + count > MAX_CI:
        raise NoSpaceError(f"{pager.path}: the data set has reached its largest size ({MAX_CI} CIs)")
    st.hurba = ci + count
    return ci


def alloc_index_ci(pager: Pager, meta: Meta) -> int:
    """A CI for the index of the tree whose meta is ``meta`` (which counts it): the first free index CI, or a new
    one at the end of the data set."""
    st = pager.state
    if st.free_index:
        ci = st.free_index
        obj = pager.get(ci)
        if type(obj) is not FreeCI or obj.kind != CI_FREE_INDEX:
            raise pager.codec.damaged(ci, "is on the free index CI list but is not a free index CI")
        st.free_index = obj.next
    else:
        ci = extend(pager, 1)
    meta.index_cis += 1
    return ci


def free_index_ci(pager: Pager, ci: int, meta: Meta) -> None:
    """Put index CI ``ci`` (which has left the tree whose meta is ``meta``) at the head of the free index CI
    list."""
    st = pager.state
    pager.dirty_ci(FreeCI(ci, CI_FREE_INDEX, st.free_index))
    st.free_index = ci
    meta.index_cis -= 1


def alloc_ca(pager: Pager, meta: Meta) -> int:
    """The first CI of a CA for the tree whose meta is ``meta`` (its CA count goes up): a free CA, or a new one at
    the end of the data set."""
    st = pager.state
    if st.free_ca:
        base = st.free_ca
        obj = pager.get(base)
        if type(obj) is not FreeCI or obj.kind != CI_FREE_CA:
            raise pager.codec.damaged(base, "is on the free CA list but is not a free CA")
        st.free_ca = obj.next
        pager.forget(base)
    else:
        base = extend(pager, pager.defn.cis_per_ca)
    meta.ca_count += 1
    return base


def free_ca(pager: Pager, base: int, meta: Meta) -> None:
    """Put the CA whose first CI is ``base`` (left empty by the tree whose meta is ``meta``) at the head of the free
    CA list."""
    st = pager.state
    pager.dirty_ci(FreeCI(base, CI_FREE_CA, st.free_ca))
    st.free_ca = base
    meta.ca_count -= 1


def free_ci(seq: IndexCI, cis_per_ca: int) -> int | None:
    """A CI among the first ``cis_per_ca`` of the sequence-set CI's CA (the CIs its tree uses) that no entry points
    at (None: the CA is full). O(CIs of a CA)."""
    used = set(seq.ptrs)
    for c in range(seq.ca, seq.ca + cis_per_ca):
        if c not in used:
            return c
    return None
