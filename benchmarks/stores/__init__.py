"""Store adapters: one module per store, all with the interface of :class:`~benchmarks.stores.base.Store`.

``STORES`` maps a store's name to ``(module, class name)``; :func:`load_store_class` imports it and returns the
class, or a one-line reason why it cannot run (its package is not installed).
"""

from __future__ import annotations

import importlib

from .base import Store

STORES: dict[str, tuple[str, str]] = {
    "ksds": ("benchmarks.stores.ksds_store", "KsdsStore"),
    "sqlite": ("benchmarks.stores.sqlite_store", "SqliteStore"),
    "lmdb": ("benchmarks.stores.lmdb_store", "LmdbStore"),
    "bdb": ("benchmarks.stores.bdb_store", "BdbStore"),
    "diskcache": ("benchmarks.stores.diskcache_store", "DiskcacheStore"),
}

#: what to install for a store that is missing
INSTALL_HINTS = {
    "lmdb": "pip install lmdb",
    "bdb": "apt-get install -y libdb-dev && pip install berkeleydb",
    "diskcache": "pip install diskcache",
}


def load_store_class(name: str) -> tuple[type[Store] | None, str | None]:
    """``(class, None)``, or ``(None, reason)`` when the store's package is not installed."""
    module, cls = STORES[name]
    try:
        mod = importlib.import_module(module)
    except ImportError as e:
        hint = INSTALL_HINTS.get(name)
        return None, f"{e}" + (f" (install: {hint})" if hint else "")
    store_cls: type[Store] = getattr(mod, cls)
    return store_cls, None


__all__ = ["INSTALL_HINTS", "STORES", "Store", "load_store_class"]
