"""Prometheus metrics of the caching service: ``GET /metrics`` (Prometheus's text format, ``prometheus-client``).

Per request (cheap: two dict updates on the event loop's thread, no lock; label values come from fixed sets, never
from a key or a map key):

* ``ksds_http_requests_total{endpoint, method, status}``: requests answered, by endpoint (the route's template,
  e.g. ``/cachingservice/api/v1/cache/{key}``), method and status;
* ``ksds_http_request_duration_seconds{endpoint, method}``: a histogram of the time to answer them.

Read when Prometheus scrapes (nothing is counted on the request path for them):

* the storage, labelled ``storage`` (ksds, memory, redis): ``ksds_cache_entries`` (what the size limit counts),
  ``ksds_cache_size_limit``, ``ksds_cache_up`` (0 while the storage is not available: 503),
  ``ksds_cache_evictions_total`` (removeOldest), ``ksds_cache_expirations_total{kind="entry"|"item"}``
  (``ttlSeconds`` and the map defaults), ``ksds_cache_bytes`` (memory: the UTF-8 bytes of the keys and values held;
  ksds: the records' bytes; redis: the server's ``used_memory``);
* the ksds data set (its LISTCAT statistics): ``ksds_dataset_records``, ``ksds_dataset_record_operations_total{
  operation}`` (inserted, deleted, updated, retrieved), ``ksds_dataset_splits_total{kind="ci"|"ca"}``,
  ``ksds_dataset_excps_total``, ``ksds_dataset_transactions_total``, ``ksds_dataset_index_levels``,
  ``ksds_dataset_bytes{kind="allocated"|"used"|"free"}``, ``ksds_dataset_cis{kind="data"|"index"|"free"}``;
  record locks: ``ksds_record_lock_wait_seconds_total`` (time waiting to start a change: the data set's latch;
  the name is kept from when it was the counter record's lock),
  ``ksds_record_lock_retries_total`` (transactions tried again after meeting a locked record or a deadlock),
  ``ksds_record_lock_timeouts_total`` (requests ended by a lock or latch timeout: 503); the write-ahead log:
  ``ksds_log_bytes`` (frames in the log since the last checkpoint), ``ksds_log_checkpoint_bytes`` (the size at which
  a checkpoint runs), ``ksds_log_generation`` (grows by one at each checkpoint);
* discovery (``--eureka``): ``ksds_discovery_registered``, ``ksds_discovery_registrations_total``,
  ``ksds_discovery_renewals_total``, ``ksds_discovery_failures_total``;
* ``ksds_caching_service_info{version, storage}``, and prometheus-client's process and Python figures.

Counters are this process's (several ``ksds serve`` on one data set each count their own requests and evictions);
the data set's statistics are the data set's, whoever made them.

**Access.** When the server requires client certificates (``--tls-ca`` with ``--tls-client-auth required``), so does
``/metrics``: a scrape without a verified certificate is 403 ZWECS801E, as every API request is (Zowe protects its
health endpoint the same way by default, and these figures tell how the service is used). Give Prometheus a client
certificate (``tls_config: {cert_file, key_file, ca_file}``). Without TLS, or with ``--tls-client-auth optional``,
anyone who reaches the port may scrape it.

``prometheus_client`` is imported when the first :class:`Metrics` is made, so the engine never needs it.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prometheus_client.registry import Collector

    from .eureka import EurekaClient
    from .model import Storage

__all__ = ["Metrics", "endpoint_label", "BUCKETS"]

#: the latency histogram's upper bounds (seconds)
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
_BASE = "/cachingservice/"
_API = "/cachingservice/api/v1"
_SIMPLE = {
    "api/v1/cache": _API + "/cache",
    "api/v1/cache-list": _API + "/cache-list",
    "api/v1/cache-query": _API + "/cache-query",
    "v3/api-docs": "/cachingservice/v3/api-docs",
    "api-docs": "/cachingservice/api-docs",
    "api-doc": "/cachingservice/api-doc",
    "application/health": "/cachingservice/application/health",
    "application/info": "/cachingservice/application/info",
}


def endpoint_label(path: str) -> str:
    """The route template of a request path (a fixed set of values; ``other`` for anything else)."""
    if not path.startswith(_BASE):
        return "/metrics" if path == "/metrics" else "other"
    rest = path[len(_BASE):]
    if rest.endswith("/"):
        rest = rest[:-1]
    simple = _SIMPLE.get(rest)
    if simple is not None:
        return simple
    if rest.startswith("api/v1/cache/"):
        return _API + "/cache/{key}"
    if rest.startswith("api/v1/cache-list/evict/rules/"):
        return _API + "/cache-list/evict/rules/{mapKey}"
    if rest.startswith("api/v1/cache-list/evict/tokens/"):
        return _API + "/cache-list/evict/tokens/{mapKey}"
    if rest.startswith("api/v1/cache-list/"):
        return _API + "/cache-list/{mapKey}"
    return "other"


class _Families:
    """A collector that hands out metric families made beforehand (one scrape's)."""

    def __init__(self, families: list[Any]) -> None:
        self.families = families

    def collect(self) -> Iterator[Any]:
        yield from self.families


class Metrics:
    """The caching service's metrics (module docstring). :meth:`observe` is called for every request, on the event
    loop's thread; :meth:`render` builds the text of one scrape (call it in a worker thread: it asks the storage)."""

    def __init__(self, storage: Storage, mode: str, version: str) -> None:
        from prometheus_client import GC_COLLECTOR, PLATFORM_COLLECTOR, PROCESS_COLLECTOR

        self.storage = storage
        self.mode = mode
        self.version = version
        self.eureka: EurekaClient | None = None
        self._defaults: list[Collector] = [PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR]
        self._counts: dict[tuple[str, str, int], int] = {}
        #: (endpoint, method) -> [count per bucket (the last one: above every bound), sum of seconds]
        self._hist: dict[tuple[str, str], list[float]] = {}
        self._labels: dict[tuple[str, str], tuple[str, str]] = {}

    # --- per request ------------------------------------------------------------------------------------------------

    def observe(self, path: str, method: str, status: int, seconds: float) -> None:
        """Count one request (event loop thread only)."""
        key = self._labels.get((path, method))
        if key is None:
            key = (endpoint_label(path), method if method in _METHODS else "other")
            if len(self._labels) < 10000:  # keys of paths with variables differ: keep the cache bounded
                self._labels[(path, method)] = key
        ckey = (key[0], key[1], status)
        self._counts[ckey] = self._counts.get(ckey, 0) + 1
        h = self._hist.get(key)
        if h is None:
            h = self._hist[key] = [0.0] * (len(BUCKETS) + 2)
        h[bisect.bisect_left(BUCKETS, seconds)] += 1
        h[-1] += seconds

    def snapshot(self) -> tuple[dict[tuple[str, str, int], int], dict[tuple[str, str], list[float]]]:
        """Copies of the request figures (take them on the event loop's thread, then :meth:`render` elsewhere)."""
        return dict(self._counts), {k: list(v) for k, v in self._hist.items()}

    # --- one scrape ------------------------------------------------------------------------------------------------

    def render(self, snapshot: tuple[dict[tuple[str, str, int], int], dict[tuple[str, str], list[float]]]) -> bytes:
        """Prometheus's text format of every figure."""
        from prometheus_client import CollectorRegistry, generate_latest

        registry = CollectorRegistry(auto_describe=False)
        families = self._request_families(*snapshot)
        families += self._storage_families()
        families += self._eureka_families()
        registry.register(_Families(families))
        for c in self._defaults:
            registry.register(c)
        return generate_latest(registry)

    def _request_families(self, counts: dict[tuple[str, str, int], int],
                          hist: dict[tuple[str, str], list[float]]) -> list[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        info = GaugeMetricFamily("ksds_caching_service_info", "The caching service: ksds version and storage mode",
                                 labels=["version", "storage"])
        info.add_metric([self.version, self.mode], 1)
        requests = CounterMetricFamily("ksds_http_requests", "Requests answered, by endpoint, method and status",
                                       labels=["endpoint", "method", "status"])
        for (endpoint, method, status), n in sorted(counts.items()):
            requests.add_metric([endpoint, method, str(status)], n)
        duration = HistogramMetricFamily("ksds_http_request_duration_seconds", "Time to answer a request",
                                         labels=["endpoint", "method"])
        for (endpoint, method), h in sorted(hist.items()):
            cumulative = 0.0
            buckets: list[tuple[str, float]] = []
            for bound, in_bucket in zip(BUCKETS, h, strict=False):
                cumulative += in_bucket
                buckets.append((_le(bound), cumulative))
            cumulative += h[len(BUCKETS)]
            buckets.append(("+Inf", cumulative))
            duration.add_metric([endpoint, method], buckets, h[-1])
        return [info, requests, duration]

    def _storage_families(self) -> list[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        st = self.storage
        mode = self.mode
        out: list[Any] = []

        def gauge(name: str, doc: str, value: float, **labels: str) -> None:
            g = GaugeMetricFamily(name, doc, labels=["storage", *labels])
            g.add_metric([mode, *labels.values()], value)
            out.append(g)

        def counter(name: str, doc: str, values: Iterable[tuple[dict[str, str], float]]) -> None:
            values = list(values)
            if not values:
                return
            c = CounterMetricFamily(name, doc, labels=["storage", *values[0][0]])
            for labels, v in values:
                c.add_metric([mode, *labels.values()], v)
            out.append(c)

        try:
            entries = st.count()
        except Exception:  # noqa: BLE001 - the storage is not available (it answers 503)
            gauge("ksds_cache_up", "1 if the storage answers, 0 while it is not available (503)", 0)
        else:
            gauge("ksds_cache_up", "1 if the storage answers, 0 while it is not available (503)", 1)
            gauge("ksds_cache_entries", "Entries held across all callers (what the size limit counts)", entries)
        gauge("ksds_cache_size_limit", "The most entries the storage holds (0: no limit)", st.size)
        evictions = getattr(st, "evictions", None)
        if isinstance(evictions, int):
            counter("ksds_cache_evictions", "Entries removed to make room (eviction removeOldest)",
                    [({}, evictions)])
        expired = [(kind, getattr(st, attr, None)) for kind, attr in (("entry", "expired_entries"),
                                                                      ("item", "expired_items"))]
        counter("ksds_cache_expirations", "Entries and map items removed because they expired",
                [({"kind": kind}, n) for kind, n in expired if isinstance(n, int)])
        stored = getattr(st, "stored_bytes", None)
        if isinstance(stored, int):
            gauge("ksds_cache_bytes", "Bytes of the keys and values held (UTF-8)", stored)
        dataset = getattr(st, "dataset", None)
        if dataset is not None and hasattr(dataset, "stats"):
            out.extend(self._dataset_families(st, dataset))
        used_memory = getattr(st, "used_memory", None)
        if callable(used_memory):
            used = used_memory()
            if isinstance(used, int):
                gauge("ksds_cache_bytes", "Bytes the Redis server uses (its used_memory)", used)
        return out

    def _dataset_families(self, st: Storage, ds: Any) -> list[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        try:
            s = ds.stats()
        except Exception:  # noqa: BLE001 - closed meanwhile, or not available
            return []
        mode = self.mode
        path = str(getattr(ds, "path", ""))
        out: list[Any] = []

        def fam(kind: type, name: str, doc: str, values: list[tuple[dict[str, str], float]]) -> None:
            f = kind(name, doc, labels=["storage", "dataset", *values[0][0]])
            for labels, v in values:
                f.add_metric([mode, path, *labels.values()], v)
            out.append(f)

        g, c = GaugeMetricFamily, CounterMetricFamily
        record_length = int(s.get("MAXLRECL", 0))
        fam(g, "ksds_cache_bytes", "Bytes of the data set's records", [({}, s["REC-TOTAL"] * record_length)])
        fam(g, "ksds_dataset_records", "Records in the data set (entries, map items and their index records)",
            [({}, s["REC-TOTAL"])])
        fam(c, "ksds_dataset_record_operations", "Record requests of the data set's life (LISTCAT REC-*)",
            [({"operation": op.lower()}, s[f"REC-{op}"]) for op in ("INSERTED", "DELETED", "UPDATED", "RETRIEVED")])
        fam(c, "ksds_dataset_splits", "CI and CA splits (LISTCAT SPLITS-CI, SPLITS-CA)",
            [({"kind": "ci"}, s["SPLITS-CI"]), ({"kind": "ca"}, s["SPLITS-CA"])])
        fam(c, "ksds_dataset_excps", "CI reads from the file (LISTCAT EXCPS)", [({}, s["EXCPS"])])
        fam(c, "ksds_dataset_transactions", "Transactions committed to the data set", [({}, s["TXN"])])
        fam(g, "ksds_dataset_index_levels", "Levels of the index (LISTCAT LEVELS)", [({}, s["LEVELS"])])
        fam(g, "ksds_dataset_bytes", "The data set's size: allocated (HI-A-RBA), used (HI-U-RBA), free in its "
            "data CIs (FREESPC)", [({"kind": "allocated"}, s["HI-A-RBA"]), ({"kind": "used"}, s["HI-U-RBA"]),
                                   ({"kind": "free"}, s["FREESPC"])])
        fam(g, "ksds_dataset_cis", "Control intervals: data, index, free",
            [({"kind": "data"}, s["DATA-CIS"]), ({"kind": "index"}, s["INDEX-CIS"]), ({"kind": "free"}, s["FREE-CIS"])])
        for name, attr, doc in (
            ("ksds_record_lock_wait_seconds", "lock_wait_seconds", "Seconds waiting to start a change (latch)"),
            ("ksds_record_lock_retries", "lock_retries", "Transactions tried again after a locked record or deadlock"),
            ("ksds_record_lock_timeouts", "lock_timeouts", "Requests ended by a record lock or latch timeout (503)"),
        ):
            v = getattr(st, attr, None)
            if isinstance(v, (int, float)):
                fam(c, name, doc, [({}, v)])
        try:
            log = ds.log_stats()
        except Exception:  # noqa: BLE001 - closed meanwhile
            log = None
        if log is not None:
            fam(g, "ksds_log_bytes", "Bytes of the write-ahead log since the last checkpoint", [({}, log["LOG-BYTES"])])
            fam(g, "ksds_log_checkpoint_bytes", "Log size at which a checkpoint runs",
                [({}, log["CHECKPOINT-BYTES"])])
            fam(g, "ksds_log_generation", "The log's generation (one more at each checkpoint)",
                [({}, log["LOG-GENERATION"])])
        return out

    def _eureka_families(self) -> list[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        e = self.eureka
        if e is None:
            return []
        registered = GaugeMetricFamily("ksds_discovery_registered", "1 while registered with a discovery service")
        registered.add_metric([], 1 if e.registered_with else 0)
        out: list[Any] = [registered]
        for name, value, doc in (("ksds_discovery_registrations", e.registrations, "Registrations made (204)"),
                                 ("ksds_discovery_renewals", e.renewals, "Lease renewals (heartbeats) made (200)"),
                                 ("ksds_discovery_failures", e.failures, "Calls to a discovery service that failed")):
            out.append(CounterMetricFamily(name, doc, value=value))
        return out


def _le(bound: float) -> str:
    return repr(float(bound))
