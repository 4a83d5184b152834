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
from mesh.envoy.render import HACS_SERVICES, render
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
VALUES_SETS = [None, *sorted((CHART / "ci").glob("*-values.yaml"))]
GiB = 1024**3


def _bytes(quantity: str) -> float:
    units = {"Ki": 1024, "Mi": 1024**2, "Gi": GiB, "K": 1e3, "M": 1e6, "G": 1e9}
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([KMG]i?)?", str(quantity))
    assert match, quantity
    return float(match.group(1)) * units.get(match.group(2) or "", 1)


def _workloads(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {**of_kind(objects, "Deployment"), **of_kind(objects, "Job")}


@pytest.mark.parametrize("values", VALUES_SETS, ids=lambda v: v.name if v else "defaults")
def test_every_workload_is_probed_limited_and_locked_down(values: Path | None) -> None:
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


def test_each_service_runs_its_own_deployment_with_grpc_probes() -> None:
    deployments = of_kind(helm_render(), "Deployment")
    assert set(deployments) == {f"hacs-{s}" for s in SERVICES} | {"hacs-edge", "hacs-indexer"}
    for service in SERVICES:
        container = pod_spec(deployments[f"hacs-{service}"])["containers"][0]
        assert container["args"] == ["serve", "--only", service]
        assert container["readinessProbe"]["grpc"]["port"] == 50051
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["HACS_SERVICES"] == service
        calls_embedding = service in ("search", "rag", "memory")
        assert ("HACS_EMBEDDING_URL" in env) is calls_embedding
        assert env.get("HACS_TENANT_URL") == ("hacs-tenant:50051" if calls_embedding else None)
        assert ("HACS_SERVICE_API_KEY_FILE" in env) is calls_embedding
        assert ("HACS_BOOTSTRAP_OPERATOR_KEY_FILE" in env) is (service == "tenant")
        assert ("HACS_BOOTSTRAP_SERVICE_KEY_FILE" in env) is (service == "tenant")


def test_one_dedicated_indexer_keeps_milvus_in_step_and_the_search_pods_only_answer() -> None:
    deployments = of_kind(helm_render(), "Deployment")
    indexer = pod_spec(deployments["hacs-indexer"])["containers"][0]
    search = pod_spec(deployments["hacs-search"])["containers"][0]
    assert indexer["args"] == ["serve", "--only", "search"]
    assert deployments["hacs-indexer"]["spec"]["replicas"] == 1
    assert {"name": "HACS_INDEXER_ENABLED", "value": "false"} in search["env"]
    assert {"name": "HACS_INDEXER_ENABLED", "value": "false"} not in indexer["env"]
    services = of_kind(helm_render(), "Service")
    assert all(
        s["spec"]["selector"]["app.kubernetes.io/component"] != "indexer" for s in services.values()
    )
    shared = of_kind(helm_render("indexer.dedicated=false"), "Deployment")
    assert "hacs-indexer" not in shared
    search_env = pod_spec(shared["hacs-search"])["containers"][0]["env"]
    assert {"name": "HACS_INDEXER_ENABLED", "value": "true"} in search_env


def test_values_reach_the_fields_they_name() -> None:
    objects = helm_render(
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
    sources = pod_spec(of_kind(objects, "Deployment")["hacs-search"])["volumes"][-1]["projected"]
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
    objects = helm_render("edge.callsPerMinute=900", "edge.tokenCallsPerMinute=30")
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
    plain = of_kind(helm_render(), "Deployment")
    assert "nvidia.com/gpu" not in yaml.safe_dump(plain)
    gpu = of_kind(helm_render("gpu.enabled=true", "gpu.count=2"), "Deployment")
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
    objects = helm_render(f"mode={mode}")
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
    assert not istio_kinds & {o["kind"] for o in helm_render()}
    objects = helm_render("istio.enabled=true")
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
        helm_render("mode=cluster")
    with pytest.raises(RenderError, match=r"istio\.enabled needs mode: mesh"):
        helm_render("mode=allInOne", "istio.enabled=true")


def test_the_migration_job_runs_before_the_pods_and_only_needs_the_database() -> None:
    objects = helm_render()
    job = next(iter(of_kind(objects, "Job").values()))
    hooks = job["metadata"]["annotations"]["helm.sh/hook"]
    # Before the pods roll, and after (to reconcile rows the draining pods wrote).
    assert hooks == "pre-install,pre-upgrade,post-upgrade"
    account = of_kind(objects, "ServiceAccount")["hacs-migrate"]
    # Hooks run before the release's ordinary objects exist: its account must be a hook too.
    assert "pre-install" in account["metadata"]["annotations"]["helm.sh/hook"]
    container = pod_spec(job)["containers"][0]
    assert container["args"] == ["migrate"]
    assert [e["name"] for e in container["env"]] == ["HACS_DATA_DIR", "HACS_DATABASE_URL_FILE"]


def test_all_in_one_keeps_its_embedded_stores_on_one_volume() -> None:
    objects = helm_render(
        "mode=allInOne", "database.existingSecret=", "milvus.uri=", "redis.existingSecret="
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
