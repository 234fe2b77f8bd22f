"""The caching-service facade: Zowe's caching service (the storage behind API ML gateways' login state) on ksds.

* :mod:`ksds.caching.model` -- entries (:class:`KeyValue`), errors with Zowe's message numbers and HTTP statuses,
  and the :class:`Storage` interface every storage mode implements;
* storage modes: ``ksds`` (a KSDS data set, the default), ``memory`` and ``redis``;
* :mod:`ksds.caching.service` -- the REST API (``/cachingservice/api/v1``), served by ``ksds serve``.
"""

from .model import Identity, KeyValue, Storage, StorageError
from .storage_factory import make_storage

__all__ = ["Identity", "KeyValue", "Storage", "StorageError", "make_storage"]
