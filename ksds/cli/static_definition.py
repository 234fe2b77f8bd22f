"""ksds static-definition: write the Zowe API ML static definition (YAML) that onboards ``ksds serve`` without Eureka.

The discovery service reads static definitions from its directory (``ZWE_STATIC_DEFINITIONS_DIR``, zowe.yaml's
``zowe.workspaceDirectory``/api-mediation/api-defs) and lists the service as if it had registered: service
``cachingservice`` with the route, x509 authentication headers, catalog tile and API information Zowe's caching
service registers (:mod:`ksds.caching.eureka`), at the instance URLs given.
"""

from __future__ import annotations

import argparse
import os
import socket
from urllib.parse import urlsplit

from ..caching.eureka import DEFAULT_GATEWAY_PORT, static_definition
from ..caching.zowe_env import GATEWAY_PORT, HOSTNAME, PORT, ZoweEnvError, translate
from ._common import OK, USAGE, CliError, Subparsers, add_verb, whole_number

PROG = "ksds static-definition"

EXAMPLES = """
  ksds static-definition --url https://cs1.example.com:7555 --url https://cs2.example.com:7555 \\
      --output /zowe/workspace/api-mediation/api-defs/cachingservice.yml
  ksds static-definition                  (one instance: https://$ZWE_haInstance_hostname:$ZWE_configs_port)
  ksds static-definition --hostname cs.example.com --port 7556 --scheme http
the instances are --url URLs (scheme://host:port of each ksds serve), else one made of --scheme (https), --hostname
(ZWE_haInstance_hostname, else this machine's name) and --port (ZWE_configs_port, else 7555); --gateway-port is
the apiml.gatewayPort metadata (ZWE_components_gateway_port, else 7554). Written to --output, else to stdout.
"""


def register(sub: Subparsers) -> None:
    p = add_verb(
        sub,
        "static-definition",
        "write the Zowe API ML static definition (YAML) of the caching service served by ksds serve",
        "Write the API ML static definition that onboards ksds serve to Zowe's gateways without Eureka: service "
        "cachingservice, route api/v1 -> /cachingservice/api/v1, x509 authentication, the zowe catalog tile and the "
        "API information of Zowe's caching service, one instance per --url.",
        EXAMPLES,
    )
    p.add_argument("--url", action="append", metavar="URL", help="an instance: scheme://host:port (again for more)")
    p.add_argument("--hostname", metavar="NAME", help="the instance's host name [ZWE_haInstance_hostname]")
    p.add_argument("--port", type=whole_number(PROG, "--port", 1, 65535), metavar="N",
                   help="the instance's port (default 7555) [ZWE_configs_port]")
    p.add_argument("--scheme", choices=("https", "http"), default="https", help="https (default) or http")
    p.add_argument("--gateway-port", type=whole_number(PROG, "--gateway-port", 1, 65535), metavar="N",
                   help=f"the gateway's port (default {DEFAULT_GATEWAY_PORT}) [ZWE_components_gateway_port]")
    p.add_argument("--output", metavar="FILE", help="write the definition to FILE (default: stdout)")
    p.set_defaults(func=run)


def _check_url(url: str) -> str:
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.scheme not in ("http", "https") or not parts.hostname or port is None or parts.path not in ("", "/"):
        raise CliError(f"--url {url}: an instance URL is scheme://host:port (http or https, with the port, no path)",
                       USAGE)
    return url.rstrip("/")


def run(args: argparse.Namespace) -> int:
    try:
        launch = translate({k: v for k, v in os.environ.items() if k in (HOSTNAME, PORT, GATEWAY_PORT)})
    except ZoweEnvError as e:
        raise CliError(str(e), USAGE) from None
    if args.url:
        if args.hostname or args.port is not None:
            raise CliError("--url gives the instances: --hostname and --port are for one made without it", USAGE)
        urls = [_check_url(u) for u in args.url]
    else:
        hostname = args.hostname or launch.hostname or socket.getfqdn()
        port = args.port if args.port is not None else launch.port or 7555
        host = f"[{hostname}]" if ":" in hostname else hostname
        urls = [f"{args.scheme}://{host}:{port}"]
    gateway_port = args.gateway_port or launch.gateway_port or DEFAULT_GATEWAY_PORT
    text = static_definition(urls, gateway_port)
    if args.output is None:
        print(text, end="")
        return OK
    try:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(text)
    except OSError as e:
        raise CliError(f"cannot write {args.output}: {e.strerror or e}") from None
    print(f"ksds static-definition: wrote the static definition of {len(urls)} instance(s) to {args.output}")
    return OK
