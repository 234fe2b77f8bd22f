"""A data set's definition: what IDCAMS DEFINE CLUSTER INDEXED fixes for its whole life.

The definition is validated here, once, and stored in the file's header (see ``docs/file-format.md``).
Capacity rules follow VSAM's with ksds's own CI descriptor (16 bytes, see :mod:`ksds.format`):

* a data CI holds ``(ci_size - 16) // record_length`` records;
* an index CI holds ``(ci_size - 16 - 4) // (key_length + 8)`` entries (a high key, a pointer and the stamp its
  child's image must carry, plus the CI's own stamp);
* a CA's sequence-set CI must address every CI of the CA, so ``cis_per_ca`` is at most that many entries.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

from .errors import DefinitionError

#: bytes at the end of every CI: type, flags, count, CI number, aux (txn, CA or next free), CRC32C
CI_TRAILER = 16
#: bytes of a pointer in an index entry
POINTER = 4
#: bytes of the stamp an index entry keeps of its child (what the child's image must carry: lost writes), and of an
#: index CI's own stamp
STAMP = 4
#: bytes of one index entry: high key + pointer + child's stamp
ENTRY_EXTRA = POINTER + STAMP
MIN_CI_SIZE = 512
MAX_CI_SIZE = 32768
#: a CA is at most this many bytes when cis_per_ca is not given (VSAM: one 3390 cylinder is 720 KiB)
DEFAULT_CA_BYTES = 1 << 20


def round_ci_size(size: int) -> int:
    """Round a CI size up the way VSAM does: 512..8192 in steps of 512, then to 32768 in steps of 2048."""
    if isinstance(size, bool) or not isinstance(size, int):
        raise DefinitionError(f"ci_size must be an integer, not {size!r}")
    if size <= 0:
        raise DefinitionError(f"ci_size must be positive, not {size}")
    if size > MAX_CI_SIZE:
        raise DefinitionError(f"ci_size {size} is above VSAM's largest CI size, {MAX_CI_SIZE}")
    if size <= MIN_CI_SIZE:
        return MIN_CI_SIZE
    if size <= 8192:
        return -(-size // 512) * 512
    return -(-size // 2048) * 2048


@dataclass(frozen=True)
class Definition:
    """The fixed attributes of a data set (LISTCAT's ATTRIBUTES group).

    ``freespace`` and ``share_options`` can be changed later (ALTER); the rest cannot.
    """

    key_length: int
    key_offset: int
    record_length: int
    ci_size: int
    cis_per_ca: int
    freespace: tuple[int, int] = (0, 0)
    share_options: tuple[int, int] = (1, 3)

    @property
    def layout(self) -> tuple[int, int, int]:
        """(record length, key offset, key length): how a data CI's records are cut."""
        return (self.record_length, self.key_offset, self.key_length)

    @property
    def records_per_ci(self) -> int:
        """Most records a data CI can hold."""
        return (self.ci_size - CI_TRAILER) // self.record_length

    @property
    def entries_per_index_ci(self) -> int:
        """Most entries (high key + pointer + child's stamp) an index CI can hold."""
        return (self.ci_size - CI_TRAILER - STAMP) // (self.key_length + ENTRY_EXTRA)

    @cached_property
    def load_records_per_ci(self) -> int:
        """Records a CI takes while loading in key order: what fits after FREESPACE ci% is left free."""
        reserve = math.ceil(self.ci_size * self.freespace[0] / 100)
        usable = self.ci_size - CI_TRAILER - reserve
        return max(1, usable // self.record_length)

    @cached_property
    def load_cis_per_ca(self) -> int:
        """CIs of a CA used while loading in key order: FREESPACE ca% of the CIs are left empty."""
        reserve = math.ceil(self.cis_per_ca * self.freespace[1] / 100)
        return max(1, self.cis_per_ca - reserve)


def _int_param(name: str, value: object, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise DefinitionError(f"{name} must be an integer, not {value!r}")
    if not low <= value <= high:
        raise DefinitionError(f"{name} must be between {low} and {high}, not {value}")
    return value


def check_freespace(freespace: object) -> tuple[int, int]:
    """Validate FREESPACE(ci% ca%): two percentages, each 0..100 (ci% below 100)."""
    if not isinstance(freespace, (tuple, list)) or len(freespace) != 2:
        raise DefinitionError(f"freespace must be a pair (ci_percent, ca_percent), not {freespace!r}")
    ci = _int_param("freespace ci%", freespace[0], 0, 99)
    ca = _int_param("freespace ca%", freespace[1], 0, 100)
    return ci, ca


def check_share_options(share_options: object) -> tuple[int, int]:
    """Validate SHAREOPTIONS(cross-region cross-system): 1..4 and 3..4 as VSAM allows."""
    if not isinstance(share_options, (tuple, list)) or len(share_options) != 2:
        raise DefinitionError(
            f"share_options must be a pair (cross_region, cross_system), not {share_options!r}"
        )
    region = _int_param("share_options cross-region", share_options[0], 1, 4)
    system = _int_param("share_options cross-system", share_options[1], 3, 4)
    return region, system


def make_definition(
    *,
    key_length: int,
    record_length: int,
    key_offset: int = 0,
    ci_size: int = 4096,
    cis_per_ca: int | None = None,
    freespace: tuple[int, int] = (0, 0),
    share_options: tuple[int, int] = (1, 3),
) -> Definition:
    """Validate DEFINE CLUSTER parameters and return the definition, with the CI size rounded up.

    Raises :class:`~ksds.DefinitionError` naming the parameter that is wrong.
    """
    kl = _int_param("key_length", key_length, 1, 255)
    rl = _int_param("record_length", record_length, 1, MAX_CI_SIZE)
    ko = _int_param("key_offset", key_offset, 0, MAX_CI_SIZE)
    if ko + kl > rl:
        raise DefinitionError(
            f"the key (key_offset {ko} + key_length {kl} = {ko + kl}) does not fit in record_length {rl}"
        )
    cisz = round_ci_size(ci_size)
    if rl > cisz - CI_TRAILER:
        raise DefinitionError(
            f"record_length {rl} does not fit in a CI of {cisz} bytes (at most {cisz - CI_TRAILER}); "
            f"use a larger ci_size"
        )
    index_entries = (cisz - CI_TRAILER - STAMP) // (kl + ENTRY_EXTRA)
    if index_entries < 3:
        need = round_ci_size(3 * (kl + ENTRY_EXTRA) + CI_TRAILER + STAMP)
        raise DefinitionError(
            f"an index CI of {cisz} bytes holds only {index_entries} entries of key_length {kl}; "
            f"the index needs 3 or more: use ci_size {need} or larger"
        )
    if cis_per_ca is None:
        cpa = max(2, min(index_entries, DEFAULT_CA_BYTES // cisz))
    else:
        cpa = _int_param("cis_per_ca", cis_per_ca, 2, 65535)
        if cpa > index_entries:
            raise DefinitionError(
                f"cis_per_ca {cpa} is more than one sequence-set CI can address "
                f"({index_entries} entries of key_length {kl} in a {cisz}-byte CI)"
            )
    return Definition(
        key_length=kl,
        key_offset=ko,
        record_length=rl,
        ci_size=cisz,
        cis_per_ca=cpa,
        freespace=check_freespace(freespace),
        share_options=check_share_options(share_options),
    )
