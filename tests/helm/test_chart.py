"""Tests of the creditd Helm chart (helm/creditd), offline: no cluster, no helm binary.

Helm itself (v4, through helm-python-sdk's bundled libhelm_c) lints and renders the chart for the
default values and for the production values (helm/creditd/ci/production-values.yaml); every
rendered manifest is validated against the Kubernetes OpenAPI schemas with kubernetes-validate;
then the hardening and the wiring are asserted one by one.

Run: tests/helm/run.sh   (or: pytest -rs tests/helm with the requirements installed)
"""

from __future__ import annotations

import base64
import copy
import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

import helm_python as helm
import jsonschema
import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "creditd"
PRODUCTION_VALUES = CHART / "ci" / "production-values.yaml"
DOCKERFILE = REPO / "Dockerfile"

RELEASE = "creditd"
NAMESPACE = "billing"
# The chart's kubeVersion floor is 1.27 (native gRPC probes); manifests are validated against the
# oldest schema set that covers every field the chart can render (1.30: preStop sleep) and the
# newest kubernetes-validate ships.
LINT_KUBE_VERSION = "v1.35.0"
KUBE_VERSIONS = sorted({"1.30.0", kubernetes_validate.latest_version()}, key=lambda v: [int(p) for p in v.split(".")])
# Kinds kubernetes-validate has no schema for (CRDs); their shape is checked by hand below.
CRD_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}
UID = 10001


# --- helpers -------------------------------------------------------------------------------


def production_values() -> dict[str, Any]:
    return yaml.safe_load(PRODUCTION_VALUES.read_text())


def values_for(name: str) -> dict[str, Any] | None:
    return {"default": None, "production": production_values()}[name]


@lru_cache(maxsize=None)
def _render_cached(values_json: str, is_upgrade: bool) -> tuple[tuple[str, str], ...]:
    values = json.loads(values_json)
    with helm.Chart.load(CHART) as chart:
        rendered = chart.render(
            values,
            name=RELEASE,
            namespace=NAMESPACE,
            is_install=not is_upgrade,
            is_upgrade=is_upgrade,
        )
    return tuple(sorted(rendered.items()))


def render_files(values: dict[str, Any] | None = None, *, is_upgrade: bool = False) -> dict[str, str]:
    return dict(_render_cached(json.dumps(values), is_upgrade))


def render(values: dict[str, Any] | None = None, *, is_upgrade: bool = False) -> list[dict[str, Any]]:
    """Every rendered Kubernetes object (NOTES.txt excluded), in template order."""
    docs: list[dict[str, Any]] = []
    for path, text in render_files(values, is_upgrade=is_upgrade).items():
        if not path.endswith((".yaml", ".yml")):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                docs.append(doc)
    return docs


def objects(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str, component: str | None = None) -> dict[str, Any]:
    found = [
        doc
        for doc in objects(docs, kind)
        if component is None or doc["metadata"]["labels"].get("app.kubernetes.io/component") == component
    ]
    assert len(found) == 1, f"expected one {kind} (component={component}), found {len(found)}"
    return found[0]


def deployment(values: dict[str, Any] | None = None) -> dict[str, Any]:
    return one(render(values), "Deployment")


def container(workload: dict[str, Any]) -> dict[str, Any]:
    containers = workload["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def env_of(c: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {entry["name"]: entry for entry in c.get("env", [])}


def checksum(values: dict[str, Any] | None) -> str:
    return deployment(values)["spec"]["template"]["metadata"]["annotations"]["checksum/config"]


def merged(overrides: dict[str, Any], base: dict[str, Any] | None = None) -> dict[str, Any]:
    """Deep-merges overrides into a copy of base (None = the chart defaults, i.e. just overrides)."""
    result = copy.deepcopy(base) if base else {}

    def merge(into: dict[str, Any], extra: dict[str, Any]) -> None:
        for key, value in extra.items():
            if isinstance(value, dict) and isinstance(into.get(key), dict):
                merge(into[key], value)
            else:
                into[key] = copy.deepcopy(value)

    merge(result, overrides)
    return result


def hook_set(obj: dict[str, Any], annotation: str) -> set[str]:
    value = obj["metadata"].get("annotations", {}).get(annotation, "")
    return {part.strip() for part in value.split(",") if part.strip()}


VALUE_SETS = ["default", "production"]


def _manifest_cases() -> list[Any]:
    cases = []
    for name in VALUE_SETS:
        for index, doc in enumerate(render(values_for(name))):
            case_id = f"{name}-{doc['kind']}-{doc['metadata']['name']}"
            cases.append(pytest.param(name, index, id=case_id))
    return cases


# --- 1. lint --------------------------------------------------------------------------------


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_lint_is_clean(value_set: str) -> None:
    report = helm.lint(CHART, values_for(value_set), strict=True, kube_version=LINT_KUBE_VERSION)
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert report["total_charts_linted"] == 1
    assert report["errors"] == [], report
    assert problems == [], f"helm lint --strict reported: {problems}"


def test_lint_fails_on_a_typo_in_the_values() -> None:
    report = helm.lint(CHART, {"replicaCont": 3}, strict=True, kube_version=LINT_KUBE_VERSION)
    errors = [m for m in report["messages"] if m["severity"] == 3]
    assert errors, report
    assert any("replicaCont" in m["error"] for m in errors), errors


# --- 2. render -------------------------------------------------------------------------------


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_renders_the_expected_objects(value_set: str) -> None:
    kinds = sorted(doc["kind"] for doc in render(values_for(value_set)))
    expected = {
        "default": [
            "ConfigMap", "Deployment", "HorizontalPodAutoscaler", "Job", "PodDisruptionBudget",
            "Secret", "Secret", "Service", "ServiceAccount",
        ],
        "production": [
            "ConfigMap", "Deployment", "HorizontalPodAutoscaler", "Job", "NetworkPolicy",
            "PodDisruptionBudget", "Service", "ServiceAccount", "ServiceMonitor",
        ],
    }[value_set]
    assert kinds == expected


def test_upgrade_renders_like_install() -> None:
    assert render(is_upgrade=True) == render()


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_every_object_carries_the_standard_labels(value_set: str) -> None:
    for doc in render(values_for(value_set)):
        labels = doc["metadata"]["labels"]
        for key in ("app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/managed-by", "helm.sh/chart"):
            assert labels.get(key), f"{doc['kind']}/{doc['metadata']['name']} lacks label {key}"
        assert labels["app.kubernetes.io/name"] == "creditd"
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["app.kubernetes.io/managed-by"] == "Helm"


def test_names_follow_fullname_overrides() -> None:
    docs = render({"fullnameOverride": "billing-credits"})
    assert deployment({"fullnameOverride": "billing-credits"})["metadata"]["name"] == "billing-credits"
    assert one(docs, "Service")["metadata"]["name"] == "billing-credits"
    with helm.Chart.load(CHART) as chart:
        rendered = chart.render(None, name="payments", namespace="x")
    service = yaml.safe_load(rendered["creditd/templates/service.yaml"])
    assert service["metadata"]["name"] == "payments-creditd"


# --- 3. Kubernetes schema validation ------------------------------------------------------------


@pytest.mark.parametrize(("value_set", "index"), _manifest_cases())
def test_manifest_matches_the_kubernetes_schema(value_set: str, index: int) -> None:
    doc = render(values_for(value_set))[index]
    if (doc["apiVersion"], doc["kind"]) in CRD_KINDS:
        pytest.skip(
            f"kubernetes-validate has no schema for the CRD {doc['apiVersion']} {doc['kind']}: "
            "schema validation skipped; its shape is checked by test_servicemonitor_shape"
        )
    for version in KUBE_VERSIONS:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            path = ".".join(str(p) for p in error.path)
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']} is invalid for Kubernetes {version} at {path}: {error.message}")
        except kubernetes_validate.SchemaNotFoundError as error:
            pytest.fail(f"no schema for {doc['apiVersion']} {doc['kind']} (Kubernetes {version}): {error.message}")


def test_servicemonitor_shape() -> None:
    docs = render(production_values())
    monitor = one(docs, "ServiceMonitor")
    service = one(docs, "Service")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", monitor["metadata"]["name"])
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    spec = monitor["spec"]
    assert set(spec) <= {"selector", "namespaceSelector", "endpoints", "jobLabel", "targetLabels", "podTargetLabels"}
    assert spec["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    # The selector must pick the chart's Service.
    for key, value in spec["selector"]["matchLabels"].items():
        assert service["metadata"]["labels"].get(key) == value
    service_ports = {port["name"] for port in service["spec"]["ports"]}
    assert spec["endpoints"], "no endpoints"
    for endpoint in spec["endpoints"]:
        assert endpoint["port"] in service_ports
        assert endpoint["path"].startswith("/")
        assert endpoint["scheme"] in {"http", "https"}
        for key in ("interval", "scrapeTimeout"):
            assert re.fullmatch(r"([0-9]+(ms|s|m|h))+", endpoint[key]), endpoint[key]


# --- 4. hardening and wiring ------------------------------------------------------------------


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_pod_and_container_are_hardened(value_set: str) -> None:
    for workload in (one(render(values_for(value_set)), "Deployment"), one(render(values_for(value_set)), "Job")):
        pod = workload["spec"]["template"]["spec"]
        pod_sc = pod["securityContext"]
        assert pod_sc["runAsNonRoot"] is True
        assert pod_sc["runAsUser"] == UID
        assert pod_sc["runAsGroup"] == UID
        assert pod_sc["fsGroup"] == UID
        assert pod_sc["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False
        sc = container(workload)["securityContext"]
        assert sc["runAsNonRoot"] is True
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["allowPrivilegeEscalation"] is False
        assert sc.get("privileged", False) is False
        assert sc["capabilities"]["drop"] == ["ALL"]
        assert "add" not in sc["capabilities"]
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_resources_are_set(value_set: str) -> None:
    for workload in (one(render(values_for(value_set)), "Deployment"), one(render(values_for(value_set)), "Job")):
        resources = container(workload)["resources"]
        for bound in ("requests", "limits"):
            for resource in ("cpu", "memory"):
                assert resources[bound][resource], f"{workload['kind']} lacks {bound}.{resource}"


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_tmp_is_a_writable_empty_dir(value_set: str) -> None:
    d = one(render(values_for(value_set)), "Deployment")
    mounts = {m["mountPath"]: m["name"] for m in container(d).get("volumeMounts", [])}
    assert "/tmp" in mounts
    volumes = {v["name"]: v for v in d["spec"]["template"]["spec"]["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_probes_use_grpc_on_the_grpc_port(value_set: str) -> None:
    c = container(one(render(values_for(value_set)), "Deployment"))
    ports = {port["name"]: port["containerPort"] for port in c["ports"]}
    for probe in ("readinessProbe", "livenessProbe"):
        assert c[probe]["grpc"]["port"] == ports["grpc"], probe
        assert "httpGet" not in c[probe]
    startup = c["startupProbe"]
    assert startup["httpGet"] == {"path": "/healthz", "port": "http"}
    # A startup probe must allow for migrations on a cold start: at least a minute.
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 60
    assert c["livenessProbe"]["successThreshold"] == 1


def test_probe_types_are_configurable() -> None:
    c = container(deployment({"probes": {"readiness": {"type": "http"}, "startup": {"type": "grpc"}, "liveness": {"enabled": False}}}))
    assert c["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert c["startupProbe"]["grpc"] == {"port": 50051}
    assert "livenessProbe" not in c


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_named_ports_on_container_and_service(value_set: str) -> None:
    docs = render(values_for(value_set))
    c = container(one(docs, "Deployment"))
    container_ports = {port["name"]: port["containerPort"] for port in c["ports"]}
    assert container_ports == {"grpc": 50051, "http": 8080}
    service = one(docs, "Service")
    ports = {port["name"]: port for port in service["spec"]["ports"]}
    assert set(ports) == {"grpc", "http"}
    assert ports["grpc"]["appProtocol"] == "grpc"
    assert ports["grpc"]["targetPort"] == "grpc"
    assert ports["http"]["targetPort"] == "http"


def test_ports_drive_the_listen_addresses() -> None:
    c = container(deployment({"containerPorts": {"grpc": 9000, "http": 9001}}))
    env = env_of(c)
    assert env["CREDITD_GRPC_ADDR"]["value"] == "0.0.0.0:9000"
    assert env["CREDITD_HTTP_ADDR"]["value"] == "0.0.0.0:9001"
    assert c["readinessProbe"]["grpc"]["port"] == 9000
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"grpc": 9000, "http": 9001}


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_selectors_pick_only_server_pods(value_set: str) -> None:
    docs = render(values_for(value_set))
    d = one(docs, "Deployment")
    selector = d["spec"]["selector"]["matchLabels"]
    pod_labels = d["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= pod_labels.items()
    assert one(docs, "Service")["spec"]["selector"] == selector
    assert one(docs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"] == selector
    job_labels = one(docs, "Job")["spec"]["template"]["metadata"]["labels"]
    assert not selector.items() <= job_labels.items(), "the Service would route to the migration pod"


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_serve_args_config_and_credentials(value_set: str) -> None:
    values = values_for(value_set)
    docs = render(values)
    d = one(docs, "Deployment")
    c = container(d)
    assert c["args"] == ["serve", "--no-bootstrap-key"]
    config_map = one(docs, "ConfigMap")
    assert c["envFrom"][0] == {"configMapRef": {"name": config_map["metadata"]["name"]}}
    data = config_map["data"]
    assert data["CREDITD_LOG_FORMAT"] == "json"
    for key in (
        "CREDITD_DB_MAX_CONNECTIONS", "CREDITD_DB_ACQUIRE_TIMEOUT_SECONDS", "CREDITD_EXPIRY_SWEEP_INTERVAL_SECONDS",
        "CREDITD_REQUEST_TIMEOUT_SECONDS", "CREDITD_MAX_BODY_BYTES", "CREDITD_MAX_CONCURRENT_REQUESTS",
        "CREDITD_RATE_LIMIT_PER_KEY", "CREDITD_SHUTDOWN_GRACE_SECONDS",
    ):
        assert re.fullmatch(r"[0-9]+", data[key]), key
    assert all(isinstance(v, str) for v in data.values())
    assert "CREDITD_DATABASE_URL" not in data and "CREDITD_API_KEYS" not in data
    env = env_of(c)
    secret_name = (values or {}).get("existingSecret") or f"{RELEASE}-credentials"
    url_ref = env["CREDITD_DATABASE_URL"]["valueFrom"]["secretKeyRef"]
    keys_ref = env["CREDITD_API_KEYS"]["valueFrom"]["secretKeyRef"]
    assert url_ref == {"name": secret_name, "key": "CREDITD_DATABASE_URL"}
    assert keys_ref == {"name": secret_name, "key": "CREDITD_API_KEYS", "optional": True}
    pepper_ref = env["CREDITD_API_KEY_PEPPER"]["valueFrom"]["secretKeyRef"]
    assert pepper_ref == {"name": secret_name, "key": "CREDITD_API_KEY_PEPPER", "optional": True}
    grace = int(data["CREDITD_SHUTDOWN_GRACE_SECONDS"])
    assert d["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > grace


def test_numbers_render_as_plain_digits() -> None:
    docs = render({
        "config": {"maxBodyBytes": 10485760, "maxConcurrentRequests": 1000000},
        "extraEnv": [{"name": "BIG", "value": 2000000}, {"name": "RATIO", "value": 0.5}],
        "otel": {"tracesSamplerArg": 0.25},
    })
    data = one(docs, "ConfigMap")["data"]
    assert data["CREDITD_MAX_BODY_BYTES"] == "10485760"
    assert data["CREDITD_MAX_CONCURRENT_REQUESTS"] == "1000000"
    assert data["BIG"] == "2000000"
    assert data["RATIO"] == "0.5"
    assert data["OTEL_TRACES_SAMPLER_ARG"] == "0.25"


def test_chart_made_secret_from_values() -> None:
    key = "sk_live_" + "A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6"
    docs = render({"database": {"url": "postgres://creditd:pw@pg.db:5432/creditd"}, "apiKeys": [key]})
    secrets = {s["metadata"]["name"]: s for s in objects(docs, "Secret")}
    made = secrets[f"{RELEASE}-credentials"]
    assert base64.b64decode(made["data"]["CREDITD_DATABASE_URL"]).decode() == "postgres://creditd:pw@pg.db:5432/creditd"
    assert base64.b64decode(made["data"]["CREDITD_API_KEYS"]).decode() == key
    assert "helm.sh/hook" not in made["metadata"].get("annotations", {})


def test_existing_secret_is_used_as_is() -> None:
    values = {"existingSecret": "creditd-db", "existingSecretKeys": {"databaseUrl": "url", "apiKeys": "keys", "apiKeyPepper": "pepper"}}
    docs = render(values)
    assert objects(docs, "Secret") == []
    env = env_of(container(one(docs, "Deployment")))
    assert env["CREDITD_API_KEY_PEPPER"]["valueFrom"]["secretKeyRef"] == {"name": "creditd-db", "key": "pepper", "optional": True}
    assert env["CREDITD_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {"name": "creditd-db", "key": "url"}
    assert env["CREDITD_API_KEYS"]["valueFrom"]["secretKeyRef"]["key"] == "keys"
    job_env = env_of(container(one(docs, "Job")))
    assert job_env["CREDITD_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {"name": "creditd-db", "key": "url"}


def test_termination_grace_exceeds_shutdown_grace() -> None:
    d = deployment({"config": {"shutdownGraceSeconds": 50}, "preStopSleepSeconds": 5})
    assert d["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > 55
    assert container(d)["lifecycle"] == {"preStop": {"sleep": {"seconds": 5}}}
    with pytest.raises(helm.HelmError, match="terminationGracePeriodSeconds"):
        render({"config": {"shutdownGraceSeconds": 30}, "terminationGracePeriodSeconds": 30})


def test_extra_env_goes_to_configmap_or_container() -> None:
    docs = render({"extraEnv": [
        {"name": "RUST_BACKTRACE", "value": "1"},
        {"name": "NODE_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}},
    ]})
    assert one(docs, "ConfigMap")["data"]["RUST_BACKTRACE"] == "1"
    env = env_of(container(one(docs, "Deployment")))
    assert env["NODE_IP"]["valueFrom"] == {"fieldRef": {"fieldPath": "status.hostIP"}}
    assert "RUST_BACKTRACE" not in env


def test_otel_env_only_when_given() -> None:
    plain = render()
    assert not any(key.startswith("OTEL_") for key in one(plain, "ConfigMap")["data"])
    assert not any(name.startswith("OTEL_") for name in env_of(container(one(plain, "Deployment"))))

    docs = render({"otel": {
        "endpoint": "http://collector.obs:4317",
        "protocol": "grpc",
        "tracesSampler": "parentbased_traceidratio",
        "tracesSamplerArg": "0.25",
        "resourceAttributes": {"deployment.environment": "staging"},
        "headersSecret": {"name": "otel", "key": "headers"},
    }})
    data = one(docs, "ConfigMap")["data"]
    assert data["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://collector.obs:4317"
    assert data["OTEL_EXPORTER_OTLP_PROTOCOL"] == "grpc"
    assert data["OTEL_SERVICE_NAME"] == "creditd"
    assert data["OTEL_TRACES_SAMPLER"] == "parentbased_traceidratio"
    assert data["OTEL_TRACES_SAMPLER_ARG"] == "0.25"
    env = env_of(container(one(docs, "Deployment")))
    attributes = env["OTEL_RESOURCE_ATTRIBUTES"]["value"]
    assert f"k8s.namespace.name={NAMESPACE}" in attributes and "deployment.environment=staging" in attributes
    names = [e["name"] for e in container(one(docs, "Deployment"))["env"]]
    assert names.index("POD_NAME") < names.index("OTEL_RESOURCE_ATTRIBUTES")
    assert env["OTEL_EXPORTER_OTLP_HEADERS"]["valueFrom"]["secretKeyRef"] == {"name": "otel", "key": "headers"}


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_migration_job_is_a_pre_install_pre_upgrade_hook(value_set: str) -> None:
    docs = render(values_for(value_set))
    job = one(docs, "Job")
    assert hook_set(job, "helm.sh/hook") == {"pre-install", "pre-upgrade"}
    assert {"before-hook-creation", "hook-succeeded"} <= hook_set(job, "helm.sh/hook-delete-policy")
    assert isinstance(job["spec"]["backoffLimit"], int) and job["spec"]["backoffLimit"] >= 1
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    c = container(job)
    assert c["args"] == ["migrate"]
    assert c["image"] == container(one(docs, "Deployment"))["image"]
    assert c["securityContext"] == container(one(docs, "Deployment"))["securityContext"]
    # The chart's own ServiceAccount does not exist yet when a pre-install hook runs.
    for account in objects(docs, "ServiceAccount"):
        assert pod.get("serviceAccountName") != account["metadata"]["name"]
    url_ref = env_of(c)["CREDITD_DATABASE_URL"]["valueFrom"]["secretKeyRef"]
    referenced = [s for s in objects(docs, "Secret") if s["metadata"]["name"] == url_ref["name"]]
    if (values_for(value_set) or {}).get("existingSecret"):
        assert referenced == []
    else:
        # The chart-made Secret is not there yet during pre-install: the Job reads a hook copy,
        # created before it (lower weight) and deleted with it.
        assert len(referenced) == 1
        secret = referenced[0]
        assert hook_set(secret, "helm.sh/hook") == {"pre-install", "pre-upgrade"}
        assert int(secret["metadata"]["annotations"]["helm.sh/hook-weight"]) < int(job["metadata"]["annotations"].get("helm.sh/hook-weight", "0"))
        assert "CREDITD_DATABASE_URL" in secret["data"]


def test_migration_can_be_disabled() -> None:
    docs = render({"migration": {"enabled": False}})
    assert objects(docs, "Job") == []
    assert all("helm.sh/hook" not in doc["metadata"].get("annotations", {}) for doc in docs)


@pytest.mark.parametrize(
    ("change", "rolls"),
    [
        ({"config": {"dbMaxConnections": 32}}, True),
        ({"config": {"logLevel": "debug"}}, True),
        ({"config": {"shutdownGraceSeconds": 20}}, True),
        ({"config": {"rateLimitPerKey": 50}}, True),
        ({"extraEnv": [{"name": "FOO", "value": "bar"}]}, True),
        ({"otel": {"endpoint": "http://collector:4317"}}, True),
        ({"database": {"url": "postgres://creditd@other:5432/creditd"}}, True),
        ({"apiKeys": ["sk_test_" + "a" * 32]}, True),
        ({"replicaCount": 5}, False),
        ({"resources": {"limits": {"cpu": "2", "memory": "1Gi"}}}, False),
    ],
    ids=["dbMaxConnections", "logLevel", "shutdownGrace", "rateLimitPerKey", "extraEnv", "otel", "databaseUrl", "apiKeys", "replicaCount", "resources"],
)
def test_checksum_config_follows_the_config(change: dict[str, Any], rolls: bool) -> None:
    base = checksum(None)
    assert re.fullmatch(r"[0-9a-f]{64}", base)
    assert checksum(None) == base, "the checksum must be deterministic"
    assert (checksum(change) != base) is rolls


def test_checksum_config_with_existing_secret_covers_the_configmap() -> None:
    base = {"existingSecret": "creditd-db"}
    assert checksum(base) != checksum(merged({"config": {"expirySweepIntervalSeconds": 60}}, base))
    # The database URL value is unused with an existing secret, so it must not roll the pods.
    assert checksum(base) == checksum(merged({"database": {"url": "postgres://x@y/z"}}, base))


def test_hpa_and_pdb_by_default() -> None:
    docs = render()
    d = one(docs, "Deployment")
    hpa = one(docs, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": d["metadata"]["name"]}
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    cpu = [m for m in hpa["spec"]["metrics"] if m["resource"]["name"] == "cpu"]
    assert cpu and cpu[0]["resource"]["target"]["type"] == "Utilization"
    assert "replicas" not in d["spec"], "the HPA owns the replica count"
    pdb = one(docs, "PodDisruptionBudget")
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["spec"]["minAvailable"] == 1


def test_production_scales_three_to_ten() -> None:
    docs = render(production_values())
    hpa = one(docs, "HorizontalPodAutoscaler")
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 10)
    assert one(docs, "PodDisruptionBudget")["spec"]["minAvailable"] == 2
    spec = one(docs, "Deployment")["spec"]["template"]["spec"]
    assert spec["affinity"]["podAntiAffinity"]
    assert spec["topologySpreadConstraints"]


def test_autoscaling_off_sets_replicas() -> None:
    docs = render({"autoscaling": {"enabled": False}, "replicaCount": 4, "podDisruptionBudget": {"enabled": False}})
    assert objects(docs, "HorizontalPodAutoscaler") == []
    assert objects(docs, "PodDisruptionBudget") == []
    assert one(docs, "Deployment")["spec"]["replicas"] == 4
    with pytest.raises(helm.HelmError, match="maxReplicas"):
        render({"autoscaling": {"minReplicas": 5, "maxReplicas": 2}})


def test_pdb_max_unavailable() -> None:
    pdb = one(render({"podDisruptionBudget": {"maxUnavailable": 1}}), "PodDisruptionBudget")
    assert pdb["spec"] == {"maxUnavailable": 1, "selector": pdb["spec"]["selector"]}


def test_optional_objects_render_only_when_enabled() -> None:
    default = render()
    assert objects(default, "ServiceMonitor") == []
    assert objects(default, "NetworkPolicy") == []
    enabled = render({"serviceMonitor": {"enabled": True}, "networkPolicy": {"enabled": True}})
    assert len(objects(enabled, "ServiceMonitor")) == 1
    assert len(objects(enabled, "NetworkPolicy")) == 1


def test_network_policy_allows_grpc_http_in_and_dns_database_out() -> None:
    docs = render(production_values())
    policy = one(docs, "NetworkPolicy")["spec"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    # It selects every pod of the release, server and migration alike.
    selector = policy["podSelector"]["matchLabels"]
    assert selector.items() <= one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"].items()
    assert selector.items() <= one(docs, "Job")["spec"]["template"]["metadata"]["labels"].items()
    ingress_ports = {(p["port"], p["protocol"]) for rule in policy["ingress"] for p in rule["ports"]}
    assert ingress_ports == {("grpc", "TCP"), ("http", "TCP")}
    assert all(rule.get("from") for rule in policy["ingress"]), "production restricts the sources"
    egress_ports = {(p["port"], p["protocol"]) for rule in policy["egress"] for p in rule["ports"]}
    assert {(53, "UDP"), (53, "TCP"), (5432, "TCP"), (4317, "TCP")} <= egress_ports


def test_pod_scheduling_values_pass_through() -> None:
    values = {
        "podAnnotations": {"example.com/team": "billing"},
        "nodeSelector": {"pool": "services"},
        "tolerations": [{"key": "dedicated", "operator": "Exists", "effect": "NoSchedule"}],
        "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": [{"key": "pool", "operator": "In", "values": ["services"]}]}]}}},
        "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "ScheduleAnyway", "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "creditd"}}}],
        "imagePullSecrets": [{"name": "regcred"}],
        "serviceAccount": {"create": True, "name": "creditd-sa"},
        "image": {"repository": "registry.example.com/creditd", "tag": "1.2.3"},
    }
    docs = render(values)
    d = one(docs, "Deployment")
    pod = d["spec"]["template"]
    assert pod["metadata"]["annotations"]["example.com/team"] == "billing"
    assert "checksum/config" in pod["metadata"]["annotations"]
    for key in ("nodeSelector", "tolerations", "affinity", "topologySpreadConstraints", "imagePullSecrets"):
        assert pod["spec"][key] == values[key], key
    assert pod["spec"]["serviceAccountName"] == "creditd-sa"
    assert one(docs, "ServiceAccount")["metadata"]["name"] == "creditd-sa"
    assert container(d)["image"] == "registry.example.com/creditd:1.2.3"
    digest = "sha256:" + "0" * 64
    assert container(deployment({"image": {"digest": digest}}))["image"] == f"creditd@{digest}"
    assert objects(render({"serviceAccount": {"create": False}}), "ServiceAccount") == []


def test_default_image_tag_is_the_app_version() -> None:
    with helm.Chart.load(CHART) as chart:
        app_version = chart.metadata["appVersion"]
    assert container(deployment())["image"] == f"creditd:{app_version}"


def test_notes_show_grpcurl_and_curl() -> None:
    notes = render_files()["creditd/templates/NOTES.txt"]
    assert "port-forward" in notes
    assert 'grpcurl -plaintext -H "authorization: Bearer $KEY" localhost:50051 list' in notes
    assert "creditd.v1.CustomerService/CreateCustomer" in notes
    assert "curl http://localhost:8080/" in notes


# --- values.schema.json ------------------------------------------------------------------------


def schema() -> dict[str, Any]:
    return json.loads((CHART / "values.schema.json").read_text())


def test_schema_is_draft_07_and_closed_at_the_top() -> None:
    s = schema()
    assert s["$schema"] == "http://json-schema.org/draft-07/schema#"
    jsonschema.Draft7Validator.check_schema(s)
    assert s["additionalProperties"] is False


def test_schema_describes_every_value() -> None:
    with helm.Chart.load(CHART) as chart:
        defaults = chart.values
    jsonschema.Draft7Validator(schema()).validate(defaults)
    jsonschema.Draft7Validator(schema()).validate(merged(production_values(), defaults))

    def walk(values: dict[str, Any], node: dict[str, Any], path: str) -> None:
        props = node.get("properties")
        if props is None:
            return
        for key, value in values.items():
            assert key in props, f"values key {path}{key} is not described in values.schema.json"
            assert "type" in props[key] or "const" in props[key] or "oneOf" in props[key] or "anyOf" in props[key], f"{path}{key} has no type"
            if isinstance(value, dict):
                walk(value, props[key], f"{path}{key}.")

    walk(defaults, schema(), "")


@pytest.mark.parametrize(
    "bad",
    [
        {"replicaCont": 3},
        {"config": {"dbMaxConection": 3}},
        {"config": {"logFormat": "xml"}},
        {"config": {"dbMaxConnections": 0}},
        {"apiKeys": ["not-a-key"]},
        {"apiKeys": ["sk_live_" + "a1" * 12]},
        {"containerPorts": {"grpc": 70000}},
        {"securityContext": {"allowPrivilegeEscalation": True}},
        {"podSecurityContext": {"runAsNonRoot": False}},
        {"probes": {"liveness": {"successThreshold": 2}}},
        {"image": {"pullPolicy": "Sometimes"}},
    ],
    ids=["top-level-typo", "nested-typo", "log-format", "zero-connections", "api-key-shape", "api-key-too-short", "port-range", "privilege-escalation", "root", "liveness-success", "pull-policy"],
)
def test_schema_rejects_bad_values(bad: dict[str, Any]) -> None:
    with pytest.raises(helm.HelmValuesError):
        render(bad)


def test_schema_rejects_unknown_top_level_key_in_validate_and_lint() -> None:
    with helm.Chart.load(CHART) as chart:
        chart.validate_schema({})
        with pytest.raises(helm.HelmValuesError, match="replicaCont"):
            chart.validate_schema({"replicaCont": 3})


# --- Dockerfile ----------------------------------------------------------------------------------


def test_dockerfile_matches_the_chart() -> None:
    text = DOCKERFILE.read_text()
    stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", text, re.MULTILINE | re.IGNORECASE)
    assert len(stages) >= 2, "multi-stage build expected"
    assert re.search(r"^ARG RUST_VERSION=1\.95\b", text, re.MULTILINE)
    assert "cargo build --release --locked --bin creditd" in text
    assert re.search(rf"^USER {UID}(:{UID})?$", text, re.MULTILINE)
    assert re.search(r'^ENTRYPOINT \["/creditd"\]$', text, re.MULTILINE)
    assert re.search(r'^CMD \["serve"\]$', text, re.MULTILINE)
    assert re.search(r"^EXPOSE 50051 8080$", text, re.MULTILINE)
    for env in ("CREDITD_GRPC_ADDR=0.0.0.0:50051", "CREDITD_HTTP_ADDR=0.0.0.0:8080", "CREDITD_LOG_FORMAT=json"):
        assert env in text
    ignored = (REPO / ".dockerignore").read_text().split()
    for pattern in ("target/", ".git", "*.sqlite*"):
        assert pattern in ignored
