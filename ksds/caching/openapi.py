"""The caching service's OpenAPI 3 document (served at ``/cachingservice/api-doc`` and ``/cachingservice/v3/api-docs``).

Written by hand from :mod:`ksds.caching.service`: every endpoint, its headers, bodies, statuses and error bodies.
"""

from __future__ import annotations

from typing import Any

from .. import __version__

__all__ = ["openapi_document"]

_JSON = "application/json"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _error(description: str, number: str, key: str, content: str, kind: str = "ERROR") -> dict[str, Any]:
    example = {
        "messages": [
            {
                "messageType": kind,
                "messageNumber": number,
                "messageContent": content,
                "messageAction": "...",
                "messageReason": "...",
                "messageKey": key,
            }
        ]
    }
    return {"description": description, "content": {_JSON: {"schema": _ref("ApiMessageView"), "example": example}}}


_R401 = {"$ref": "#/components/responses/Unauthorized"}
_R403 = {"$ref": "#/components/responses/Forbidden"}
_R500 = {"$ref": "#/components/responses/InternalError"}
_R400 = {"$ref": "#/components/responses/InvalidPayload"}
_R404 = {"$ref": "#/components/responses/NotInCache"}
_R413 = {"$ref": "#/components/responses/BodyTooLarge"}
_R503 = {"$ref": "#/components/responses/NotAvailable"}
_COMMON = {"401": _R401, "403": _R403, "500": _R500, "503": _R503}
_CALLER = [{"$ref": "#/components/parameters/DistinguishedName"}, {"$ref": "#/components/parameters/ServiceId"}]


def _path_param(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "description": description, "schema": {"type": "string"}}


_KEY = _path_param("key", "The entry's key (percent-encode '/', '?', '#', '%' and spaces; any character is allowed).")
_MAP_KEY = _path_param("mapKey", "The name of one of the caller's maps (e.g. invalidTokens, invalidTokenRules).")
_KV_BODY = {"required": True, "content": {_JSON: {"schema": _ref("KeyValue")}}}


def _op(summary: str, description: str, responses: dict[str, Any], *, body: bool = False,
        params: list[dict[str, Any]] | None = None, op_id: str, tag: str = "cache") -> dict[str, Any]:
    op: dict[str, Any] = {
        "tags": [tag],
        "operationId": op_id,
        "summary": summary,
        "description": description,
        "parameters": (params or []) + _CALLER,
        "responses": responses | _COMMON,
    }
    if body:
        op["requestBody"] = _KV_BODY
    return op


def openapi_document(server_url: str | None = None) -> dict[str, Any]:
    """The OpenAPI 3.0 document; ``server_url`` (e.g. ``https://host:7555``) names the server it describes."""
    doc: dict[str, Any] = {
        "openapi": "3.0.3",
        "info": {
            "title": "Caching service (ksds)",
            "version": __version__,
            "description": (
                "Zowe API Mediation Layer's caching service API, served by ksds: a key/value store partitioned by "
                "caller, which API ML gateways use to keep their users' login state (invalidated tokens, "
                "personal access token rules). The caller is identified by the X-Certificate-DistinguishedName "
                "header and/or X-CS-Service-ID (both: \"<DN>, SERVICE=<id>\"). When the service runs with TLS and "
                "client certificates, the DN of the verified client certificate (as Java's "
                "X500Principal.getName() writes it, e.g. \"CN=gateway,OU=Zowe,O=ACME,C=US\") is the DN: a header "
                "naming another DN is 401, and a request without a certificate may be 403. Errors are Zowe's "
                "ApiMessageView."
            ),
            "license": {"name": "Apache-2.0"},
        },
        "tags": [
            {"name": "cache", "description": "Entries of the caller (KeyValue)"},
            {"name": "cache-list", "description": "Maps of the caller (map key -> item key -> value)"},
            {"name": "application", "description": "Health and build information"},
        ],
        "paths": {
            "/cachingservice/api/v1/cache": {
                "get": _op(
                    "Retrieves all values in the cache", "Every entry of the calling service, by key.",
                    {"200": {"description": "The caller's entries (an empty object if none)",
                             "content": {_JSON: {"schema": _ref("KeyValueMap")}}}},
                    op_id="getAllValues",
                ),
                "delete": _op(
                    "Delete all values for service from the cache", "Removes every entry of the calling service.",
                    {"200": {"description": "Deleted (no body)"}}, op_id="deleteAllValues",
                ),
                "post": _op(
                    "Create a new key in the cache", "Adds a key-value pair for the calling service.",
                    {
                        "201": {"description": "Created (no body)"},
                        "400": _R400,
                        "409": _error("The key exists for the caller", "ZWECS133E",
                                      "org.zowe.apiml.cache.keyCollision",
                                      "Adding key 'k' resulted in a collision in the cache."),
                        "413": _R413,
                        "507": _error("The storage is full (eviction strategy reject)", "ZWECS134E",
                                      "org.zowe.apiml.cache.insufficientStorage",
                                      "Insufficient storage space limit."),
                    },
                    body=True, op_id="createKey",
                ),
                "put": _op(
                    "Update key in the cache",
                    "Replaces the value (and created) of the entry whose key is in the body.",
                    {"204": {"description": "Updated (no body)"}, "400": _R400, "404": _R404, "413": _R413},
                    body=True, op_id="update",
                ),
            },
            "/cachingservice/api/v1/cache/{key}": {
                "get": _op(
                    "Retrieves a specific value in the cache", "The entry of the calling service with this key.",
                    {"200": {"description": "The entry", "content": {_JSON: {"schema": _ref("KeyValue")}}},
                     "400": _error("No key", "ZWECS132E", "org.zowe.apiml.cache.keyNotProvided",
                                   "No cache key provided."),
                     "404": _R404},
                    params=[_KEY], op_id="getValue",
                ),
                "delete": _op(
                    "Delete key from the cache", "Removes the entry of the calling service with this key.",
                    {"204": {"description": "Deleted (no body on the wire)"},
                     "400": _error("No key", "ZWECS132E", "org.zowe.apiml.cache.keyNotProvided",
                                   "No cache key provided."),
                     "404": _R404},
                    params=[_KEY], op_id="delete",
                ),
                "put": _op(
                    "Update key in the cache (as Zowe's documentation describes it)",
                    "As PUT /cache; the body's key may be left out and must be the path's key if given.",
                    {"204": {"description": "Updated (no body)"}, "400": _R400, "404": _R404, "413": _R413},
                    body=True, params=[_KEY], op_id="updateKey",
                ),
            },
            "/cachingservice/api/v1/cache-list": {
                "get": _op(
                    "Retrieves all the maps in the cache", "Every map of the calling service.",
                    {"200": {"description": "The caller's maps", "content": {_JSON: {"schema": _ref("AllMaps")}}}},
                    op_id="getAllMaps", tag="cache-list",
                ),
            },
            "/cachingservice/api/v1/cache-query": {
                "post": {
                    **_op(
                        "Looks up specific items across cache maps",
                        "Takes the item keys to look up grouped by map key, and returns only the entries that exist "
                        "(and have not expired); a map with no matching item is left out. A null list counts as "
                        "empty, null item keys are skipped. Zowe 3.6; each storage looks up only the items asked "
                        "for.",
                        {
                            "200": {"description": "The items found",
                                    "content": {_JSON: {"schema": _ref("AllMaps")}}},
                            "400": _error(
                                "No body, not such an object, or more than 66 keys in all", "ZWECS130E",
                                "org.zowe.apiml.cache.invalidPayload",
                                "Payload '67' is not valid: 'Too many keys requested at once, the limit is 66'.",
                            ),
                            "413": _R413,
                        },
                        op_id="getMapItems", tag="cache-list",
                    ),
                    "requestBody": {"required": True, "content": {_JSON: {"schema": _ref("MapQuery")}}},
                },
            },
            "/cachingservice/api/v1/cache-list/{mapKey}": {
                "get": _op(
                    "Retrieves all the items in the cache map", "The items of one map of the calling service.",
                    {"200": {"description": "The map's items", "content": {_JSON: {"schema": _ref("MapItems")}}}},
                    params=[_MAP_KEY], op_id="getAllMapItems", tag="cache-list",
                ),
                "post": _op(
                    "Add a new item in the cache map",
                    "Puts the body's key -> value in the map (replacing an item with the same key).",
                    {"201": {"description": "Stored (no body)"}, "400": _R400, "413": _R413},
                    body=True, params=[_MAP_KEY], op_id="storeMapItem", tag="cache-list",
                ),
            },
            "/cachingservice/api/v1/cache-list/evict/rules/{mapKey}": {
                "delete": _op(
                    "Delete a record from a rules map in the cache",
                    "Removes the map's items whose value (epoch milliseconds) is more than 90 days old.",
                    {"204": {"description": "Done (no body)"}},
                    params=[_MAP_KEY], op_id="evictRules", tag="cache-list",
                ),
            },
            "/cachingservice/api/v1/cache-list/evict/tokens/{mapKey}": {
                "delete": _op(
                    "Delete a record from an invalid tokens map in the cache",
                    "Removes the map's items whose value (JSON with expiresAt) has expired.",
                    {"204": {"description": "Done (no body)"}},
                    params=[_MAP_KEY], op_id="evictTokens", tag="cache-list",
                ),
            },
            "/cachingservice/application/health": {
                "get": {
                    "tags": ["application"],
                    "operationId": "health",
                    "summary": "Health (Spring Boot actuator style)",
                    "responses": {
                        "200": {"description": "UP", "content": {_JSON: {"schema": _ref("Health")}}},
                        "503": {"description": "DOWN: the storage does not answer",
                                "content": {_JSON: {"schema": _ref("Health")}}},
                    },
                }
            },
            "/cachingservice/application/info": {
                "get": {
                    "tags": ["application"],
                    "operationId": "info",
                    "summary": "Build information",
                    "responses": {"200": {"description": "Build and storage",
                                          "content": {_JSON: {"schema": {"type": "object"}}}}},
                }
            },
            "/cachingservice/v3/api-docs": {
                "get": {
                    "tags": ["application"],
                    "operationId": "apiDocs",
                    "summary": "This document (also at /cachingservice/api-doc)",
                    "responses": {"200": {"description": "OpenAPI 3 document",
                                          "content": {_JSON: {"schema": {"type": "object"}}}}},
                }
            },
        },
        "components": {
            "schemas": {
                "KeyValue": {
                    "type": "object",
                    "description": "An entry. Fields left out of a request are \"\"; an explicit null key or value "
                    "is 400. Empty fields are left out of responses.",
                    "properties": {
                        "key": {"type": "string", "example": "invalidToken-1"},
                        "value": {"type": "string", "example": "eyJhbGciOi..."},
                        "serviceId": {"type": "string", "readOnly": True,
                                      "description": "The caller's partition (set by the service)"},
                        "created": {"type": "string", "pattern": "^-?[0-9]+$", "example": "1700000000000",
                                    "description": "Epoch milliseconds; the request time unless the client sends "
                                    "it. removeOldest evicts the smallest."},
                        "ttlSeconds": {"type": "integer", "format": "int64", "nullable": True, "writeOnly": True,
                                       "description": "Time to live in seconds (at most 90 days; zero or less "
                                       "removes the entry or map item instead of storing it). Without it, items of "
                                       "invalidTokens live until the token's expiresAt, of invalidUsers and "
                                       "invalidScopes until the rule's time + 90 days; other items and entries "
                                       "never expire."},
                    },
                },
                "MapQuery": {
                    "type": "object", "additionalProperties": {
                        "type": "array", "nullable": True, "items": {"type": "string", "nullable": True}},
                    "example": {"invalidTokens": ["5f0c..."], "invalidUsers": ["user1"]},
                },
                "KeyValueMap": {"type": "object", "additionalProperties": _ref("KeyValue")},
                "MapItems": {"type": "object", "additionalProperties": {"type": "string"}},
                "AllMaps": {"type": "object", "additionalProperties": _ref("MapItems")},
                "ApiMessage": {
                    "type": "object",
                    "properties": {
                        "messageType": {"type": "string", "enum": ["ERROR", "WARNING", "INFO"]},
                        "messageNumber": {"type": "string", "example": "ZWECS131E"},
                        "messageContent": {"type": "string"},
                        "messageReason": {"type": "string"},
                        "messageAction": {"type": "string"},
                        "messageKey": {"type": "string", "example": "org.zowe.apiml.cache.keyNotInCache"},
                    },
                },
                "ApiMessageView": {
                    "type": "object",
                    "properties": {"messages": {"type": "array", "items": _ref("ApiMessage")}},
                },
                "Health": {
                    "type": "object",
                    "properties": {
                        "status": {"type": "string", "enum": ["UP", "DOWN"]},
                        "components": {"type": "object"},
                    },
                },
            },
            "parameters": {
                "DistinguishedName": {
                    "name": "X-Certificate-DistinguishedName", "in": "header", "required": False,
                    "description": "The caller's DN (set by the gateway). With a verified client certificate it "
                    "must name the certificate's subject (else 401 ZWECS800E).",
                    "schema": {"type": "string"}, "example": "CN=gateway,OU=Zowe,O=ACME,C=US",
                },
                "ServiceId": {
                    "name": "X-CS-Service-ID", "in": "header", "required": False,
                    "description": "The service on whose behalf the caller stores (the entries' serviceId; with "
                    "a DN: \"<DN>, SERVICE=<id>\"). The DN and the service id are kept apart: a service id that "
                    "spells a DN (or \"<DN>, SERVICE=<id>\") never reaches that DN's entries; on the zowe layout, "
                    "which keeps Zowe's partition strings, such a service id (one holding '=') without a DN is 401 "
                    "ZWECS800E.",
                    "schema": {"type": "string"}, "example": "zowe.apiml.gateway",
                },
            },
            "responses": {
                "Unauthorized": _error(
                    "No identity (neither header nor certificate: ZWECS702W), or a header DN the client certificate "
                    "contradicts, or a service id that could spell a DN on the zowe layout (ZWECS800E)", "ZWECS702W",
                    "org.zowe.apiml.cache.missingCertificate",
                    "Missing header with certificate.", "WARNING",
                ),
                "Forbidden": _error(
                    "The service requires a client certificate and the request has none", "ZWECS801E",
                    "org.zowe.apiml.cache.certificateRequired",
                    "A client certificate is required: the request came without a client certificate",
                ),
                "InvalidPayload": _error(
                    "The body is not a KeyValue (none, not JSON, an explicit null key or value), or the entry does "
                    "not fit the storage's record (ZWECS137E)", "ZWECS130E", "org.zowe.apiml.cache.invalidPayload",
                    "Payload 'null' is not valid: 'No KeyValue provided in the payload'.",
                ),
                "BodyTooLarge": _error(
                    "The body is larger than the service reads", "ZWECS130E", "org.zowe.apiml.cache.invalidPayload",
                    "Payload '2000000 bytes' is not valid: 'A request body holds at most 1048576 bytes'.",
                ),
                "NotInCache": _error(
                    "The key is not stored for the caller", "ZWECS131E", "org.zowe.apiml.cache.keyNotInCache",
                    "Key 'k' is not in the cache for service 'CN=gateway,OU=Zowe,O=ACME,C=US'",
                ),
                "NotAvailable": _error(
                    "The storage is not available (Redis down, the data set cannot be opened or is damaged)",
                    "ZWECS703W", "org.zowe.apiml.cache.notAvailable",
                    "Cache is not available: Redis: ConnectionError: ...", "WARNING",
                ),
                "InternalError": _error(
                    "The storage failed", "ZWEAM701E", "org.zowe.apiml.common.internalRequestError",
                    "The request to the URL 'https://host:7555/cachingservice/api/v1/cache' has failed: ... "
                    "caused by: ...",
                ),
            },
            "securitySchemes": {
                "dnHeader": {"type": "apiKey", "in": "header", "name": "X-Certificate-DistinguishedName"},
                "serviceIdHeader": {"type": "apiKey", "in": "header", "name": "X-CS-Service-ID"},
            },
        },
        "security": [{"dnHeader": []}, {"serviceIdHeader": []}],
    }
    if server_url:
        doc["servers"] = [{"url": server_url}]
    return doc
