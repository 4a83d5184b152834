"""One settings object per process, read from the environment once.

Every field has a default that gives the embedded (all-in-one) mode, so
`hacs serve` needs no configuration. `hacs config --markdown` prints the table
the README carries, from the declarations below, so the two cannot drift.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

# What HACS_EMBEDDING_PRECISION and HACS_EMBEDDING_WORKER accept (the embedding package
# checks the same names when a model is loaded).
EMBEDDING_PRECISIONS = ("auto", "float32", "bfloat16")
EMBEDDING_WORKERS = ("process", "thread")

ALL_SERVICES = ("tenant", "records", "embedding", "search", "rag", "memory", "sync")
# Hosted only when named (`hacs serve --only ratelimit`), never by `all`: the edge's global
# rate-limit service, which only the mesh (Redis) needs.
OPTIONAL_SERVICES = ("ratelimit",)

RATELIMIT_FAILURE_MODES = ("open", "closed")
# What a call costs the tenant's global limit, by method (HACS_RATELIMIT_WEIGHTS); any
# method not listed costs 1 (writes and reads alike).
DEFAULT_METHOD_WEIGHTS = (
    "RagService/Answer=10,RagService/Retrieve=2,SearchService/Search=2,MemoryService/Recall=2"
)


TLS_MODES = ("off", "on", "external")


def is_milvus_lite(uri: str) -> bool:
    """Whether a Milvus URI names Milvus Lite data on this machine (a path), not a server."""
    return not uri.startswith(("http://", "https://", "tcp://", "unix:"))


def is_loopback(host: str) -> bool:
    """Whether a listen host is reachable from this machine only."""
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _env(name: str, default: str, help_text: str) -> Any:
    """A setting: its environment variable, its default (as text) and what it does."""
    return field(default=default, metadata={"env": name, "help": help_text})


def _secret_env(name: str, help_text: str) -> Any:
    """A setting that carries a credential: also read from the file `<name>_FILE` names (a
    mounted Secret, so the value is in no process environment), never printed."""
    return field(
        default="",
        metadata={
            "env": name,
            "help": f"{help_text} Or a file: `{name}_FILE`.",
            "secret": True,
        },
    )


def is_secret(f: Any) -> bool:
    """Whether a Settings field holds a credential (its value is never printed)."""
    return bool(f.metadata.get("secret"))


@dataclass(frozen=True)
class Settings:
    data_dir: str = _env(
        "HACS_DATA_DIR",
        ".hacs",
        "Where embedded state lives: SQLite file, signing keys, Milvus Lite.",
    )
    database_url: str = _secret_env(
        "HACS_DATABASE_URL",
        "SQLAlchemy URL. Empty: SQLite at `$HACS_DATA_DIR/hacs.db`. "
        "PostgreSQL: `postgresql+asyncpg://user:pass@host:5432/hacs`.",
    )
    database_pool_size: int = _env(
        "HACS_DATABASE_POOL_SIZE", "10", "Connections per process (PostgreSQL)."
    )
    auto_migrate: bool = _env(
        "HACS_AUTO_MIGRATE",
        "true",
        "Run Alembic migrations at start (mesh: run `hacs migrate` once).",
    )
    services: str = _env(
        "HACS_SERVICES",
        "all",
        "Services this process hosts: `all` or e.g. `search,rag` (same as `--only`).",
    )
    grpc_listen: str = _env(
        "HACS_GRPC_LISTEN", "127.0.0.1:50051", "gRPC bind address (pods: `0.0.0.0:50051`)."
    )
    workers: int = _env(
        "HACS_WORKERS",
        "1",
        "Worker processes serving the gRPC and HTTP ports together (`hacs serve --workers`), "
        "each with its own event loop; `0`: one per core. Kubernetes: 1 per pod, the HPA "
        "adds pods (docs/architecture.md, Workers).",
    )
    relay_socket: str = _env(
        "HACS_RELAY_SOCKET",
        "",
        "Set by `hacs serve --workers` for its workers, not by operators: the supervisor's "
        "Unix socket that carries change notices, registry announcements and sync's shared "
        "values between them.",
    )
    worker_index: int = _env(
        "HACS_WORKER_INDEX",
        "0",
        "Set by `hacs serve --workers`: this worker's number (worker 0 runs the indexers).",
    )
    worker_grpc_listen: str = _env(
        "HACS_WORKER_GRPC_LISTEN",
        "",
        "Set by `hacs serve --workers`: this worker's own gRPC address beside the shared "
        "port (Envoy balances calls over the workers' own addresses).",
    )
    http_listen: str = _env(
        "HACS_HTTP_LISTEN",
        "127.0.0.1:9464",
        "HTTP bind address for `/metrics`, `/healthz`, `/readyz`, `/.well-known/jwks.json`.",
    )
    tls: str = _env(
        "HACS_TLS",
        "off",
        "`off`: plaintext, allowed on loopback addresses only; `on`: TLS on the gRPC and "
        "HTTP ports and mTLS between services (certificates below; `hacs certs` makes "
        "development ones); `external`: plaintext on any address because a sidecar (Istio) "
        "terminates mTLS in front of the process (docs/security.md).",
    )
    tls_dir: str = _env(
        "HACS_TLS_DIR",
        "",
        "Where the certificates are when the three files below are not set: "
        "`<dir>/<name>.pem`, `<dir>/<name>-key.pem`, `<dir>/ca.pem`, where <name> is the "
        "one service hosted, else `serve`. Empty: `$HACS_DATA_DIR/tls`.",
    )
    tls_cert_file: str = _env(
        "HACS_TLS_CERT_FILE", "", "This process's certificate chain (PEM); re-read on change."
    )
    tls_key_file: str = _env("HACS_TLS_KEY_FILE", "", "Its private key (PEM); re-read on change.")
    tls_ca_file: str = _env(
        "HACS_TLS_CA_FILE",
        "",
        "The CA bundle that verifies client certificates and the services this one calls.",
    )
    tls_client_auth: str = _env(
        "HACS_TLS_CLIENT_AUTH",
        "require",
        "With HACS_TLS=on, whether gRPC callers must present a certificate of that CA "
        "(`require`: Envoy and the other services do) or may (`optional`).",
    )
    max_message_bytes: int = _env(
        "HACS_MAX_MESSAGE_BYTES", "16777216", "Largest gRPC message accepted or sent (16 MiB)."
    )
    grpc_max_connection_age_seconds: int = _env(
        "HACS_GRPC_MAX_CONNECTION_AGE_SECONDS",
        "1800",
        "Close each client connection after this long (calls in flight get 60 s more) so load "
        "rebalances across replicas; a longer stream is cut with UNAVAILABLE. `0`: never.",
    )
    shutdown_grace_seconds: int = _env(
        "HACS_SHUTDOWN_GRACE_SECONDS", "20", "On SIGTERM, time in-flight calls get to finish."
    )
    jwt_issuer: str = _env(
        "HACS_JWT_ISSUER", "hacs", "`iss` of issued tokens; verified on every call."
    )
    jwt_audience: str = _env(
        "HACS_JWT_AUDIENCE", "hacs", "`aud` of issued tokens; verified on every call."
    )
    token_ttl_seconds: int = _env("HACS_TOKEN_TTL_SECONDS", "900", "Default token lifetime.")
    token_max_ttl_seconds: int = _env(
        "HACS_TOKEN_MAX_TTL_SECONDS", "3600", "Longest lifetime a caller may ask for."
    )
    revocation_seconds: float = _env(
        "HACS_REVOCATION_SECONDS",
        "5",
        "Longest a replica trusts what it read about a tenant, actor or API key: a suspended "
        "tenant, a deleted actor, a revoked key or narrowed permissions reach every replica "
        "within it even when the Redis announcement is lost (at most 5).",
    )
    signing_keys_dir: str = _env(
        "HACS_SIGNING_KEYS_DIR",
        "",
        "Directory of RS256 private keys (PEM); the newest signs, all are published. "
        "Empty: `$HACS_DATA_DIR/keys`, generated on first start.",
    )
    jwks_url: str = _env(
        "HACS_JWKS_URL",
        "",
        "Where services without the tenant service in-process fetch the JWKS, e.g. "
        "`http://tenant.hacs.svc:9464/.well-known/jwks.json`.",
    )
    bootstrap_operator_key: str = _secret_env(
        "HACS_BOOTSTRAP_OPERATOR_KEY",
        "Platform operator API key to install at start (e.g. from a Secret). "
        "Empty: one is generated "
        "on first start and written to `$HACS_DATA_DIR/operator.key`.",
    )
    rate_limit_enabled: bool = _env(
        "HACS_RATE_LIMIT_ENABLED",
        "true",
        "Enforce each tenant's plan `calls_per_minute` in the service too (a bucket per "
        "process: the ceiling of one replica; the edge's limit is global).",
    )
    ratelimit_url: str = _env(
        "HACS_RATELIMIT_URL",
        "",
        "The global rate-limit service (`hacs serve --only ratelimit`, e.g. "
        "`hacs-ratelimit:50051`) Envoy asks before every call (`hacs up`, "
        "`python -m mesh.envoy.render`). Empty: each Envoy limits on its own buckets.",
    )
    ratelimit_failure_mode: str = _env(
        "HACS_RATELIMIT_FAILURE_MODE",
        "open",
        "When the global rate limit cannot be counted (Redis or the service down): `open` "
        "lets calls through (the services' own buckets still apply), `closed` refuses them "
        "with UNAVAILABLE. Read by Envoy's renderer and by the rate-limit service.",
    )
    ratelimit_burst_percent: int = _env(
        "HACS_RATELIMIT_BURST_PERCENT",
        "100",
        "Size of every rate-limit bucket, as a percentage of its calls per minute: what an "
        "idle tenant (or client) may spend at once; in any minute it gets at most its limit "
        "plus this. Applies to the global limit and to the services' own buckets.",
    )
    ratelimit_weights: str = _env(
        "HACS_RATELIMIT_WEIGHTS",
        DEFAULT_METHOD_WEIGHTS,
        "What one call of a method costs the tenant's global limit: `Service/Method=N` (or "
        "`Service/*=N`), comma-separated; unlisted methods cost 1.",
    )
    embedding_device: str = _env(
        "HACS_EMBEDDING_DEVICE",
        "auto",
        "`auto` (CUDA when a GPU is visible, else CPU), `cpu` or `cuda[:n]`.",
    )
    embedding_precision: str = _env(
        "HACS_EMBEDDING_PRECISION",
        "auto",
        "`auto` (float16 on a GPU; bfloat16 on a CPU with native bfloat16, else float32), "
        "`float32`, or `bfloat16`.",
    )
    embedding_worker: str = _env(
        "HACS_EMBEDDING_WORKER",
        "process",
        "`process`: each model runs in a child process of the service, so its forward pass "
        "never waits for the service's interpreter lock; `thread`: in the service's process.",
    )
    embedding_max_batch: int = _env(
        "HACS_EMBEDDING_MAX_BATCH", "64", "Most texts one micro-batch (one forward pass) carries."
    )
    embedding_max_wait_ms: int = _env(
        "HACS_EMBEDDING_MAX_WAIT_MS",
        "4",
        "How long a micro-batch waits for more requests to join it.",
    )
    embedding_url: str = _env(
        "HACS_EMBEDDING_URL",
        "",
        "Mesh: the embedding pods (`embedding.hacs.svc:50051`). Empty: embed in this process.",
    )
    tenant_url: str = _env(
        "HACS_TENANT_URL",
        "",
        "Mesh: the tenant pods' gRPC address (`hacs-tenant:50051`), where a service gets the "
        "token for its calls to another. Empty: the called service's own address.",
    )
    bootstrap_service_key: str = _secret_env(
        "HACS_BOOTSTRAP_SERVICE_KEY",
        "Tenant service: the services' API key to install at start (read:embedding only; "
        "`hacs admin new-service-key`); the callers hold the same value in "
        "HACS_SERVICE_API_KEY.",
    )
    service_api_key: str = _secret_env(
        "HACS_SERVICE_API_KEY",
        "Mesh: API key of a platform service actor, used for service-to-service calls.",
    )
    milvus_uri: str = _env(
        "HACS_MILVUS_URI",
        "",
        "Vector index. Empty: Milvus Lite at `$HACS_DATA_DIR/milvus.db`; a cluster: `http://milvus:19530`.",
    )
    milvus_token: str = _secret_env(
        "HACS_MILVUS_TOKEN",
        "Milvus server credentials (`user:password`) or a Zilliz Cloud API key. Empty: none.",
    )
    milvus_read_consistency: str = _env(
        "HACS_MILVUS_READ_CONSISTENCY",
        "bounded",
        "Milvus server reads: `bounded` (answer from what the server has applied; writes wait "
        "until readable, so acknowledged writes are seen) or `strong` (every read waits for the "
        "server's next time tick, ~200 ms by default).",
    )
    milvus_client_threads: int = _env(
        "HACS_MILVUS_CLIENT_THREADS",
        "32",
        "Threads for blocking Milvus calls (each waits on the server, so this bounds concurrent "
        "Milvus requests per process).",
    )
    lexical_engine: str = _env(
        "HACS_LEXICAL_ENGINE",
        "auto",
        "BM25 engine: `milvus` (a Milvus server 2.5+), `sqlite` (documents in "
        "`$HACS_DATA_DIR/lexical.db`, BM25 scored in memory per tenant), `auto` (milvus when the "
        "server indexes BM25, else sqlite: Milvus Lite scans).",
    )
    indexer_enabled: bool = _env(
        "HACS_INDEXER_ENABLED", "true", "Run the record indexer in processes that host search."
    )
    redis_url: str = _secret_env(
        "HACS_REDIS_URL",
        "Mesh: Redis for change notifications between replicas (`redis://redis:6379/0`). "
        "Empty: in-process.",
    )
    rag_max_document_bytes: int = _env(
        "HACS_RAG_MAX_DOCUMENT_BYTES",
        "67108864",
        "Largest document one RAG ingest accepts (64 MiB).",
    )
    llm_providers: str = _env(
        "HACS_LLM_PROVIDERS",
        "",
        "LLM providers `Answer` tries, in order: `anthropic:claude-sonnet-4,openai:gpt-4o-mini` "
        "or a JSON list (docs/rag.md). Empty: extractive answers. Keys: `HACS_OPENAI_API_KEY`, "
        "`HACS_ANTHROPIC_API_KEY` (or `<variable>_FILE`).",
    )
    llm_timeout_seconds: float = _env(
        "HACS_LLM_TIMEOUT_SECONDS",
        "20",
        "Connect and stall timeout per provider call (no bytes for this long = timeout).",
    )
    llm_total_timeout_seconds: float = _env(
        "HACS_LLM_TOTAL_TIMEOUT_SECONDS", "120", "Longest one provider call may take in all."
    )
    llm_max_retries: int = _env(
        "HACS_LLM_MAX_RETRIES", "2", "Extra tries on a transient error (never after a timeout)."
    )
    log_level: str = _env("HACS_LOG_LEVEL", "INFO", "Python log level.")
    log_format: str = _env(
        "HACS_LOG_FORMAT", "text", "`text` or `json` (one JSON object per line)."
    )
    otel_exporter: str = _env(
        "HACS_OTEL_EXPORTER",
        "none",
        "Trace exporter: `none`, `console`, or `otlp` (uses the standard `OTEL_EXPORTER_OTLP_*`).",
    )
    edge_listen_host: str = _env(
        "HACS_EDGE_LISTEN_HOST",
        "127.0.0.1",
        "`hacs up`: Envoy's bind address (`0.0.0.0` to expose it).",
    )
    edge_listen_port: int = _env("HACS_EDGE_LISTEN_PORT", "8080", "`hacs up`: Envoy's public port.")
    edge_stats_port: int = _env(
        "HACS_EDGE_STATS_PORT",
        "9901",
        "`hacs up`: Envoy's stats (`/stats/prometheus`) on loopback; its admin API is a Unix "
        "socket, `$HACS_DATA_DIR/envoy-admin.sock`.",
    )
    edge_calls_per_minute: int = _env(
        "HACS_EDGE_CALLS_PER_MINUTE", "6000", "`hacs up`: Envoy's per-tenant rate limit."
    )
    edge_token_calls_per_minute: int = _env(
        "HACS_EDGE_TOKEN_CALLS_PER_MINUTE",
        "120",
        "`hacs up` and the rate-limit service: calls per minute per client address to the "
        "methods that take a credential (`IssueToken`, `ExchangeToken`, "
        "`SignInWithPassword`, `/auth/`), one bucket for all of them.",
    )
    edge_open_calls_per_minute: int = _env(
        "HACS_EDGE_OPEN_CALLS_PER_MINUTE",
        "600",
        "`hacs up` and the rate-limit service: calls per minute per client address to each "
        "other method open without a token (`GetJwks`, health, reflection).",
    )
    edge_client_certificates: str = _env(
        "HACS_EDGE_CLIENT_CERTIFICATES",
        "off",
        "`hacs up` with HACS_TLS=on: whether the edge asks clients for a certificate of the "
        "HACS CA (`off`, `optional`, `require`); the bearer token is required either way.",
    )
    edge_trusted_proxy_hops: int = _env(
        "HACS_EDGE_TRUSTED_PROXY_HOPS",
        "0",
        "`hacs up`: proxies in front of Envoy whose `X-Forwarded-For` names the client (a "
        "cloud load balancer: 1); 0 takes the connection's peer address.",
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: str) -> Settings:
        """Read every HACS_* variable once; a malformed value fails here, naming it."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        problems: list[str] = []
        for f in fields(cls):
            raw = overrides.get(f.name, env.get(f.metadata["env"], f.default))
            if is_secret(f) and not raw:
                try:
                    raw = secret(f.metadata["env"], env)
                except ValueError as exc:
                    problems.append(str(exc))
                    continue
            try:
                values[f.name] = _convert(f.type, raw)
            except ValueError:
                problems.append(f"{f.metadata['env']}={raw!r} is not a valid {f.type}")
        if problems:
            raise ValueError("bad configuration: " + "; ".join(problems))
        settings = cls(**values)
        settings._check()
        return settings

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir).expanduser().resolve()

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite+aiosqlite:///{self.data_path / 'hacs.db'}"

    @property
    def keys_path(self) -> Path:
        return (
            Path(self.signing_keys_dir).expanduser()
            if self.signing_keys_dir
            else self.data_path / "keys"
        )

    @property
    def resolved_milvus_uri(self) -> str:
        return self.milvus_uri or str(self.data_path / "milvus.db")

    @property
    def enabled_services(self) -> tuple[str, ...]:
        return parse_services(self.services)

    def _check(self) -> None:
        problems = []
        for name in ("grpc_listen", "http_listen"):
            host, _, port = str(getattr(self, name)).rpartition(":")
            if not host or not port.isdigit():
                problems.append(f"{_env_name(name)}={getattr(self, name)!r} is not host:port")
        if self.workers < 0:
            problems.append(f"HACS_WORKERS={self.workers} must be 0 (one per core) or more")
        try:
            parse_services(self.services)
        except ValueError as exc:
            problems.append(f"HACS_SERVICES: {exc}")
        if self.tls not in TLS_MODES:
            problems.append(f"HACS_TLS={self.tls!r} must be off, on or external")
        elif self.tls == "off":
            for name in ("grpc_listen", "http_listen"):
                host = str(getattr(self, name)).rpartition(":")[0]
                if host and not is_loopback(host):
                    problems.append(
                        f"{_env_name(name)}={getattr(self, name)!r} is not a loopback address "
                        "and HACS_TLS=off: nothing leaves the host in plaintext. Set "
                        "HACS_TLS=on (certificates; `hacs certs`) or HACS_TLS=external "
                        "(a sidecar such as Istio terminates mTLS; docs/security.md)"
                    )
        if self.ratelimit_url:
            host, _, port = self.ratelimit_url.rpartition(":")
            if not host or not port.isdigit():
                problems.append(f"HACS_RATELIMIT_URL={self.ratelimit_url!r} is not host:port")
        if self.ratelimit_failure_mode not in RATELIMIT_FAILURE_MODES:
            problems.append(
                f"HACS_RATELIMIT_FAILURE_MODE={self.ratelimit_failure_mode!r} "
                "must be open or closed"
            )
        if self.ratelimit_burst_percent < 1:
            problems.append("HACS_RATELIMIT_BURST_PERCENT must be at least 1")
        try:
            parse_method_weights(self.ratelimit_weights)
        except ValueError as exc:
            problems.append(f"HACS_RATELIMIT_WEIGHTS: {exc}")
        if self.edge_client_certificates not in ("off", "optional", "require"):
            problems.append(
                f"HACS_EDGE_CLIENT_CERTIFICATES={self.edge_client_certificates!r} "
                "must be off, optional or require"
            )
        if self.tls_client_auth not in ("require", "optional"):
            problems.append(
                f"HACS_TLS_CLIENT_AUTH={self.tls_client_auth!r} must be require or optional"
            )
        if self.log_format not in ("text", "json"):
            problems.append(f"HACS_LOG_FORMAT={self.log_format!r} must be text or json")
        if self.lexical_engine not in ("auto", "milvus", "sqlite"):
            problems.append(
                f"HACS_LEXICAL_ENGINE={self.lexical_engine!r} must be auto, milvus or sqlite"
            )
        if self.milvus_read_consistency not in ("bounded", "strong"):
            problems.append(
                f"HACS_MILVUS_READ_CONSISTENCY={self.milvus_read_consistency!r} "
                "must be bounded or strong"
            )
        if self.embedding_precision not in EMBEDDING_PRECISIONS:
            problems.append(
                f"HACS_EMBEDDING_PRECISION={self.embedding_precision!r} "
                "must be auto, float32 or bfloat16"
            )
        if self.embedding_worker not in EMBEDDING_WORKERS:
            problems.append(
                f"HACS_EMBEDDING_WORKER={self.embedding_worker!r} must be process or thread"
            )
        if self.milvus_client_threads < 1:
            problems.append("HACS_MILVUS_CLIENT_THREADS must be at least 1")
        if self.otel_exporter not in ("none", "console", "otlp"):
            problems.append(
                f"HACS_OTEL_EXPORTER={self.otel_exporter!r} must be none, console or otlp"
            )
        if self.rag_max_document_bytes <= 0:
            problems.append("HACS_RAG_MAX_DOCUMENT_BYTES must be positive")
        if self.llm_timeout_seconds <= 0 or self.llm_total_timeout_seconds <= 0:
            problems.append(
                "HACS_LLM_TIMEOUT_SECONDS and HACS_LLM_TOTAL_TIMEOUT_SECONDS must be positive"
            )
        if self.revocation_seconds > 5:
            problems.append("HACS_REVOCATION_SECONDS must be at most 5 (the revocation bound)")
        if self.token_ttl_seconds > self.token_max_ttl_seconds:
            problems.append("HACS_TOKEN_TTL_SECONDS must not exceed HACS_TOKEN_MAX_TTL_SECONDS")
        if problems:
            raise ValueError("bad configuration: " + "; ".join(problems))


def _convert(kind: object, raw: Any) -> Any:
    if kind in ("int", int):
        value = int(str(raw).strip())
        if value < 0:
            raise ValueError(raw)
        return value
    if kind in ("float", float):
        number = float(str(raw).strip())
        if not number >= 0 or number == float("inf"):  # NaN fails the comparison
            raise ValueError(raw)
        return number
    if kind in ("bool", bool):
        text = str(raw).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise ValueError(raw)
    return str(raw)


def secret(variable: str, environ: Mapping[str, str] | None = None, file: str = "") -> str:
    """A secret named by its variable: the variable's value, else the contents of `file`,
    else of the file `<variable>_FILE` names ("" when none is set).

    Secrets are not Settings fields (a provider entry may name its own variable,
    and settings are printed by `hacs config`); this is the one place they are read.
    """
    env = os.environ if environ is None else environ
    if env.get(variable):
        return env[variable].strip()
    path = file or env.get(f"{variable}_FILE", "")
    if path:
        try:
            return Path(path).read_text().strip()
        except OSError as exc:
            raise ValueError(f"cannot read the secret file {path} (for {variable})") from exc
    return ""


def _env_name(field_name: str) -> str:
    return next(str(f.metadata["env"]) for f in fields(Settings) if f.name == field_name)


def parse_services(spec: str) -> tuple[str, ...]:
    spec = spec.strip()
    if spec in ("", "all"):
        return ALL_SERVICES
    names = tuple(dict.fromkeys(s.strip() for s in spec.split(",") if s.strip()))
    known = (*ALL_SERVICES, *OPTIONAL_SERVICES)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"unknown service(s) {', '.join(unknown)}; choose from {', '.join(known)}")
    return names


def parse_method_weights(spec: str) -> dict[str, int]:
    """`RagService/Answer=10,SearchService/*=2` -> {"RagService/Answer": 10, ...}.

    A key is `Service/Method` or `Service/*`, the service by its short name (`RagService`)
    or its full one (`hacs.rag.v1.RagService`); a weight is a whole number from 1 to 1000.
    """
    weights: dict[str, int] = {}
    for item in (part.strip() for part in spec.split(",")):
        if not item:
            continue
        key, sep, value = item.partition("=")
        key = key.strip().lstrip("/")
        service, slash, method = key.partition("/")
        if not sep or not slash or not service or not method or "/" in method:
            raise ValueError(f"expected Service/Method=N or Service/*=N, got {item!r}")
        if not value.strip().isdigit() or not 1 <= int(value) <= 1000:
            raise ValueError(f"{key}: the weight must be a whole number from 1 to 1000")
        weights[key] = int(value)
    return weights


def settings_markdown() -> str:
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for f in fields(Settings):
        default = f"`{f.default}`" if f.default else "(empty)"
        rows.append(f"| `{f.metadata['env']}` | {default} | {f.metadata['help']} |")
    return "\n".join(rows)
