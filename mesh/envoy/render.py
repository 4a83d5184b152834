"""Render the Envoy edge config for HACS from one Jinja2 template.

The edge is the only door into the mesh: it verifies the caller's JWT, copies the
token's tenant claim into ``x-hacs-tenant``, rate-limits per tenant (globally through
the rate-limit service when one is set, else with this Envoy's own buckets) and routes
each gRPC service to its cluster. Everything that differs between a laptop (all-in-one)
and a cluster (mesh) is a value of :class:`EdgeSettings`; the template holds the rest.

    python -m mesh.envoy.render --out /tmp/envoy.yaml --grpc-upstream 127.0.0.1:50051
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jinja2

TEMPLATE_PATH = Path(__file__).with_name("envoy.yaml.j2")

HACS_SERVICES: tuple[str, ...] = (
    "hacs.tenant.v1.TenantService",
    "hacs.records.v1.RecordService",
    "hacs.embedding.v1.EmbeddingService",
    "hacs.search.v1.SearchService",
    "hacs.rag.v1.RagService",
    "hacs.memory.v1.MemoryService",
    "hacs.sync.v1.SyncService",
)

# Health and reflection are answered by every HACS process, so they go to the
# tenant service's cluster (the only cluster in all-in-one mode).
SHARED_SERVICES: tuple[str, ...] = (
    "grpc.health.v1.Health",
    "grpc.reflection.v1alpha.ServerReflection",
    "grpc.reflection.v1.ServerReflection",
)

# Methods a caller must reach before it has a token.
TOKEN_PATH = "/hacs.tenant.v1.TenantService/IssueToken"
# The methods that take a credential in the request (an API key, an identity provider's
# token, a directory password): one bucket per client for all three, the guessing bound.
CREDENTIAL_METHODS: tuple[str, ...] = (
    TOKEN_PATH,
    "/hacs.tenant.v1.TenantService/ExchangeToken",
    "/hacs.tenant.v1.TenantService/SignInWithPassword",
)
# Browser sign-in routes (served by the tenant service's HTTP port): open, and limited with
# the credential methods (a callback's URL is unique, so never a bucket of its own).
AUTH_PREFIX = "/auth/"
CREDENTIAL_PATHS = (
    "^(/hacs\\.tenant\\.v1\\.TenantService/(IssueToken|ExchangeToken|SignInWithPassword)$|/auth/)"
)
TOKEN_FREE_METHODS: tuple[str, ...] = (
    *CREDENTIAL_METHODS,
    "/hacs.tenant.v1.TenantService/GetJwks",
)

DEFAULT_GRPC_PORT = 50051
DEFAULT_JWKS_URI = "http://127.0.0.1:9464/.well-known/jwks.json"


@dataclass(frozen=True)
class Upstream:
    """One gRPC endpoint: an IP literal or a DNS name (e.g. ``tenant.hacs.svc``)."""

    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Upstream:
        """Parse ``host:port`` (or ``[v6]:port``)."""
        host, sep, port = text.strip().rpartition(":")
        host = host.strip("[]")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"expected host:port, got {text!r}")
        return cls(host, int(port))

    @property
    def is_ip(self) -> bool:
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            return False
        return True


# What serves a service: one endpoint, or several replicas Envoy balances over.
Endpoints = Upstream | tuple[Upstream, ...]


def endpoints_of(value: Endpoints) -> tuple[Upstream, ...]:
    return value if isinstance(value, tuple) else (value,)


def all_in_one_upstreams(upstream: Upstream) -> dict[str, Endpoints]:
    """Every HACS service served by one process (``hacs serve``)."""
    return {service: upstream for service in HACS_SERVICES}


@dataclass(frozen=True)
class EdgeTls:
    """TLS at the edge and mTLS to the services, from PEM files Envoy follows on disk.

    Envoy reads each certificate through a file-based secret (SDS): the files
    :func:`render_sds` writes name the PEM files and the directory holding them, and Envoy
    loads them again whenever a file is moved into that directory (``hacs certs
    --rotate``, or Kubernetes updating a mounted Secret), without a restart.
    """

    sds_dir: str  # where the rendered SDS files are (they are part of the config)
    cert: str  # the edge's certificate: served to clients, presented to the services
    key: str
    ca: str  # verifies the services (and client certificates, when asked for)
    # Ask clients for a certificate of `ca` at the edge: "off", "optional" or "require".
    client_certificates: str = "off"
    # A certificate served to clients instead of `cert` (e.g. one a public CA signed for
    # the name clients use); `cert` is then only presented to the services. Both or neither.
    server_cert: str = ""
    server_key: str = ""

    def __post_init__(self) -> None:
        paths = [("sds_dir", self.sds_dir), ("cert", self.cert), ("key", self.key), ("ca", self.ca)]
        if bool(self.server_cert) != bool(self.server_key):
            raise ValueError("tls.server_cert and tls.server_key go together")
        if self.server_cert:
            paths += [("server_cert", self.server_cert), ("server_key", self.server_key)]
        for label, path in paths:
            if not path.startswith("/"):
                raise ValueError(f"tls.{label} must be an absolute path, got {path!r}")
        if self.client_certificates not in ("off", "optional", "require"):
            raise ValueError("tls.client_certificates must be off, optional or require")

    @property
    def served_secret(self) -> str:
        """The secret the listener serves: the edge's own certificate, or `server_cert`'s."""
        return EDGE_SERVER_CERTIFICATE if self.server_cert else EDGE_CERTIFICATE

    def sds_path(self, secret: str) -> str:
        return f"{self.sds_dir.rstrip('/')}/{secret}.yaml"


# The file-based secrets of the edge (see render_sds); the third only with a server_cert.
EDGE_CERTIFICATE = "hacs_edge_certificate"
EDGE_CA = "hacs_ca"
EDGE_SERVER_CERTIFICATE = "hacs_edge_server_certificate"


@dataclass(frozen=True)
class EdgeSettings:
    """Every value the edge config depends on; defaults give the embedded mode."""

    upstreams: dict[str, Endpoints] = field(
        default_factory=lambda: all_in_one_upstreams(Upstream("127.0.0.1", DEFAULT_GRPC_PORT))
    )
    listen_host: str = "0.0.0.0"
    listen_port: int = 8080
    # Prometheus stats (and readiness) on a listener of their own, loopback only; nothing
    # else of the admin API is reachable there.
    stats_port: int = 9901
    # The admin API (it can drain, stop and reconfigure Envoy) on a Unix socket only its
    # user may open: the operator, through `curl --unix-socket`.
    admin_socket: str = "/tmp/hacs-envoy-admin.sock"
    jwks_uri: str = DEFAULT_JWKS_URI
    jwt_issuer: str = "hacs"
    jwt_audiences: list[str] = field(default_factory=lambda: ["hacs"])
    tenant_claim: str = "tenant"
    tenant_header: str = "x-hacs-tenant"
    default_calls_per_minute: int = 600
    tenant_calls_per_minute: dict[str, int] = field(default_factory=dict)
    # Calls without a token are limited per client address: IssueToken on its own bucket,
    # every other open method (GetJwks, health, reflection) on one bucket per method, so a
    # flood of one never starves another, and one client never starves the rest.
    token_calls_per_minute: int = 120
    open_calls_per_minute: int = 600
    # Proxies in front of Envoy whose X-Forwarded-For is trusted for the client address
    # (a cloud load balancer: 1); 0 takes the connection's peer.
    trusted_proxy_hops: int = 0
    # Size of the LRU of buckets per tenant and per client; an evicted one restarts full.
    max_tracked_tenants: int = 10_000
    access_log_path: str = "/dev/stdout"
    cors_allowed_origins: list[str] = field(default_factory=list)
    # The gRPC servers' max message size. Bodies stream through Envoy under flow
    # control, so this bounds what the router may hold for a safe retry, not what passes.
    max_message_bytes: int = 16 * 1024 * 1024
    # None: plaintext (loopback, or Istio's sidecars carry mTLS); else TLS and mTLS.
    tls: EdgeTls | None = None
    # The global rate-limit service (`hacs serve --only ratelimit`): Envoy's ratelimit
    # filter asks it before each call, and this Envoy's own buckets (the limits above)
    # are not rendered. None: the local buckets, as before.
    ratelimit: Upstream | None = None
    # When the rate-limit service does not answer: "open" lets the call through,
    # "closed" refuses it (503, gRPC UNAVAILABLE).
    ratelimit_failure_mode: str = "open"
    # How long Envoy waits for its answer (the service gives up on Redis before this).
    ratelimit_timeout_ms: int = 500

    @property
    def stats_host(self) -> str:
        """Stats are for the scraper on this host (a sidecar or node agent): loopback only."""
        return "127.0.0.1"

    def __post_init__(self) -> None:
        if not self.upstreams:
            raise ValueError("at least one upstream service is required")
        if any(not endpoints_of(e) for e in self.upstreams.values()):
            raise ValueError("every upstream service needs at least one endpoint")
        endpoint_ports = [u.port for e in self.upstreams.values() for u in endpoints_of(e)]
        for port in (self.listen_port, self.stats_port, *endpoint_ports):
            if not 0 < port < 65536:
                raise ValueError(f"port out of range: {port}")
        if self.listen_port == self.stats_port:
            raise ValueError("listen_port and stats_port must differ")
        if not self.admin_socket.startswith("/") or len(self.admin_socket) > 100:
            raise ValueError("admin_socket must be an absolute path of at most 100 characters")
        if not 0 <= self.trusted_proxy_hops <= 5:
            raise ValueError("trusted_proxy_hops must be between 0 and 5")
        for limit in (
            self.default_calls_per_minute,
            self.token_calls_per_minute,
            self.open_calls_per_minute,
            *self.tenant_calls_per_minute.values(),
        ):
            if limit < 1:
                raise ValueError(f"calls per minute must be >= 1, got {limit}")
        scheme = "https" if self.tls is not None else "http"
        if urlsplit(self.jwks_uri).scheme != scheme or not urlsplit(self.jwks_uri).hostname:
            raise ValueError(
                f"jwks_uri must be an {scheme}:// URL (TLS {'on' if self.tls else 'off'}), "
                f"got {self.jwks_uri!r}"
            )
        if self.ratelimit_failure_mode not in ("open", "closed"):
            raise ValueError("ratelimit_failure_mode must be open or closed")
        if not 1 <= self.ratelimit_timeout_ms <= 10_000:
            raise ValueError("ratelimit_timeout_ms must be between 1 and 10000")
        if self.ratelimit is not None and not 0 < self.ratelimit.port < 65536:
            raise ValueError(f"port out of range: {self.ratelimit.port}")
        if self.tenant_header != self.tenant_header.lower():
            raise ValueError("tenant_header must be lower case (HTTP/2 header names are)")


def _short_name(service: str) -> str:
    """``hacs.tenant.v1.TenantService`` -> ``tenant``."""
    parts = service.split(".")
    return parts[1] if len(parts) > 2 and parts[0] == "hacs" else parts[-1].lower()


def _ordered_services(upstreams: Mapping[str, Endpoints]) -> list[str]:
    known = [s for s in HACS_SERVICES if s in upstreams]
    return known + sorted(s for s in upstreams if s not in HACS_SERVICES)


def _clusters(settings: EdgeSettings) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """One cluster per distinct set of endpoints; returns the clusters and service -> cluster.

    A service with several endpoints (replicas) gets least-request balancing: calls differ
    a lot in cost (a Search against a long Watch), so round robin would queue behind the
    busiest replica.
    """
    services_by_endpoints: dict[tuple[Upstream, ...], list[str]] = {}
    for service in _ordered_services(settings.upstreams):
        endpoints = endpoints_of(settings.upstreams[service])
        services_by_endpoints.setdefault(endpoints, []).append(service)

    clusters: list[dict[str, Any]] = []
    cluster_of: dict[str, str] = {}
    for endpoints, services in services_by_endpoints.items():
        if len(services_by_endpoints) == 1:
            name = "hacs"
        else:
            name = "hacs_" + "_".join(_short_name(s) for s in services)
        clusters.append(
            {
                "name": name,
                "endpoints": [{"host": u.host, "port": u.port} for u in endpoints],
                "lb_policy": "LEAST_REQUEST" if len(endpoints) > 1 else "ROUND_ROBIN",
                "type": "STATIC" if all(u.is_ip for u in endpoints) else "STRICT_DNS",
                # A process hosting several services reports overall health as "".
                "health_service": services[0] if len(services) == 1 else "",
                # With TLS, each endpoint's certificate must name the host it is reached by.
                "sans": [_san(h) for h in dict.fromkeys(u.host for u in endpoints)],
                "services": services,
            }
        )
        cluster_of.update(dict.fromkeys(services, name))
    return clusters, cluster_of


def _template_context(settings: EdgeSettings) -> dict[str, Any]:
    clusters, cluster_of = _clusters(settings)
    services = _ordered_services(settings.upstreams)
    shared_cluster = cluster_of.get(HACS_SERVICES[0], cluster_of[services[0]])
    routes = [{"prefix": f"/{s}/", "cluster": cluster_of[s]} for s in services]
    routes += [{"prefix": f"/{s}/", "cluster": shared_cluster} for s in SHARED_SERVICES]
    jwks = urlsplit(settings.jwks_uri)
    jwks_endpoint = Upstream(jwks.hostname or "", jwks.port or (443 if settings.tls else 80))
    return {
        "s": settings,
        "clusters": clusters,
        "routes": routes,
        "open_paths": list(TOKEN_FREE_METHODS),
        "credential_paths": CREDENTIAL_PATHS,
        "open_prefixes": [*(f"/{s}/" for s in SHARED_SERVICES), AUTH_PREFIX],
        "jwks_host": jwks_endpoint.host,
        "jwks_port": jwks_endpoint.port,
        "jwks_type": "STATIC" if jwks_endpoint.is_ip else "STRICT_DNS",
        "jwks_san": _san(jwks_endpoint.host),
        "tls": settings.tls,
        "ratelimit": _ratelimit_cluster(settings.ratelimit),
        "edge_certificate": EDGE_CERTIFICATE,
        "edge_ca": EDGE_CA,
    }


def _ratelimit_cluster(upstream: Upstream | None) -> dict[str, Any] | None:
    if upstream is None:
        return None
    return {
        "host": upstream.host,
        "port": upstream.port,
        "type": "STATIC" if upstream.is_ip else "STRICT_DNS",
        "san": _san(upstream.host),
    }


def _san(host: str) -> dict[str, str]:
    """What an upstream's certificate must name: its DNS name or its IP address."""
    return {"type": "IP_ADDRESS" if Upstream(host, 1).is_ip else "DNS", "value": host}


def render(settings: EdgeSettings) -> str:
    """Return the Envoy bootstrap YAML for ``settings``."""
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATE_PATH.parent),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )
    # JSON strings are valid YAML scalars: every user value is quoted safely.
    environment.filters["q"] = json.dumps
    return environment.get_template(TEMPLATE_PATH.name).render(**_template_context(settings))


def render_sds(settings: EdgeSettings) -> dict[str, str]:
    """The file-based secrets the config names, as {path: YAML}; empty without TLS.

    Each lists the PEM files and watches their directory: Envoy reloads a secret when a
    file is moved into it (an atomic rename, as `hacs certs` and Kubernetes do).
    """
    tls = settings.tls
    if tls is None:
        return {}

    def watched(path: str) -> dict[str, str]:
        return {"path": str(Path(path).parent)}

    def certificate(name: str, cert: str, key: str) -> dict[str, Any]:
        return {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
            "name": name,
            "tls_certificate": {
                "certificate_chain": {"filename": cert},
                "private_key": {"filename": key},
                "watched_directory": watched(cert),
            },
        }

    authority = {
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
        "name": EDGE_CA,
        "validation_context": {
            "trusted_ca": {"filename": tls.ca},
            "watched_directory": watched(tls.ca),
        },
    }
    secrets = {
        EDGE_CERTIFICATE: certificate(EDGE_CERTIFICATE, tls.cert, tls.key),
        EDGE_CA: authority,
    }
    if tls.server_cert:
        secrets[EDGE_SERVER_CERTIFICATE] = certificate(
            EDGE_SERVER_CERTIFICATE, tls.server_cert, tls.server_key
        )
    header = "# HACS edge secret, rendered by mesh/envoy/render.py (JSON is YAML).\n"
    return {
        tls.sds_path(name): header + json.dumps({"resources": [secret]}, indent=2)
        for name, secret in secrets.items()
    }


def _service_name(name: str) -> str:
    """Accept a full service name or its short form (``search``)."""
    if name in HACS_SERVICES or "." in name:
        return name
    for service in HACS_SERVICES:
        if _short_name(service) == name:
            return service
    raise ValueError(f"unknown service {name!r}; use one of {', '.join(HACS_SERVICES)}")


def _pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key or not value:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return key, value


def settings_from(argv: Sequence[str], environ: Mapping[str, str]) -> tuple[EdgeSettings, str]:
    """Build settings from the environment, then let CLI flags override; returns (settings, out)."""
    parser = argparse.ArgumentParser(prog="python -m mesh.envoy.render", description=__doc__)
    parser.add_argument("--out", required=True, help="file to write ('-' for stdout)")
    parser.add_argument("--grpc-upstream", help="host:port serving every service (all-in-one)")
    parser.add_argument(
        "--service-upstream",
        action="append",
        default=[],
        type=_pair,
        metavar="NAME=HOST:PORT",
        help="one service's endpoint (mesh mode); NAME is the full or short name; repeat a "
        "NAME to list its replicas",
    )
    parser.add_argument("--jwks-uri")
    parser.add_argument("--listen-port", type=int)
    parser.add_argument("--stats-port", type=int)
    parser.add_argument("--admin-socket")
    parser.add_argument("--default-calls-per-minute", type=int)
    parser.add_argument(
        "--tenant-calls-per-minute",
        action="append",
        default=[],
        type=_pair,
        metavar="TENANT=N",
        help="per-tenant override of the default limit",
    )
    parser.add_argument("--cors-origin", action="append", default=[], help="gRPC-Web origin")
    parser.add_argument(
        "--ratelimit-upstream",
        metavar="HOST:PORT",
        help="the global rate-limit service (replaces this Envoy's own buckets)",
    )
    parser.add_argument("--ratelimit-failure-mode", choices=("open", "closed"))
    parser.add_argument("--access-log-path")
    args = parser.parse_args(argv)

    def pick(flag: Any, env_name: str) -> str | None:
        return str(flag) if flag is not None else environ.get(env_name) or None

    default_upstream = Upstream.parse(
        pick(args.grpc_upstream, "HACS_EDGE_GRPC_UPSTREAM") or f"127.0.0.1:{DEFAULT_GRPC_PORT}"
    )
    upstreams = all_in_one_upstreams(default_upstream)
    listed: dict[str, tuple[Upstream, ...]] = {}
    for name, endpoint in args.service_upstream:
        service = _service_name(name)
        listed[service] = (*listed.get(service, ()), Upstream.parse(endpoint))
    for service, endpoints in listed.items():
        upstreams[service] = endpoints[0] if len(endpoints) == 1 else endpoints

    overrides: dict[str, Any] = {"upstreams": upstreams}
    for key, flag, env_name, convert in (
        ("listen_port", args.listen_port, "HACS_EDGE_LISTEN_PORT", int),
        ("stats_port", args.stats_port, "HACS_EDGE_STATS_PORT", int),
        ("admin_socket", args.admin_socket, "HACS_EDGE_ADMIN_SOCKET", str),
        ("jwks_uri", args.jwks_uri, "HACS_EDGE_JWKS_URI", str),
        (
            "default_calls_per_minute",
            args.default_calls_per_minute,
            "HACS_EDGE_CALLS_PER_MINUTE",
            int,
        ),
        ("access_log_path", args.access_log_path, "HACS_EDGE_ACCESS_LOG_PATH", str),
        ("ratelimit", args.ratelimit_upstream, "HACS_RATELIMIT_URL", Upstream.parse),
        (
            "ratelimit_failure_mode",
            args.ratelimit_failure_mode,
            "HACS_RATELIMIT_FAILURE_MODE",
            str,
        ),
    ):
        value = pick(flag, env_name)
        if value is not None:
            overrides[key] = convert(value)
    if args.tenant_calls_per_minute:
        overrides["tenant_calls_per_minute"] = {t: int(n) for t, n in args.tenant_calls_per_minute}
    if args.cors_origin:
        overrides["cors_allowed_origins"] = list(args.cors_origin)
    return EdgeSettings(**overrides), args.out


def main(argv: Sequence[str] | None = None) -> int:
    settings, out = settings_from(sys.argv[1:] if argv is None else argv, os.environ)
    config = render(settings)
    if out == "-":
        sys.stdout.write(config)
    else:
        Path(out).write_text(config, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
