"""Onboarding ``ksds serve`` to Zowe API ML: registration with Eureka, and the static definition.

A gateway finds the caching service in the discovery service (Eureka) as service ``cachingservice``, with the
route, authentication scheme and metadata Zowe's caching service registers (its ``application.yml``,
``apiml.service.*``), which Zowe's onboarding enabler (``EurekaInstanceConfigCreator``) turns into Eureka instance
metadata:

* ``apiml.routes.api-v1.gatewayUrl: api/v1`` and ``apiml.routes.api-v1.serviceUrl: /cachingservice/api/v1``;
* ``apiml.authentication.scheme: x509`` and ``apiml.authentication.headers: X-Certificate-Public,
  X-Certificate-DistinguishedName,X-Certificate-CommonName`` (the gateway forwards the client certificate's DN);
* ``apiml.enableUrlEncodedCharacters: true`` (keys may hold ``%2F``), ``apiml.gatewayPort``,
  ``apiml.gatewayAuthEndpoint``, ``apiml.corsEnabled`` (the custom metadata, flattened);
* ``apiml.service.title`` / ``description``, the catalog tile ``apiml.catalog.tile.*`` (``zowe``), and
  ``apiml.apiInfo.api-v1.*`` (``zowe.apiml.cachingservice`` 1.0.0, its Swagger URL ``/cachingservice/v3/api-docs``).

:class:`EurekaClient` registers (``POST /eureka/apps/CACHINGSERVICE`` with Eureka's JSON instance document, 204),
renews its lease every ``renewal`` seconds (``PUT /eureka/apps/CACHINGSERVICE/{instanceId}``, 200; a 404 means
the discovery service forgot the instance: it registers again) and cancels it when stopped (``DELETE``, 200). It
runs in a thread of its own: a discovery service that is down or slow never delays or fails a request of the
caching service. With several discovery services (Zowe's ``ZWE_DISCOVERY_SERVICES_LIST``) it talks to one at a time,
as Eureka's client does (the discovery services replicate registrations to each other), and moves to the next one
when a call fails; a failed call is tried again after 1 s, 2 s, 4 s, ... up to ``renewal`` seconds.

:func:`static_definition` is the API ML static definition (YAML, ``services:`` and ``catalogUiTiles:``) that
onboards a ``ksds serve`` that does not register itself (the discovery service reads it from its static definitions
directory, ``ZWE_STATIC_DEFINITIONS_DIR``).
"""

from __future__ import annotations

import base64
import http.client
import json
import socket
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import quote, unquote, urlsplit

__all__ = ["SERVICE_ID", "APP", "Instance", "EurekaClient", "eureka_metadata", "instance_document", "static_definition"]

SERVICE_ID = "cachingservice"
#: Eureka's application name: the service id in capitals
APP = SERVICE_ID.upper()
CONTEXT = "/" + SERVICE_ID
TITLE = "Caching service for internal usage."
DESCRIPTION = "Service that provides caching API."
ROUTES = (("api/v1", CONTEXT + "/api/v1"),)
AUTH_SCHEME = "x509"
AUTH_HEADERS = "X-Certificate-Public,X-Certificate-DistinguishedName,X-Certificate-CommonName"
TILE = {"id": "zowe", "title": "Zowe Applications", "description": "Applications which are part of Zowe.",
        "version": "1.0.0"}
API_ID = "zowe.apiml.cachingservice"
API_VERSION = "1.0.0"
DOCUMENTATION_URL = "https://www.zowe.org"
HOME = CONTEXT
STATUS_PAGE = CONTEXT + "/application/info"
HEALTH = CONTEXT + "/application/health"
SWAGGER = CONTEXT + "/v3/api-docs"
#: Zowe's start.sh default for ``apiml.gatewayPort`` (``ZWE_components_gateway_port``)
DEFAULT_GATEWAY_PORT = 7554
GATEWAY_AUTH_ENDPOINT = "/gateway/api/v1/auth"
#: Eureka's lease renewal interval (``eureka.instance.leaseRenewalIntervalInSeconds``) and the lease's duration
DEFAULT_RENEWAL = 30.0
LEASE_FACTOR = 3
#: seconds a call to the discovery service may take
CALL_TIMEOUT = 5.0


@dataclass(frozen=True)
class Instance:
    """Where this caching service is: ``scheme://hostname:port`` (``ip``: the address registered; None: the host
    name's)."""

    scheme: str
    hostname: str
    port: int
    ip: str | None = None
    gateway_port: int = DEFAULT_GATEWAY_PORT

    @property
    def base_url(self) -> str:
        host = f"[{self.hostname}]" if ":" in self.hostname else self.hostname
        return f"{self.scheme}://{host}:{self.port}"

    @property
    def instance_id(self) -> str:
        """Zowe's onboarding enabler's: ``hostname:serviceId:port``."""
        return f"{self.hostname}:{SERVICE_ID}:{self.port}"


def _route_key(gateway_url: str) -> str:
    return gateway_url.strip("/").replace("/", "-")


def _api_key(gateway_url: str) -> str:
    """Zowe's ``UrlUtils.getEncodedUrl``: every non-word character is ``-``."""
    return "".join(c if c.isalnum() or c == "_" else "-" for c in gateway_url)


def eureka_metadata(inst: Instance) -> dict[str, str]:
    """The Eureka instance metadata Zowe's caching service registers (module docstring)."""
    md = {
        "apiml.authentication.scheme": AUTH_SCHEME,
        "apiml.authentication.headers": AUTH_HEADERS,
    }
    for gateway_url, service_url in ROUTES:
        key = _route_key(gateway_url)
        md[f"apiml.routes.{key}.gatewayUrl"] = gateway_url.strip("/")
        md[f"apiml.routes.{key}.serviceUrl"] = service_url
    md.update({f"apiml.catalog.tile.{k}": v for k, v in TILE.items()})
    md["apiml.service.title"] = TITLE
    md["apiml.service.description"] = DESCRIPTION
    md["apiml.enableUrlEncodedCharacters"] = "true"
    md["apiml.gatewayPort"] = str(inst.gateway_port)
    md["apiml.gatewayAuthEndpoint"] = GATEWAY_AUTH_ENDPOINT
    md["apiml.corsEnabled"] = "false"
    api = _api_key(ROUTES[0][0])
    md[f"apiml.apiInfo.{api}.apiId"] = API_ID
    md[f"apiml.apiInfo.{api}.gatewayUrl"] = ROUTES[0][0]
    md[f"apiml.apiInfo.{api}.version"] = API_VERSION
    md[f"apiml.apiInfo.{api}.swaggerUrl"] = inst.base_url + SWAGGER
    md[f"apiml.apiInfo.{api}.documentationUrl"] = DOCUMENTATION_URL
    md[f"apiml.apiInfo.{api}.defaultApi"] = "false"
    return md


def instance_document(inst: Instance, renewal: float = DEFAULT_RENEWAL, now_ms: int | None = None) -> dict[str, object]:
    """Eureka's JSON instance document (``{"instance": InstanceInfo}``) for ``POST /eureka/apps/CACHINGSERVICE``."""
    now = str(int(time.time() * 1000) if now_ms is None else now_ms)
    secure = inst.scheme == "https"
    base = inst.base_url
    info: dict[str, object] = {
        "instanceId": inst.instance_id,
        "hostName": inst.hostname,
        "app": APP,
        "ipAddr": inst.ip or inst.hostname,
        "status": "UP",
        "overriddenStatus": "UNKNOWN",
        "port": {"$": inst.port, "@enabled": "false" if secure else "true"},
        "securePort": {"$": inst.port, "@enabled": "true" if secure else "false"},
        "countryId": 1,
        "dataCenterInfo": {"@class": "com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo", "name": "MyOwn"},
        "leaseInfo": {"renewalIntervalInSecs": max(1, round(renewal)),
                      "durationInSecs": max(1, round(renewal)) * LEASE_FACTOR},
        "metadata": eureka_metadata(inst),
        "appGroupName": APP,
        "homePageUrl": base + HOME,
        "statusPageUrl": base + STATUS_PAGE,
        "vipAddress": SERVICE_ID,
        "secureVipAddress": SERVICE_ID,
        "isCoordinatingDiscoveryServer": "false",
        "lastUpdatedTimestamp": now,
        "lastDirtyTimestamp": now,
    }
    info["secureHealthCheckUrl" if secure else "healthCheckUrl"] = base + HEALTH
    return {"instance": info}


# --- the static definition -------------------------------------------------------------------------------------------


def _yaml_scalar(value: object) -> str:
    """A YAML scalar: true/false and numbers as they are, every string double-quoted with JSON's escapes (which are
    YAML's), so that nothing in it can be read as YAML syntax."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return json.dumps(str(value))


def _yaml(value: object, indent: int) -> list[str]:
    """Block YAML of dicts, lists and scalars (dict keys are plain words)."""
    pad = " " * indent
    lines: list[str] = []
    if isinstance(value, dict):
        for k, v in value.items():
            if isinstance(v, (dict, list)) and v:
                lines.append(f"{pad}{k}:")
                lines.extend(_yaml(v, indent + 2))
            else:
                lines.append(f"{pad}{k}: {_yaml_scalar(v)}")
    elif isinstance(value, list):
        for v in value:
            sub = _yaml(v, indent + 2)
            if isinstance(v, (dict, list)) and v:
                lines.append(f"{pad}- {sub[0].lstrip()}")
                lines.extend(sub[1:])
            else:
                lines.append(f"{pad}- {_yaml_scalar(v)}")
    else:
        lines.append(pad + _yaml_scalar(value))
    return lines


def static_definition_data(base_urls: Sequence[str], gateway_port: int = DEFAULT_GATEWAY_PORT) -> dict[str, object]:
    """The static definition as data (what :func:`static_definition` writes)."""
    if not base_urls:
        raise ValueError("a static definition needs at least one instance base URL")
    first = base_urls[0].rstrip("/")
    return {
        "services": [{
            "serviceId": SERVICE_ID,
            "title": TITLE,
            "description": DESCRIPTION,
            "catalogUiTileId": TILE["id"],
            "instanceBaseUrls": [u.rstrip("/") for u in base_urls],
            "homePageRelativeUrl": HOME,
            "statusPageRelativeUrl": STATUS_PAGE,
            "healthCheckRelativeUrl": HEALTH,
            "routes": [{"gatewayUrl": g, "serviceRelativeUrl": s} for g, s in ROUTES],
            "authentication": {"scheme": AUTH_SCHEME, "headers": AUTH_HEADERS},
            "apiInfo": [{
                "apiId": API_ID,
                "version": API_VERSION,
                "gatewayUrl": ROUTES[0][0],
                "swaggerUrl": first + SWAGGER,
                "documentationUrl": DOCUMENTATION_URL,
            }],
            "customMetadata": {"apiml": {
                "enableUrlEncodedCharacters": True,
                "gatewayPort": gateway_port,
                "gatewayAuthEndpoint": GATEWAY_AUTH_ENDPOINT,
                "corsEnabled": False,
            }},
        }],
        "catalogUiTiles": {TILE["id"]: {"title": TILE["title"], "description": TILE["description"]}},
    }


def static_definition(base_urls: Sequence[str], gateway_port: int = DEFAULT_GATEWAY_PORT) -> str:
    """Zowe API ML's static definition (YAML) of the caching service at ``base_urls`` (``https://host:port``, one
    per instance), as the discovery service reads it (its ``staticdef.Definition``)."""
    head = ["# Zowe API ML static definition of the caching service served by ksds serve",
            "# (put it in the discovery service's static definitions directory, ZWE_STATIC_DEFINITIONS_DIR)"]
    return "\n".join(head + _yaml(static_definition_data(base_urls, gateway_port), 0)) + "\n"


# --- registration -----------------------------------------------------------------------------------------------------


class EurekaError(Exception):
    """A call to a discovery service that failed (its status, or why it could not be made)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class _Target:
    url: str
    scheme: str
    host: str
    port: int
    path: str  # ends with "/": ".../eureka/"
    auth: str | None


def _target(url: str) -> _Target:
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{url!r} is not a discovery service URL (http(s)://host:port/eureka/)")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise ValueError(f"{url!r} has no valid port") from None
    path = parts.path or "/eureka/"
    if not path.endswith("/"):
        path += "/"
    auth = None
    if parts.username is not None:
        cred = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        auth = "Basic " + base64.b64encode(cred.encode()).decode()
    shown = f"{parts.scheme}://{parts.hostname}:{port}{path}"
    return _Target(shown, parts.scheme, parts.hostname, port, path, auth)


class EurekaClient:
    """Registers ``instance`` with the discovery services at ``urls`` (Eureka base URLs, ``.../eureka/``) and keeps
    the registration alive until :meth:`stop` (module docstring).

    ``ready``: registration starts once it returns True (the server is serving). ``ssl_context``: for ``https``
    discovery services (Zowe's want the service's client certificate). ``report``: called with one line when the
    state changes (registered, a discovery service that fails, ...). Counters for the metrics: ``registrations``,
    ``renewals``, ``failures``; ``registered_with``: the URL registered with, or None."""

    def __init__(
        self,
        urls: Sequence[str],
        instance: Instance | Callable[[], Instance],
        *,
        renewal: float = DEFAULT_RENEWAL,
        ssl_context: ssl.SSLContext | None = None,
        ready: Callable[[], bool] | None = None,
        report: Callable[[str], None] | None = None,
        timeout: float = CALL_TIMEOUT,
    ) -> None:
        if not urls:
            raise ValueError("no discovery service URL")
        self.targets = [_target(u) for u in urls]
        self._instance = instance
        self.renewal = renewal
        self.ssl_context = ssl_context
        self.ready = ready
        self.report = report or (lambda line: None)
        self.timeout = timeout
        self.registrations = 0
        self.renewals = 0
        self.failures = 0
        self.registered_with: str | None = None
        self.inst: Instance | None = None
        self._dirty = 0
        self._current = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="ksds-eureka", daemon=True)
        self._lock = threading.Lock()  # one call to a discovery service at a time (the thread's, or stop's)
        self._last_problem = ""

    # --- HTTP ---------------------------------------------------------------------------------------------------

    def _call(self, t: _Target, method: str, path: str, body: bytes | None = None) -> int:
        if t.scheme == "https":
            ctx = self.ssl_context or ssl.create_default_context()
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                t.host, t.port, timeout=self.timeout, context=ctx)
        else:
            conn = http.client.HTTPConnection(t.host, t.port, timeout=self.timeout)
        headers = {"Accept": "application/json", "Accept-Encoding": "identity", "Connection": "close"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        if t.auth:
            headers["Authorization"] = t.auth
        try:
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            resp.read()
            return resp.status
        except (OSError, http.client.HTTPException) as e:
            raise EurekaError(f"{method} {t.url}: {type(e).__name__}: {e}") from None
        finally:
            conn.close()

    def _app_path(self, t: _Target) -> str:
        return f"{t.path}apps/{APP}"

    def _instance_path(self, t: _Target, inst: Instance) -> str:
        return f"{self._app_path(t)}/{quote(inst.instance_id, safe=':')}"

    # --- the calls ------------------------------------------------------------------------------------------------

    def _resolve(self) -> Instance:
        inst = self._instance() if callable(self._instance) else self._instance
        if inst.ip is None:
            try:
                ip = socket.gethostbyname(inst.hostname)
            except OSError:
                ip = "127.0.0.1"
            inst = Instance(inst.scheme, inst.hostname, inst.port, ip, inst.gateway_port)
        return inst

    def register(self) -> None:
        """Register with the current discovery service (204), or raise EurekaError."""
        if self.inst is None:
            self.inst = self._resolve()
        t = self.targets[self._current]
        dirty = int(time.time() * 1000)
        body = json.dumps(instance_document(self.inst, self.renewal, dirty)).encode()
        with self._lock:
            status = self._call(t, "POST", self._app_path(t), body)
        if status not in (200, 204):
            raise EurekaError(f"POST {t.url}apps/{APP} answered {status}", status)
        self.registrations += 1
        self.registered_with = t.url
        self._dirty = dirty

    def renew(self) -> bool:
        """Renew the lease (200: True); False if the discovery service does not know the instance (404)."""
        assert self.inst is not None
        t = self.targets[self._current]
        # the registered document's lastDirtyTimestamp: a newer one would make Eureka answer 404 (its
        # InstanceResource.validateDirtyTimestamp: "the client has newer information; register again")
        path = f"{self._instance_path(t, self.inst)}?status=UP&lastDirtyTimestamp={self._dirty}"
        with self._lock:
            status = self._call(t, "PUT", path)
        if status == 404:
            return False
        if status != 200:
            raise EurekaError(f"PUT {t.url}apps/{APP}/{self.inst.instance_id} answered {status}", status)
        self.renewals += 1
        return True

    def cancel(self) -> None:
        """Cancel the registration (DELETE) at the discovery service registered with."""
        if self.inst is None or self.registered_with is None:
            return
        t = self.targets[self._current]
        with self._lock:
            status = self._call(t, "DELETE", self._instance_path(t, self.inst))
        self.registered_with = None
        if status not in (200, 404):
            raise EurekaError(f"DELETE {t.url}apps/{APP}/{self.inst.instance_id} answered {status}", status)

    # --- the thread -----------------------------------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = CALL_TIMEOUT) -> None:
        """Stop renewing and cancel the registration (at most about ``timeout`` seconds)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        if self.registered_with is None:
            return
        where = self.registered_with
        try:
            self.cancel()
        except EurekaError as e:
            self.report(f"could not cancel the registration with the discovery service {where}: {e}")
        else:
            self.report(f"cancelled the registration with the discovery service {where}")

    def _problem(self, e: EurekaError) -> None:
        self.failures += 1
        line = str(e)
        if line != self._last_problem:  # once per kind of failure, not at every retry
            self._last_problem = line
            self.report(f"the discovery service fails ({line}); trying again")

    def _run(self) -> None:
        while self.ready is not None and not self.ready():
            if self._stop.wait(0.05):
                return
        delay = 1.0
        while not self._stop.is_set():
            try:
                if self.registered_with is None:
                    self.register()
                    self._last_problem = ""
                    self.report(f"registered with the discovery service {self.registered_with} as {SERVICE_ID} "
                                f"(instance {self.inst.instance_id if self.inst else '?'})")
                elif not self.renew():
                    self.registered_with = None
                    self.report(f"the discovery service {self.targets[self._current].url} does not know this "
                                "instance (404): registering again")
                    continue
                delay = 1.0
                wait = self.renewal
            except EurekaError as e:
                self._problem(e)
                self.registered_with = None
                self._current = (self._current + 1) % len(self.targets)
                wait = delay
                delay = min(delay * 2, max(1.0, self.renewal))
            except Exception as e:  # noqa: BLE001 - the thread must go on whatever happens
                self._problem(EurekaError(f"{type(e).__name__}: {e}"))
                wait = delay
                delay = min(delay * 2, max(1.0, self.renewal))
            if self._stop.wait(wait):
                return
