"""The records every store gets: deterministic, generated from a seed, the same bytes for every store.

A record is ``record_length`` bytes (512 by default) whose first ``key_length`` bytes (64) are its key. Keys are
ASCII and sort in the order of their index ``i``: a 12-digit decimal index, a separator, and filler derived from
``i`` and the seed by a hash (so keys are not all alike past the index). That makes "load in key order" a walk
over ``i`` (the scaling run never holds all records in memory) while reads, inserts, rewrites and erases visit
keys in a seeded random order.

* ``key(i)`` sorts between ``key(i - 1)`` and ``key(i + 1)``;
* ``miss_key(i)`` (separator ``~`` instead of ``-``) sorts just after ``key(i)`` and before ``key(i + 1)``, so
  it is never in the data set and lands in the middle of the same page as a real key;
* ``prefix(i)`` is the first ``PREFIX_LENGTH`` bytes of ``key(i)``, shared by no other key;
* ``record(i)`` and ``new_record(i)`` (for rewrites) carry different payloads, cut from a fixed random block.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

PREFIX_LENGTH = 16
_BLOCK = 1 << 16


@dataclass(frozen=True)
class RecordSpec:
    count: int
    key_length: int = 64
    record_length: int = 512
    seed: int = 20240611

    def __post_init__(self) -> None:
        if self.key_length < 24:
            raise ValueError("key_length must be at least 24 bytes (12 digits, a separator, filler)")
        if self.record_length <= self.key_length:
            raise ValueError("record_length must exceed key_length")


class Records:
    """Record, key and request-order generator for one :class:`RecordSpec`."""

    def __init__(self, spec: RecordSpec) -> None:
        self.spec = spec
        rng = random.Random(spec.seed)
        self._block = rng.randbytes(_BLOCK + spec.record_length)
        self._salt = spec.seed.to_bytes(8, "little")
        self._fill = spec.key_length - 13
        self._payload = spec.record_length - spec.key_length

    # --- single items ---------------------------------------------------------------------------------------

    def _filler(self, i: int) -> bytes:
        h = hashlib.blake2b(i.to_bytes(8, "little"), digest_size=32, salt=self._salt[:8].ljust(16, b"\0"))
        hexd = h.hexdigest().encode()
        while len(hexd) < self._fill:
            hexd += hexd
        return hexd[: self._fill]

    def key(self, i: int) -> bytes:
        return b"%012d-" % i + self._filler(i)

    def miss_key(self, i: int) -> bytes:
        return b"%012d~" % i + self._filler(i)

    def prefix(self, i: int) -> bytes:
        return self.key(i)[:PREFIX_LENGTH]

    def _payload_at(self, i: int, salt: int) -> bytes:
        off = (i * 7919 + salt) % _BLOCK
        return self._block[off : off + self._payload]

    def record(self, i: int) -> bytes:
        return self.key(i) + self._payload_at(i, 0)

    def new_record(self, i: int) -> bytes:
        """The record with key ``key(i)`` and another payload (for rewrites)."""
        return self.key(i) + self._payload_at(i, 4099)

    def extra_record(self, i: int) -> bytes:
        """A record whose key (``miss_key(i)``) is not in the data set: for inserts into a loaded data set."""
        return self.miss_key(i) + self._payload_at(i, 8191)

    # --- sequences ----------------------------------------------------------------------------------------------

    def rng(self, purpose: str) -> random.Random:
        """A random generator of its own for each purpose, so orders do not depend on which rows run."""
        return random.Random(f"{self.spec.seed}:{purpose}")

    def sample(self, purpose: str, n: int, population: int | None = None) -> list[int]:
        """``n`` distinct indexes in random order (all of them, shuffled, if ``n`` >= the population)."""
        pop = self.spec.count if population is None else population
        r = self.rng(purpose)
        if n >= pop:
            idx = list(range(pop))
            r.shuffle(idx)
            return idx
        return r.sample(range(pop), n)
