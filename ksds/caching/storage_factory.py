"""Choose a storage mode: :func:`make_storage` (Zowe's ``caching.storage.mode``).

Modes: ``ksds`` (a KSDS data set; Zowe's ``VSAM``, also accepted as ``vsam``), ``memory`` (``inMemory``) and
``redis``. Names are compared case-insensitively, as Spring compares Zowe's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .model import DEFAULT_EVICTION, DEFAULT_SIZE, EVICTION_STRATEGIES, Storage

if TYPE_CHECKING:
    from .redis_config import RedisConfig

MODES = ("ksds", "memory", "redis")
_ALIASES = {"ksds": "ksds", "vsam": "ksds", "memory": "memory", "inmemory": "memory", "redis": "redis"}


def make_storage(
    mode: str,
    *,
    dataset: str | None = None,
    redis_url: str | RedisConfig | None = None,
    size: int = DEFAULT_SIZE,
    eviction: str = DEFAULT_EVICTION,
    layout: str = "native",
    key_length: int | None = None,
    record_length: int | None = None,
    durability: str = "process",
    lock_timeout: float = 30.0,
    lazy_open: bool = True,
) -> Storage:
    """A storage of mode ``mode``. ``dataset``: the data set path (ksds: required); ``redis_url`` (redis:
    required): a :class:`~ksds.caching.redis_config.RedisConfig` (Sentinel, TLS, the timeout), or one Redis's
    address, a redis-py URL or Zowe's ``masterNodeUri``; ``size`` (0: no limit) and ``eviction`` ("reject" or
    "removeOldest"), for every mode; ``layout``, ``key_length``, ``record_length``, ``durability``,
    ``lock_timeout`` and ``lazy_open`` (a data set that cannot be opened now is opened by a later call, which
    answers 503 ZWECS703W until then): ksds only (see :class:`~ksds.caching.ksds_storage.KsdsStorage`). Raises
    ValueError naming what is wrong."""
    if not isinstance(mode, str) or mode.lower() not in _ALIASES:
        raise ValueError(f"storage mode must be one of {', '.join(MODES)}, not {mode!r}")
    m = _ALIASES[mode.lower()]
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise ValueError(f"size must be an integer >= 0 (0: no limit), not {size!r}")
    if eviction not in EVICTION_STRATEGIES:
        raise ValueError(f"eviction must be one of {', '.join(EVICTION_STRATEGIES)}, not {eviction!r}")
    ksds_only = {
        "layout": layout != "native",
        "key_length": key_length is not None,
        "record_length": record_length is not None,
        "durability": durability != "process",
    }
    if m != "ksds":
        given = [name for name, set_ in ksds_only.items() if set_]
        if dataset is not None:
            given.insert(0, "dataset")
        if given:
            raise ValueError(f"{', '.join(given)}: only for the ksds storage mode, not {m}")
    if m != "redis" and redis_url is not None:
        raise ValueError(f"redis_url: only for the redis storage mode, not {m}")
    if m == "memory":
        from .memory import MemoryStorage

        return MemoryStorage(size=size, eviction=eviction)
    if m == "redis":
        if not redis_url:
            raise ValueError("the redis storage mode needs redis_url (redis://host:port/db, Zowe's "
                             "[[user:]password@]host[:port], or a RedisConfig)")
        from .redis_storage import RedisStorage

        return RedisStorage(redis_url, size=size, eviction=eviction)
    if not dataset:
        raise ValueError("the ksds storage mode needs dataset (the path of the data set)")
    from .ksds_storage import KsdsStorage

    return KsdsStorage(
        dataset,
        key_length,
        record_length,
        layout=layout,
        size=size,
        eviction=eviction,
        durability=durability,
        lock_timeout=lock_timeout,
        lazy_open=lazy_open,
    )
