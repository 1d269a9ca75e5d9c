"""Offline tests of the Helm chart (charts/centralita).

The chart is rendered and linted by the real Helm engine (helm-python-sdk, no helm binary,
no cluster), every rendered object is validated against the Kubernetes 1.30 OpenAPI schemas
that kubernetes-validate ships (strict: unknown fields fail), and the Tenant examples are
validated against the CRD's own openAPIV3Schema with jsonschema. Nothing here uses the
network.
"""

from __future__ import annotations

import copy
import pathlib
import re

import jsonschema
import kubernetes_validate
import pytest
import yaml
from helm_python.chart import Chart, lint
from helm_python.errors import HelmRenderError, HelmValuesError

REPO = pathlib.Path(__file__).resolve().parents[2]
CHART_DIR = REPO / "charts" / "centralita"
PRODUCTION_VALUES = REPO / "deploy" / "values-production.yaml"
DEMO_TENANT = REPO / "deploy" / "tenants" / "demo-tenant.yaml"
CLI_EXAMPLE_TENANT = REPO / "deploy" / "examples" / "tenants" / "acme.yaml"
KUBE_VERSION = "1.30"
RELEASE, NAMESPACE = "centralita", "contact-center"

SERVICES = ["sessions", "routing", "media", "digital", "crm", "recording", "reporting"]
FRONTEND = {"sessions", "crm", "reporting", "media", "digital", "recording"}
POSTGRES_USERS = {"crm", "recording", "reporting", "digital"}
REDIS_USERS = {"sessions", "routing", "media", "reporting"}
STREAM_PROCESSORS = {"sessions", "routing", "reporting"}
# The binary each component runs (/usr/local/bin/centralita-<binary>): media's two roles are
# two components of one binary, `media` (voice) and `digital`.
BINARY = {s: s for s in SERVICES} | {"digital": "media"}
MEDIA_ROLES = {"media": "voice", "digital": "digital"}
# The release's services each component calls (CENTRALITA_<peer>_ENDPOINT → component):
# crm's subject access export calls media's ConversationService, which the digital role serves.
PEERS = {
    "media": {"SESSIONS": "sessions", "RECORDING": "recording"},
    "digital": {"SESSIONS": "sessions", "CRM": "crm", "RECORDING": "recording"},
    "crm": {"SESSIONS": "sessions", "MEDIA": "digital", "RECORDING": "recording"},
}
SIGNERS = {"media", "digital", "crm"}
# Kinds that are custom resources of other projects: kubernetes-validate ships only the
# built-in Kubernetes schemas, so these are checked field by field in their own tests.
THIRD_PARTY_KINDS = {
    ("keda.sh/v1alpha1", "ScaledObject"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),  # test_monitoring.py
}


# ---------------------------------------------------------------------------------------
# Rendering helpers
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def chart():
    with Chart.load(CHART_DIR) as c:
        yield c


def production_values() -> dict:
    return yaml.safe_load(PRODUCTION_VALUES.read_text())


def render(chart: Chart, values: dict | None = None) -> list[dict]:
    """Every object the chart renders with `values`, in template order."""
    out = chart.render(values or {}, name=RELEASE, namespace=NAMESPACE)
    objects = []
    for path, text in sorted(out.items()):
        if path.endswith("NOTES.txt"):
            continue
        objects.extend(d for d in yaml.safe_load_all(text) if d)
    return objects


class Rendered:
    def __init__(self, objects: list[dict]):
        self.objects = objects

    def of(self, kind: str) -> list[dict]:
        return [o for o in self.objects if o["kind"] == kind]

    def get(self, kind: str, name: str) -> dict:
        found = [o for o in self.of(kind) if o["metadata"]["name"] == name]
        assert len(found) == 1, f"{kind}/{name}: found {len(found)}"
        return found[0]

    def find(self, kind: str, name: str) -> dict | None:
        found = [o for o in self.of(kind) if o["metadata"]["name"] == name]
        return found[0] if found else None


def full(name: str) -> str:
    return f"{RELEASE}-{name}"


VARIANTS = {"default": lambda: {}, "production": production_values}


@pytest.fixture(scope="session", params=sorted(VARIANTS))
def variant(request, chart):
    values = VARIANTS[request.param]()
    return request.param, values, Rendered(render(chart, values))


def container(deployment: dict) -> dict:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def env_of(deployment: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container(deployment).get("env", [])}


# ---------------------------------------------------------------------------------------
# Chart metadata, lint, schema validity of everything rendered
# ---------------------------------------------------------------------------------------


def test_chart_metadata(chart):
    meta = chart.metadata
    assert (meta["apiVersion"], meta["name"], meta["version"], meta["appVersion"]) == (
        "v2",
        "centralita",
        "0.1.0",
        "0.1.0",
    )
    assert chart.schema is not None and chart.schema["$schema"].startswith("http://json-schema.org/draft-07")
    assert [c["filename"].split("/", 1)[1] for c in chart.crds] == ["crds/tenant.yaml"]


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_strict_lint_is_clean(name):
    report = lint(CHART_DIR, VARIANTS[name](), strict=True, namespace=NAMESPACE, kube_version="v1.30.0")
    assert report["errors"] == []
    # Severity 1 is informational ("icon is recommended"); warnings (2) and errors (3) fail.
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


def test_every_rendered_object_is_schema_valid(variant):
    name, _, r = variant
    validated = 0
    for obj in r.objects:
        if (obj["apiVersion"], obj["kind"]) in THIRD_PARTY_KINDS:
            continue
        try:
            kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            path = ".".join(str(p) for p in e.path)
            pytest.fail(f"{name}: {obj['kind']}/{obj['metadata']['name']}: {path}: {e.message}")
        validated += 1
    assert validated >= 40
    assert all(o["metadata"]["namespace"] == NAMESPACE for o in r.objects if o["kind"] not in {"ClusterRole", "ClusterRoleBinding"})


def test_crd_is_schema_valid_and_structural(chart):
    crd = crd_doc()
    kubernetes_validate.validate(crd, KUBE_VERSION, strict=True)
    assert (crd["spec"]["group"], crd["spec"]["scope"]) == ("centralita.io", "Namespaced")
    assert (crd["spec"]["names"]["kind"], crd["spec"]["names"]["plural"]) == ("Tenant", "tenants")
    (version,) = crd["spec"]["versions"]
    assert version["served"] and version["storage"]
    assert version["subresources"] == {"status": {}}
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert columns["Display Name"] == ".spec.displayName" and "Ready" in columns and "Age" in columns
    schema = version["schema"]["openAPIV3Schema"]
    assert {"spec", "status"} <= set(schema["properties"])
    assert {"conditions", "observedGeneration"} <= set(schema["properties"]["status"]["properties"])

    # Structural-schema rules the API server enforces: every node has a type, no
    # `additionalProperties` beside `properties`, no `uniqueItems: true`.
    def walk(node, path):
        assert "type" in node, f"{path}: no type"
        assert not ("properties" in node and "additionalProperties" in node), path
        assert node.get("uniqueItems") is not True, path
        for key, child in node.get("properties", {}).items():
            walk(child, f"{path}.{key}")
        if "items" in node:
            walk(node["items"], f"{path}[]")

    walk(schema, "")


# ---------------------------------------------------------------------------------------
# Workloads
# ---------------------------------------------------------------------------------------


def test_every_service_has_probes_autoscaler_and_pdb(variant):
    name, values, r = variant
    keda_on = {
        s for s in SERVICES if values.get("services", {}).get(s, {}).get("keda", {}).get("enabled", False)
    }
    assert {d["metadata"]["name"] for d in r.of("Deployment")} == {full(s) for s in SERVICES + ["operator"]}
    for s in SERVICES:
        d = r.get("Deployment", full(s))
        c = container(d)
        grpc_port = next(p["containerPort"] for p in c["ports"] if p["name"] == "grpc")
        # Readiness: the native gRPC probe on grpc.health.v1 (mirrors /readyz).
        assert c["readinessProbe"]["grpc"] == {"port": grpc_port}
        # Liveness: /livez on the admin port, so a dependency outage restarts nothing.
        assert c["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "admin"}
        assert c["command"] == [f"/usr/local/bin/centralita-{BINARY[s]}"]

        hpa = r.find("HorizontalPodAutoscaler", full(s))
        scaled = r.find("ScaledObject", full(s))
        if s in keda_on:
            assert hpa is None and scaled is not None, s
            assert "replicas" not in d["spec"], "KEDA owns the replica count"
            assert scaled["spec"]["scaleTargetRef"]["name"] == full(s)
        else:
            assert scaled is None and hpa is not None, s
            assert "replicas" not in d["spec"], "the HPA owns the replica count"
            assert hpa["apiVersion"] == "autoscaling/v2"
            assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": full(s)}
            assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
            metrics = {m["resource"]["name"]: m["resource"]["target"] for m in hpa["spec"]["metrics"]}
            assert set(metrics) == {"cpu", "memory"}
            assert all(t["type"] == "Utilization" for t in metrics.values())
            assert {"cpu", "memory"} <= set(c["resources"]["requests"])

        pdb = r.get("PodDisruptionBudget", full(s))
        assert pdb["spec"]["selector"]["matchLabels"] == d["spec"]["selector"]["matchLabels"]
        assert d["spec"]["selector"]["matchLabels"].items() <= d["spec"]["template"]["metadata"]["labels"].items()

        svc = r.get("Service", full(s))
        assert svc["spec"]["selector"] == d["spec"]["selector"]["matchLabels"]
        assert {p["name"]: p["port"] for p in svc["spec"]["ports"]}["grpc"] == grpc_port

        affinity = d["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
        (term,) = affinity["preferredDuringSchedulingIgnoredDuringExecution"]
        assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
        assert term["podAffinityTerm"]["labelSelector"]["matchLabels"] == d["spec"]["selector"]["matchLabels"]


def test_operator_runs_one_replica_with_probes(variant):
    _, _, r = variant
    d = r.get("Deployment", full("operator"))
    assert d["spec"]["replicas"] == 1 and d["spec"]["strategy"] == {"type": "Recreate"}
    c = container(d)
    assert c["command"] == ["/usr/local/bin/centralita-operator"]
    # The platform runtime, as in every service: liveness on the admin port, readiness on
    # gRPC health (it mirrors /readyz: Kafka, the tenant feed, the Kubernetes API).
    assert c["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "admin"}
    grpc_port = next(p["containerPort"] for p in c["ports"] if p["name"] == "grpc")
    admin_port = next(p["containerPort"] for p in c["ports"] if p["name"] == "admin")
    assert c["readinessProbe"]["grpc"] == {"port": grpc_port}
    assert r.find("HorizontalPodAutoscaler", full("operator")) is None
    env = env_of(d)
    assert "CENTRALITA_KAFKA_BROKERS" in env
    assert env["CENTRALITA_GRPC_ADDR"]["value"].endswith(f":{grpc_port}")
    assert env["CENTRALITA_ADMIN_ADDR"]["value"].endswith(f":{admin_port}")
    # The runtime verifies caller tokens on its gRPC port: the JWT public key is mounted.
    key_file = env["CENTRALITA_JWT_PUBLIC_KEY_FILE"]["value"]
    mount = next(m for m in c["volumeMounts"] if m["name"] == "jwt")
    assert mount["readOnly"] is True and key_file.startswith(mount["mountPath"] + "/")
    svc = r.get("Service", full("operator"))
    assert {p["name"]: p["port"] for p in svc["spec"]["ports"]} == {"grpc": grpc_port, "admin": admin_port}


def test_keda_is_off_by_default_and_scales_routing_and_reporting_in_production(chart):
    assert Rendered(render(chart)).of("ScaledObject") == []
    values = production_values()
    r = Rendered(render(chart, values))
    assert {o["metadata"]["name"] for o in r.of("ScaledObject")} == {full("routing"), full("reporting")}
    prefix = values["config"]["kafka"]["topicPrefix"]
    so = r.get("ScaledObject", full("routing"))
    (trigger,) = so["spec"]["triggers"]
    assert trigger["type"] == "kafka"
    meta = trigger["metadata"]
    assert meta["bootstrapServers"] == values["config"]["kafka"]["brokers"]
    assert (meta["consumerGroup"], meta["topic"]) == (f"{prefix}routing", f"{prefix}routing.inputs")
    assert meta["lagThreshold"] == str(values["services"]["routing"]["keda"]["lagThreshold"])
    assert all(isinstance(v, str) for v in meta.values()), "KEDA trigger metadata are strings"
    assert so["spec"]["minReplicaCount"] >= 1
    assert so["spec"]["maxReplicaCount"] <= values["config"]["kafka"]["partitions"]


def test_no_pod_runs_as_root_and_root_filesystems_are_read_only(variant):
    _, _, r = variant
    for d in r.of("Deployment"):
        pod = d["spec"]["template"]["spec"]
        psc = pod["securityContext"]
        assert psc["runAsNonRoot"] is True and psc["runAsUser"] == 65532
        assert psc["seccompProfile"] == {"type": "RuntimeDefault"}
        for c in pod["containers"] + pod.get("initContainers", []):
            sc = c["securityContext"]
            assert sc["runAsNonRoot"] is True and sc.get("runAsUser", psc["runAsUser"]) != 0
            assert sc["readOnlyRootFilesystem"] is True
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"] == {"drop": ["ALL"]}
            assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
            assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]
        assert {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}} in pod["volumes"]
        is_operator = d["metadata"]["name"] == full("operator")
        assert pod["automountServiceAccountToken"] is is_operator
        sa = r.get("ServiceAccount", pod["serviceAccountName"])
        assert sa["automountServiceAccountToken"] is is_operator


def test_environment_and_secrets(variant):
    _, values, r = variant
    merged = {"database": {"name": "centralita-database", "key": "url"}, "redis": {"name": "centralita-redis", "key": "url"}}
    if values:
        merged = {k: values["config"][k]["urlSecret"] for k in ("database", "redis")}
    for s in SERVICES:
        d = r.get("Deployment", full(s))
        env = env_of(d)
        c = container(d)
        grpc_port = next(p["containerPort"] for p in c["ports"] if p["name"] == "grpc")
        admin_port = next(p["containerPort"] for p in c["ports"] if p["name"] == "admin")
        assert env["CENTRALITA_GRPC_ADDR"]["value"].endswith(f":{grpc_port}")
        assert env["CENTRALITA_ADMIN_ADDR"]["value"].endswith(f":{admin_port}")
        assert env["CENTRALITA_LOG_FORMAT"]["value"] == "json"
        assert re.fullmatch(r"\d+s", env["CENTRALITA_SHUTDOWN_TIMEOUT"]["value"])
        for key in ("BROKERS", "TOPIC_PREFIX", "PARTITIONS", "REPLICATION_FACTOR", "FETCH_WAIT_LOW_LATENCY_MS"):
            assert f"CENTRALITA_KAFKA_{key}" in env
        assert env["CENTRALITA_KAFKA_RETENTION"]["value"] == (values or {}).get("config", {}).get(
            "kafka", {}).get("retention", "7d")
        for key in ("ISSUER", "AUDIENCE"):
            assert f"CENTRALITA_JWT_{key}" in env
        # The JWT public key is a file from a Secret volume.
        key_file = env["CENTRALITA_JWT_PUBLIC_KEY_FILE"]["value"]
        mount = next(m for m in c["volumeMounts"] if m["name"] == "jwt")
        assert mount["readOnly"] is True and key_file.startswith(mount["mountPath"] + "/")
        vol = next(v for v in d["spec"]["template"]["spec"]["volumes"] if v["name"] == "jwt")
        assert vol["secret"]["items"][0]["path"] == key_file.rsplit("/", 1)[1]
        # Store credentials only from Secrets, only for the services that use the store.
        for var, users, ref in (
            ("CENTRALITA_DATABASE_URL", POSTGRES_USERS, merged["database"]),
            ("CENTRALITA_REDIS_URL", REDIS_USERS, merged["redis"]),
        ):
            if s in users:
                assert env[var]["valueFrom"]["secretKeyRef"] == ref, (s, var)
                assert "value" not in env[var]
            else:
                assert var not in env, (s, var)
        assert ("CENTRALITA_DATABASE_POOL_SIZE" in env) == (s in POSTGRES_USERS)
        # media, digital and crm call the release's other services at their Services.
        peers = PEERS.get(s, {})
        for peer in ("SESSIONS", "MEDIA", "DIGITAL", "CRM", "RECORDING"):
            var = f"CENTRALITA_{peer}_ENDPOINT"
            if peer in peers:
                target = peers[peer]
                svc = r.get("Service", full(target))
                port = next(p["port"] for p in svc["spec"]["ports"] if p["name"] == "grpc")
                assert env[var]["value"] == f"http://{full(target)}:{port}", (s, var)
            else:
                assert var not in env, (s, var)
        # media's two roles are two components: `media` runs voice, `digital` the digital role.
        assert env.get("CENTRALITA_MEDIA_ROLES", {}).get("value") == MEDIA_ROLES.get(s), s
        assert ("CENTRALITA_WEBCHAT_ADDR" in env) == (s == "digital"), s
        # Static consumer-group membership from the pod name for the stream processors.
        if s in STREAM_PROCESSORS:
            assert env["CENTRALITA_KAFKA_GROUP_INSTANCE_ID"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
        else:
            assert "CENTRALITA_KAFKA_GROUP_INSTANCE_ID" not in env
    text = yaml.safe_dump_all(r.objects)
    assert not re.search(r"(postgres|postgresql|redis|rediss)://", text), "no credentials inline"


def test_shutdown_fits_the_grace_period_and_media_drains_calls(variant):
    _, _, r = variant
    for d in r.of("Deployment"):
        pod = d["spec"]["template"]["spec"]
        c = container(d)
        timeout = int(env_of(d)["CENTRALITA_SHUTDOWN_TIMEOUT"]["value"].rstrip("s"))
        pre_stop = c.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
        assert pre_stop + timeout < pod["terminationGracePeriodSeconds"], d["metadata"]["name"]
    media = r.get("Deployment", full("media"))
    assert media["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= 120
    assert container(media)["lifecycle"]["preStop"]["sleep"]["seconds"] > 0
    timeout = int(env_of(media)["CENTRALITA_SHUTDOWN_TIMEOUT"]["value"].rstrip("s"))
    assert timeout >= 120
    # Calls may go on for minutes after SIGTERM, and the drain leaves media 10 s to end
    # those left within its shutdown timeout.
    drain = int(env_of(media)["CENTRALITA_SIP_DRAIN"]["value"].rstrip("s"))
    assert 120 <= drain <= timeout - 10, (drain, timeout)
    for d in r.of("Deployment"):
        if d is not media:
            assert "CENTRALITA_SIP_DRAIN" not in env_of(d), d["metadata"]["name"]


def test_media_drain_window_is_configurable(chart):
    r = Rendered(render(chart, {"services": {"media": {"voice": {"drainSeconds": 60}}}}))
    assert env_of(r.get("Deployment", full("media")))["CENTRALITA_SIP_DRAIN"]["value"] == "60s"


def test_media_reads_the_images_prompts_unless_told_otherwise(chart):
    media = Rendered(render(chart)).get("Deployment", full("media"))
    assert env_of(media)["CENTRALITA_PROMPTS_DIR"]["value"] == "/usr/share/centralita/prompts"
    off = Rendered(render(chart, {"services": {"media": {"voice": {"promptsDir": ""}}}}))
    assert "CENTRALITA_PROMPTS_DIR" not in env_of(off.get("Deployment", full("media")))


# ---------------------------------------------------------------------------------------
# Values that must not render
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "values, where",
    [
        ({"services": {"sessions": {"replicas": "two"}}}, "/services/sessions/replicas"),
        ({"replicaCount": 3}, "replicaCount"),
        ({"services": {"crm": {"replica": 2}}}, "replica"),
        ({"services": {"crm": {"autoscaling": {"minReplicas": -1}}}}, "/services/crm/autoscaling/minReplicas"),
        ({"services": {"routing": {"grpcPort": 70000}}}, "/services/routing/grpcPort"),
        ({"services": {"media": {"voice": {"promptsDir": "prompts"}}}}, "/services/media/voice/promptsDir"),
        ({"services": {"crm": {"keda": {"enabled": True}}}}, "keda"),
        ({"services": {"billing": {"enabled": True}}}, "billing"),
        ({"config": {"logFormat": "xml"}}, "/config/logFormat"),
        ({"config": {"kafka": {"partitions": 0}}}, "/config/kafka/partitions"),
        ({"config": {"database": {"urlSecret": {"name": "", "key": "url"}}}}, "/config/database/urlSecret/name"),
        ({"operator": {"rbac": {"scope": "everything"}}}, "/operator/rbac/scope"),
        ({"networkPolicy": {"kafka": {"cidrs": [], "ports": [9092]}}}, "/networkPolicy/kafka/cidrs"),
        ({"networkPolicy": {"redis": {"cidrs": ["redis.internal"], "ports": [6379]}}}, "/networkPolicy/redis/cidrs/0"),
        ({"containerSecurityContext": {"readOnlyRootFilesystem": False}}, "/containerSecurityContext/readOnlyRootFilesystem"),
        ({"podSecurityContext": {"runAsNonRoot": False}}, "/podSecurityContext/runAsNonRoot"),
        ({"containerSecurityContext": {"allowPrivilegeEscalation": True}}, "/containerSecurityContext/allowPrivilegeEscalation"),
        ({"services": {"media": {"voice": {"sipService": {"type": "ExternalName"}}}}}, "/services/media/voice/sipService/type"),
        ({"services": {"media": {"voice": {"registrarSecrets": ["Acme_Phones"]}}}}, "/services/media/voice/registrarSecrets/0"),
        ({"services": {"media": {"voice": {"registrarSecrets": ["a", "a"]}}}}, "/services/media/voice/registrarSecrets"),
        ({"services": {"digital": {"smsSecrets": ["Acme_SMS"]}}}, "/services/digital/smsSecrets/0"),
        ({"services": {"digital": {"emailSecrets": ["a", "a"]}}}, "/services/digital/emailSecrets"),
        ({"services": {"digital": {"whatsappSecrets": ["Acme_WA"]}}}, "/services/digital/whatsappSecrets/0"),
        ({"services": {"digital": {"http": {"publicUrl": "https://chat.bpo.example/hooks"}}}},
         "/services/digital/http/publicUrl"),
        ({"services": {"digital": {"smtp": {"service": {"type": "ExternalName"}}}}}, "/services/digital/smtp/service/type"),
        ({"services": {"digital": {"smtp": {"maxMessageBytes": 10}}}}, "/services/digital/smtp/maxMessageBytes"),
        ({"services": {"digital": {"voice": {"sipPort": 5060}}}}, "voice"),
        ({"services": {"digital": {"providerEgress": {"cidrs": [], "ports": [443]}}}},
         "/services/digital/providerEgress/cidrs"),
    ],
)
def test_wrong_values_fail_with_a_schema_error(chart, values, where):
    with pytest.raises(HelmValuesError) as e:
        chart.render(values, name=RELEASE, namespace=NAMESPACE)
    assert "schema" in str(e.value) and where in str(e.value), str(e.value)


@pytest.mark.parametrize(
    "values, message",
    [
        (
            {"services": {"routing": {"keda": {"enabled": True}}}},
            "autoscaling.enabled and keda.enabled are mutually exclusive",
        ),
        ({"services": {"crm": {"autoscaling": {"minReplicas": 5, "maxReplicas": 3}}}}, "minReplicas (5) is above maxReplicas (3)"),
        (
            {"services": {"media": {"terminationGracePeriodSeconds": 120, "shutdownTimeoutSeconds": 110}}},
            "must be below terminationGracePeriodSeconds",
        ),
        (
            {"services": {"crm": {"resources": {"requests": {"cpu": None}}}}},
            "need resources.requests.cpu and .memory",
        ),
        ({"services": {"media": {"voice": {"rtpPortStart": 20000, "rtpPortEnd": 10000}}}}, "rtpPortStart is above rtpPortEnd"),
        ({"services": {"media": {"voice": {"drainSeconds": 265}}}}, "drainSeconds (265) must leave at least 10 s"),
        (
            {"services": {"digital": {"http": {"ingress": {"enabled": True}}}}},
            "services.digital.http.ingress.enabled needs services.digital.http.ingress.host",
        ),
        ({"services": {"digital": {"http": {"port": 9090}}}}, "services.digital.http.port (9090) must differ"),
        (
            {"services": {"digital": {"smtp": {"enabled": True, "port": 8480}}}},
            "services.digital.smtp.port (8480) must differ",
        ),
    ],
)
def test_inconsistent_values_fail_to_render(chart, values, message):
    with pytest.raises(HelmRenderError) as e:
        chart.render(values, name=RELEASE, namespace=NAMESPACE)
    assert message in str(e.value)


def test_mutual_tls_mounts_each_components_secret_and_calls_peers_over_https(chart):
    """tls.enabled: every component with a gRPC port (the operator's too) mounts its Secret whole (a renewal
    reaches the pod) and reads the three files from it; peers are called at https://; the
    console's gRPC-Web paths go through one Ingress per service, over HTTPS with the
    Ingress's client certificate, checking the service's certificate under its name."""
    values = {"tls": {"enabled": True, "reloadInterval": "1m", "ingressClientSecret": "ingress-nginx/centralita-edge"},
              "console": {"enabled": True, "publicUrl": "https://console.bpo.example"}}
    r = Rendered(render(chart, values))
    for s in [*SERVICES, "operator"]:
        d = r.get("Deployment", full(s))
        env, c = env_of(d), container(d)
        mount = next(m for m in c["volumeMounts"] if m["name"] == "tls")
        assert mount == {"name": "tls", "mountPath": "/etc/centralita/tls", "readOnly": True}, s
        vol = next(v for v in d["spec"]["template"]["spec"]["volumes"] if v["name"] == "tls")
        assert vol["secret"]["secretName"] == f"{full(s)}-tls" and "items" not in vol["secret"], s
        for var, file in (("CERT", "tls.crt"), ("KEY", "tls.key"), ("CA", "ca.crt")):
            assert env[f"CENTRALITA_TLS_{var}_FILE"]["value"] == f"/etc/centralita/tls/{file}", s
        assert env["CENTRALITA_TLS_RELOAD_INTERVAL"]["value"] == "1m"
        for peer, target in PEERS.get(s, {}).items():
            assert env[f"CENTRALITA_{peer}_ENDPOINT"]["value"].startswith(f"https://{full(target)}:"), (s, peer)
    main = r.get("Ingress", full("console"))
    assert [p["path"] for rule in main["spec"]["rules"] for p in rule["http"]["paths"]] == ["/"]
    paths = {}
    for svc in ("sessions", "crm", "reporting", "digital"):
        ing = r.get("Ingress", f"{full('console')}-{svc}")
        notes = ing["metadata"]["annotations"]
        assert notes["nginx.ingress.kubernetes.io/backend-protocol"] == "HTTPS"
        assert notes["nginx.ingress.kubernetes.io/proxy-ssl-secret"] == "ingress-nginx/centralita-edge"
        assert notes["nginx.ingress.kubernetes.io/proxy-ssl-verify"] == "on"
        assert notes["nginx.ingress.kubernetes.io/proxy-ssl-name"] == full(svc)
        for p in ing["spec"]["rules"][0]["http"]["paths"]:
            assert p["backend"]["service"]["name"] == full(svc)
            paths[p["path"]] = svc
    assert paths["/centralita.sessions.v1.AgentService"] == "sessions"
    assert paths["/centralita.media.v1.ConversationService"] == "digital"
    # Off by default: no TLS files, http:// peers.
    plain = Rendered(render(chart, {}))
    for s in SERVICES:
        env = env_of(plain.get("Deployment", full(s)))
        assert not any(k.startswith("CENTRALITA_TLS_") for k in env), s
    with pytest.raises(HelmRenderError) as e:
        chart.render({"tls": {"enabled": True}, "console": {"enabled": True, "publicUrl": "https://c.example"}},
                     name=RELEASE, namespace=NAMESPACE)
    assert "tls.ingressClientSecret" in str(e.value)


def test_keda_replaces_the_hpa_when_the_hpa_is_turned_off(chart):
    r = Rendered(render(chart, {"services": {"sessions": {"autoscaling": {"enabled": False}, "keda": {"enabled": True}}}}))
    assert r.find("HorizontalPodAutoscaler", full("sessions")) is None
    meta = r.get("ScaledObject", full("sessions"))["spec"]["triggers"][0]["metadata"]
    assert (meta["consumerGroup"], meta["topic"]) == ("centralita.sessions.decisions", "centralita.routing.decisions")


def test_fixed_replicas_without_autoscaling(chart):
    r = Rendered(render(chart, {"services": {"crm": {"replicas": 3, "autoscaling": {"enabled": False}}}}))
    assert r.get("Deployment", full("crm"))["spec"]["replicas"] == 3
    assert r.find("HorizontalPodAutoscaler", full("crm")) is None


# ---------------------------------------------------------------------------------------
# NetworkPolicies
# ---------------------------------------------------------------------------------------


def selects(selector: dict, labels: dict) -> bool:
    return selector.get("matchLabels", {}).items() <= labels.items() and "matchExpressions" not in selector


def ports_of(rule: dict) -> set[tuple]:
    return {(p.get("protocol", "TCP"), p["port"], p.get("endPort")) for p in rule.get("ports", [])}


def test_network_policies(variant):
    _, values, r = variant
    policies = r.of("NetworkPolicy")
    deny = r.get("NetworkPolicy", f"{RELEASE}-default-deny")
    assert deny["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert "ingress" not in deny["spec"] and "egress" not in deny["spec"]
    for d in r.of("Deployment"):
        labels = d["spec"]["template"]["metadata"]["labels"]
        assert selects(deny["spec"]["podSelector"], labels), d["metadata"]["name"]
        own = [p for p in policies if p is not deny and selects(p["spec"]["podSelector"], labels)]
        assert len(own) == 1, d["metadata"]["name"]
    # No rule may lack peers: an empty `from`/`to` allows every address.
    for p in policies:
        for rule in p["spec"].get("ingress", []):
            assert rule.get("from"), p["metadata"]["name"]
        for rule in p["spec"].get("egress", []):
            assert rule.get("to"), p["metadata"]["name"]

    np_values = (values or {}).get("networkPolicy", {})
    clients = np_values.get("grpcClients") or [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}]
    for s in SERVICES:
        pol = r.get("NetworkPolicy", full(s))
        grpc = next(p["containerPort"] for p in container(r.get("Deployment", full(s)))["ports"] if p["name"] == "grpc")
        frontend_rules = [i for i in pol["spec"]["ingress"]
                          if i["from"] == clients and ("TCP", grpc, None) in ports_of(i)]
        if s in FRONTEND:
            assert len(frontend_rules) == 1 and ports_of(frontend_rules[0]) == {("TCP", grpc, None)}, s
        else:
            assert frontend_rules == [], f"{s} is not reachable from frontends"
        egress = pol["spec"]["egress"]
        dns = egress[0]
        assert dns["to"][0]["podSelector"]["matchLabels"] == {"k8s-app": "kube-dns"}
        assert ports_of(dns) == {("UDP", 53, None), ("TCP", 53, None)}
        egress_ports = set().union(*(ports_of(e) for e in egress))
        pg_ports = set(np_values.get("postgres", {}).get("ports", [5432]))
        redis_ports = set(np_values.get("redis", {}).get("ports", [6379]))
        kafka_ports = set(np_values.get("kafka", {}).get("ports", [9092]))
        assert {("TCP", p, None) for p in kafka_ports} <= egress_ports, s
        assert ({("TCP", p, None) for p in pg_ports} <= egress_ports) == (s in POSTGRES_USERS), s
        assert ({("TCP", p, None) for p in redis_ports} <= egress_ports) == (s in REDIS_USERS), s

    # The brief's example, spelled out: sessions accepts its gRPC port from the ingress.
    sessions = r.get("NetworkPolicy", full("sessions"))
    assert any(
        ("TCP", 50051, None) in ports_of(rule) and rule["from"] == clients for rule in sessions["spec"]["ingress"]
    )
    media = r.get("NetworkPolicy", full("media"))
    voice = (values or {}).get("services", {}).get("media", {}).get("voice", {"rtpPortStart": 10000, "rtpPortEnd": 20000, "sipPort": 5060})
    rtp = ("UDP", voice["rtpPortStart"], voice["rtpPortEnd"])
    assert any(rtp in ports_of(rule) and ("UDP", voice["sipPort"], None) in ports_of(rule) for rule in media["spec"]["ingress"])
    assert any(rtp in ports_of(rule) for rule in media["spec"]["egress"])
    operator = r.get("NetworkPolicy", full("operator"))
    kube_ports = set(np_values.get("kubeApi", {}).get("ports", [443, 6443]))
    assert {("TCP", p, None) for p in kube_ports} <= set().union(*(ports_of(e) for e in operator["spec"]["egress"]))


def test_operator_can_be_left_out(chart):
    r = Rendered(render(chart, {"operator": {"enabled": False}}))
    assert not [o for o in r.objects if o["metadata"]["name"].endswith("-operator")]
    assert r.of("ClusterRole") == r.of("Role") == []
    assert {d["metadata"]["name"] for d in r.of("Deployment")} == {full(s) for s in SERVICES}


def test_network_policies_can_be_turned_off(chart):
    assert Rendered(render(chart, {"networkPolicy": {"enabled": False}})).of("NetworkPolicy") == []


# ---------------------------------------------------------------------------------------
# Operator RBAC, ServiceMonitor
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("scope, role_kind, binding_kind", [("cluster", "ClusterRole", "ClusterRoleBinding"), ("namespace", "Role", "RoleBinding")])
def test_operator_rbac(chart, scope, role_kind, binding_kind):
    r = Rendered(render(chart, {"operator": {"rbac": {"scope": scope}}}))
    (role,) = r.of(role_kind)
    (binding,) = r.of(binding_kind)
    other = {"ClusterRole": "Role", "Role": "ClusterRole"}[role_kind]
    assert r.of(other) == []
    rules = {(tuple(x["apiGroups"]), tuple(x["resources"])): set(x["verbs"]) for x in role["rules"]}
    assert rules[(("centralita.io",), ("tenants", "tenants/status", "tenants/finalizers"))] == {"get", "list", "watch", "patch", "update"}
    assert rules[(("", "events.k8s.io"), ("events",))] == {"create", "patch"}
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": role["metadata"]["name"]}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": full("operator"), "namespace": NAMESPACE}]
    # Only the operator's ServiceAccount is bound to anything.
    assert len(r.of("RoleBinding") + r.of("ClusterRoleBinding")) == 1


def test_service_monitor(chart):
    assert Rendered(render(chart)).of("ServiceMonitor") == []
    values = production_values()
    r = Rendered(render(chart, values))
    (sm,) = r.of("ServiceMonitor")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert sm["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    # honorLabels: the services' own `service` label (sessions, …) wins over the target's.
    assert sm["spec"]["endpoints"] == [
        {"port": "admin", "path": "/metrics", "scheme": "http", "interval": "15s", "scrapeTimeout": "10s", "honorLabels": True}
    ]
    scraped = [s for s in r.of("Service") if selects(sm["spec"]["selector"], s["metadata"]["labels"])]
    assert {s["metadata"]["name"] for s in scraped} == {full(n) for n in SERVICES + ["operator"]}
    assert all(any(p["name"] == "admin" for p in s["spec"]["ports"]) for s in scraped)


# ---------------------------------------------------------------------------------------
# The Tenant CRD and the example tenants
# ---------------------------------------------------------------------------------------


def crd_doc() -> dict:
    return yaml.safe_load((CHART_DIR / "crds" / "tenant.yaml").read_text())


def strict_tenant_schema() -> dict:
    """The CRD's schema as the API server applies it with strict field validation (the
    kubectl default): unknown fields are refused rather than pruned."""
    schema = copy.deepcopy(crd_doc()["spec"]["versions"][0]["schema"]["openAPIV3Schema"])

    def close(node, path):
        if "properties" in node and path != ".metadata":
            node["additionalProperties"] = False
        for key, child in node.get("properties", {}).items():
            close(child, f"{path}.{key}")
        if "items" in node:
            close(node["items"], path + "[]")

    close(schema, "")
    return schema


def validate_tenant(doc: dict) -> None:
    crd = crd_doc()
    version = crd["spec"]["versions"][0]["name"]
    assert doc["apiVersion"] == f"{crd['spec']['group']}/{version}"
    assert doc["kind"] == crd["spec"]["names"]["kind"]
    # OpenAPI v3.0 schemas use draft-4 keywords (boolean exclusiveMinimum).
    jsonschema.Draft4Validator(strict_tenant_schema()).validate(doc)


@pytest.mark.parametrize("path", [DEMO_TENANT, CLI_EXAMPLE_TENANT], ids=["demo-tenant", "cli-example-acme"])
def test_example_tenants_validate_against_the_crd(path):
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert docs
    for doc in docs:
        validate_tenant(doc)


def test_demo_tenant_exercises_routing():
    spec = yaml.safe_load(DEMO_TENANT.read_text())["spec"]
    queues = {q["id"]: q for q in spec["routing"]["queues"]}
    for q in queues.values():
        for key in ("serviceLevelSeconds", "serviceLevelTargetPercent", "offerTimeoutSeconds", "afterContactWorkSeconds"):
            assert key in q, (q["id"], key)
        if "overflowQueue" in q:  # the manifest's cross-field rules
            assert q["overflowQueue"] in queues and q["overflowQueue"] != q["id"] and "maxWaitSeconds" in q
    assert spec["routing"]["dispositionCodes"] and spec["routing"]["awayReasons"]
    assert not {"not_responding", "signed_in"} & set(spec["routing"]["awayReasons"])


@pytest.mark.parametrize(
    "mutate",
    [
        lambda s: s.update(displayNme="typo"),
        lambda s: s.update(channels=["voice", "fax"]),
        lambda s: s.update(channels=[]),
        lambda s: s["serviceLevel"].update(targetPercent=0),
        lambda s: s["quotas"].update(maxConcurrentContacts=-5),
        lambda s: s["businessHours"]["windows"][0].update(open="8:00"),
        lambda s: s.update(status="paused"),
        lambda s: s["recording"].update(voice="sometimes"),
        lambda s: s["routing"]["queues"][0].update(offerTimeoutSeconds=0),
        lambda s: s["routing"]["queues"][0].update(serviceLevelDefinition="best"),
        lambda s: s["routing"]["queues"][0]["steps"][1].update(proficiencyDrop=9),
        lambda s: s["routing"].update(awayReasons=["Coffee Break"]),
        lambda s: s.pop("quotas"),
    ],
    ids=[
        "unknown-field", "unknown-channel", "no-channel", "zero-target", "negative-quota", "bad-time",
        "bad-status", "bad-recording", "zero-offer-timeout", "bad-sl-definition", "proficiency-drop",
        "bad-away-reason", "missing-quotas",
    ],
)
def test_invalid_tenants_are_refused_by_the_crd(mutate):
    doc = yaml.safe_load(DEMO_TENANT.read_text())
    mutate(doc["spec"])
    with pytest.raises(jsonschema.ValidationError):
        validate_tenant(doc)


# ---------------------------------------------------------------------------------------
# The chart and the code agree on binaries
# ---------------------------------------------------------------------------------------


def test_each_service_command_is_a_binary_of_the_workspace():
    for s in sorted(set(BINARY.values())):
        manifest = (REPO / "services" / s / "Cargo.toml").read_text()
        assert re.search(rf'\[\[bin\]\]\s*name = "centralita-{s}"', manifest), s


def test_keda_targets_the_consumer_groups_and_topics_of_the_code(chart):
    """The default KEDA consumer group and topic of each stream processor are the ones its
    code consumes with (both are prefixed with CENTRALITA_KAFKA_TOPIC_PREFIX)."""
    sources = {p: p.read_text() for p in (REPO / "services").glob("*/src/**/*.rs")}
    for s in sorted(STREAM_PROCESSORS):
        keda = chart.values["services"][s]["keda"]
        own = "".join(t for p, t in sources.items() if p.parts[-3] == s or s in p.parts)
        assert re.search(r'format!\("\{[a-z_]*\}' + re.escape(keda["consumerGroup"]) + '"', own), (s, keda["consumerGroup"])
        topic = keda["topic"]
        assert any(f'name("{topic}")' in t for t in sources.values()), (s, topic)


def test_dockerfile_ships_the_binaries_as_nonroot():
    text = (REPO / "deploy" / "Dockerfile").read_text()
    stages = re.findall(r"^FROM (\S+)", text, re.M)
    assert stages[0].startswith("rust:1-bookworm") and stages[-1] == "gcr.io/distroless/cc-debian12:nonroot"
    assert "cargo build --release --locked" in text
    assert re.search(r"^USER 65532:65532$", text, re.M)
    assert "/usr/local/bin" in text
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {"target/", ".local/", ".git/"} <= set(ignored)


def test_operator_watches_what_its_rbac_allows(chart):
    def env_of(values):
        r = Rendered(render(chart, values))
        c = container(r.get("Deployment", full("operator")))
        return {e["name"]: e for e in c.get("env", [])}

    cluster = env_of({})
    assert "CENTRALITA_WATCH_NAMESPACE" not in cluster
    assert cluster["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    scoped = env_of({"operator": {"rbac": {"scope": "namespace"}}})
    assert scoped["CENTRALITA_WATCH_NAMESPACE"]["value"] == NAMESPACE


# ---------------------------------------------------------------------------------------
# The web console and its Ingress
# ---------------------------------------------------------------------------------------

CONSOLE_URL = "https://console.bpo.example"


def console_values(**console) -> dict:
    return {"console": {"enabled": True, "publicUrl": CONSOLE_URL, **console}}


def grpc_services_in_protos() -> dict[str, str]:
    """`package.Service` of every gRPC service declared under proto/."""
    out = {}
    for p in (REPO / "proto").rglob("*.proto"):
        text = p.read_text()
        package = re.search(r"^package ([\w.]+);", text, re.M).group(1)
        for name in re.findall(r"^service (\w+) \{", text, re.M):
            out[f"{package}.{name}"] = str(p.relative_to(REPO))
    return out


def test_the_console_is_off_by_default(variant):
    _, values, r = variant
    assert r.find("Deployment", full("console")) is None and r.find("Ingress", full("console")) is None
    for s in SERVICES:
        assert "CENTRALITA_GRPC_WEB_ORIGINS" not in env_of(r.get("Deployment", full(s))), s


def test_the_console_and_one_ingress_serve_the_browser_on_one_origin(chart):
    report = lint(CHART_DIR, console_values(), strict=True, namespace=NAMESPACE, kube_version="v1.30.0")
    assert report["errors"] == [] and [m for m in report["messages"] if m["severity"] >= 2] == []
    r = Rendered(render(chart, console_values()))
    for obj in r.objects:
        if (obj["apiVersion"], obj["kind"]) not in THIRD_PARTY_KINDS:
            kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
    d = r.get("Deployment", full("console"))
    c = container(d)
    env = {k: v.get("value") for k, v in env_of(d).items()}
    assert c["command"] == ["/usr/local/bin/centralita-console"]
    # Every console service is reached on the public origin; development sign-in is off and
    # no private key is mounted.
    assert env["CENTRALITA_CONSOLE_ENDPOINTS"] == ",".join(
        f"{s}={CONSOLE_URL}" for s in ["sessions", "crm", "reporting", "media"])
    assert env["CENTRALITA_CONSOLE_DEV_SIGN_IN"] == "false" and "CENTRALITA_JWT_PRIVATE_KEY_FILE" not in env
    assert env["CENTRALITA_CONSOLE_DIST"] == "/usr/share/centralita/console"
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"http": 9650, "admin": 9651}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    assert d["spec"]["template"]["spec"]["automountServiceAccountToken"] is False
    # The frontend services accept gRPC-Web from that origin only; routing is not one of them.
    for s in SERVICES:
        origins = env_of(r.get("Deployment", full(s))).get("CENTRALITA_GRPC_WEB_ORIGINS")
        if s in FRONTEND:
            assert origins == {"name": "CENTRALITA_GRPC_WEB_ORIGINS", "value": CONSOLE_URL}, s
        else:
            assert origins is None, s

    ing = r.get("Ingress", full("console"))
    (rule,) = ing["spec"]["rules"]
    assert rule["host"] == "console.bpo.example" and ing["spec"]["ingressClassName"] == "nginx"
    routes = {p["path"]: (p["backend"]["service"]["name"], p["backend"]["service"]["port"]["number"])
              for p in rule["http"]["paths"]}
    assert routes.pop("/") == (full("console"), 9650)
    # Each route is a gRPC service the protos declare, to the service that serves it (its
    # gRPC port), and every service the console's clients use is routed.
    declared = grpc_services_in_protos()
    # ConversationService (package centralita.media.v1) is media's digital role: the digital component.
    serving = {"sessions": "sessions", "tenancy": "sessions", "crm": "crm", "reporting": "reporting", "media": "digital"}
    for path, (backend, port) in routes.items():
        name = path.lstrip("/")
        assert name in declared, path
        owner = serving[name.split(".")[1]]
        assert (backend, port) == (full(owner), chart.values["services"][owner]["grpcPort"]), path
    api = (REPO / "services/console/src/api.ts").read_text()
    used = set(re.findall(r"createClient\((\w+)Service", api))
    assert {p.rsplit(".", 1)[1].removesuffix("Service") for p in routes} == used
    # The app's pod takes traffic from the ingress controller and Prometheus only, and calls nothing.
    np = r.get("NetworkPolicy", full("console"))
    assert [rule["ports"][0]["port"] for rule in np["spec"]["ingress"]] == [9650, 9651]
    assert np["spec"]["egress"] == []
    assert r.get("PodDisruptionBudget", full("console"))["spec"]["maxUnavailable"] == 1


def test_the_console_signs_in_through_the_services_identity_provider(chart):
    env = {k: v.get("value") for k, v in env_of(Rendered(render(chart, console_values())).get(
        "Deployment", full("console"))).items()}
    assert not any(k.startswith("CENTRALITA_CONSOLE_OIDC_") for k in env), "no provider: no such sign-in"
    idp = {"jwksUrl": "https://idp.bpo.example/jwks", "issuer": "https://idp.bpo.example/realms/bpo",
           "audience": "", "refresh": "5m"}
    values = console_values(oidc={"clientId": "console", "scope": "openid profile", "resource": "urn:centralita:api"})
    values["config"] = {"jwt": {"idp": idp}}
    r = Rendered(render(chart, values))
    env = {k: v.get("value") for k, v in env_of(r.get("Deployment", full("console"))).items()}
    assert {k: v for k, v in env.items() if k.startswith("CENTRALITA_CONSOLE_OIDC_")} == {
        "CENTRALITA_CONSOLE_OIDC_ISSUER": "https://idp.bpo.example/realms/bpo",
        "CENTRALITA_CONSOLE_OIDC_CLIENT_ID": "console",
        "CENTRALITA_CONSOLE_OIDC_SCOPE": "openid profile",
        "CENTRALITA_CONSOLE_OIDC_RESOURCE": "urn:centralita:api",
    }
    # The services verify the same provider's tokens.
    assert env_of(r.get("Deployment", full("sessions")))["CENTRALITA_JWT_IDP_ISSUER"]["value"] == idp["issuer"]
    for bad in ({"scope": "profile"}, {"resource": "api"}, {"clientId": "a b"}):
        with pytest.raises(Exception):
            render(chart, console_values(oidc={"clientId": "c", "scope": "openid", "resource": "", **bad}))


def test_the_console_ingress_takes_tls_and_dev_sign_in_needs_its_key(chart):
    r = Rendered(render(chart, console_values(ingress={"enabled": True, "className": "nginx", "annotations": {},
                                                        "tlsSecretName": "console-tls"},
                                              devSignIn={"enabled": True,
                                                         "privateKeySecret": {"name": "dev-key", "key": "k.pem"}})))
    assert r.get("Ingress", full("console"))["spec"]["tls"] == [{"hosts": ["console.bpo.example"], "secretName": "console-tls"}]
    d = r.get("Deployment", full("console"))
    env = {k: v.get("value") for k, v in env_of(d).items()}
    assert env["CENTRALITA_CONSOLE_DEV_SIGN_IN"] == "true"
    assert env["CENTRALITA_JWT_PRIVATE_KEY_FILE"] == "/etc/centralita/dev-key/k.pem"
    vols = {v["name"]: v for v in d["spec"]["template"]["spec"]["volumes"]}
    assert vols["dev-key"]["secret"]["secretName"] == "dev-key"


@pytest.mark.parametrize(
    "values, message",
    [
        ({"console": {"enabled": True}}, "console.publicUrl is required"),
        ({"console": {"enabled": True, "publicUrl": CONSOLE_URL, "devSignIn": {"enabled": True}}},
         "console.devSignIn.enabled needs console.devSignIn.privateKeySecret"),
    ],
)
def test_inconsistent_console_values_fail_to_render(chart, values, message):
    with pytest.raises(HelmRenderError) as e:
        chart.render(values, name=RELEASE, namespace=NAMESPACE)
    assert message in str(e.value)


@pytest.mark.parametrize("url", ["https://console.bpo.example/app", "console.bpo.example", "ftp://x"])
def test_a_console_url_with_a_path_or_another_scheme_is_a_schema_error(chart, url):
    with pytest.raises(HelmValuesError) as e:
        chart.render({"console": {"enabled": True, "publicUrl": url}}, name=RELEASE, namespace=NAMESPACE)
    assert "/console/publicUrl" in str(e.value)


def test_the_image_carries_the_console_app_where_the_chart_serves_it_from(chart):
    text = (REPO / "deploy" / "Dockerfile").read_text()
    assert "npm ci" in text and "npm run build" in text
    assert re.search(r"^COPY --from=console /src/services/console/dist/ " + re.escape(chart.values["console"]["dist"]) + "/$",
                     text, re.M)
    assert re.search(r'\[\[bin\]\]\s*name = "centralita-console"', (REPO / "services/console-server/Cargo.toml").read_text())


def test_only_media_digital_and_crm_get_the_signing_key_and_only_when_given(chart):
    # Off by default: no service has the private key.
    r = Rendered(render(chart, {}))
    for s in SERVICES:
        assert "CENTRALITA_JWT_PRIVATE_KEY_FILE" not in env_of(r.get("Deployment", full(s))), s
    r = Rendered(render(chart, {"config": {"jwt": {"privateKeySecret": {"name": "centralita-signing", "key": "k.pem"}}}}))
    for obj in r.objects:
        if (obj["apiVersion"], obj["kind"]) not in THIRD_PARTY_KINDS:
            kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
    for s in SERVICES:
        d = r.get("Deployment", full(s))
        env = env_of(d)
        vols = {v["name"]: v for v in d["spec"]["template"]["spec"]["volumes"]}
        mounts = {m["name"]: m for m in container(d)["volumeMounts"]}
        if s in SIGNERS:
            assert env["CENTRALITA_JWT_PRIVATE_KEY_FILE"]["value"] == "/etc/centralita/signing/k.pem"
            assert vols["signing-key"]["secret"]["secretName"] == "centralita-signing"
            assert mounts["signing-key"] == {"name": "signing-key", "mountPath": "/etc/centralita/signing", "readOnly": True}
        else:
            assert "CENTRALITA_JWT_PRIVATE_KEY_FILE" not in env and "signing-key" not in vols, s


def test_every_service_accepts_the_identity_providers_tokens_when_given_its_key_set(chart):
    # Off by default.
    r = Rendered(render(chart, {}))
    for s in SERVICES:
        assert not [k for k in env_of(r.get("Deployment", full(s))) if "JWKS" in k or "IDP" in k], s
    idp = {"jwksUrl": "https://login.bpo.example/realms/bpo/protocol/openid-connect/certs",
           "issuer": "https://login.bpo.example/realms/bpo", "refresh": "10m"}
    r = Rendered(render(chart, {"config": {"jwt": {"idp": idp}}}))
    for s in SERVICES:
        env = env_of(r.get("Deployment", full(s)))
        assert env["CENTRALITA_JWT_JWKS_URL"]["value"] == idp["jwksUrl"], s
        assert env["CENTRALITA_JWT_IDP_ISSUER"]["value"] == idp["issuer"]
        assert env["CENTRALITA_JWT_JWKS_REFRESH"]["value"] == "10m"
        assert "CENTRALITA_JWT_IDP_AUDIENCE" not in env
    # A key set without its issuer does not render; a URL of another scheme is a schema error.
    with pytest.raises(HelmRenderError) as e:
        chart.render({"config": {"jwt": {"idp": {"jwksUrl": idp["jwksUrl"]}}}}, name=RELEASE, namespace=NAMESPACE)
    assert "config.jwt.idp.issuer is required" in str(e.value)
    with pytest.raises(HelmValuesError):
        chart.render({"config": {"jwt": {"idp": {"jwksUrl": "ftp://x", "issuer": "i"}}}}, name=RELEASE,
                     namespace=NAMESPACE)


def test_media_mounts_the_registrar_secrets_it_is_given(chart):
    # None by default: no directory, no volume (the registrar then refuses every phone).
    r = Rendered(render(chart, {}))
    d = r.get("Deployment", full("media"))
    assert "CENTRALITA_SIP_SECRETS_DIR" not in env_of(d)
    assert not [v for v in d["spec"]["template"]["spec"]["volumes"] if v["name"].startswith("sip-")]
    secrets = ["acme-phones", "globex.phones"]
    r = Rendered(render(chart, {"services": {"media": {"voice": {"registrarSecrets": secrets}}}}))
    for obj in r.objects:
        if (obj["apiVersion"], obj["kind"]) not in THIRD_PARTY_KINDS:
            kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
    d = r.get("Deployment", full("media"))
    assert env_of(d)["CENTRALITA_SIP_SECRETS_DIR"]["value"] == "/etc/centralita/sip"
    vols = {v["name"]: v for v in d["spec"]["template"]["spec"]["volumes"]}
    mounts = {m["name"]: m for m in container(d)["volumeMounts"]}
    for i, name in enumerate(secrets):
        # Mounted whole (no subPath), so a rotated or late Secret reaches the running pod;
        # optional, so one tenant's missing Secret does not keep media from starting.
        assert vols[f"sip-credentials-{i}"]["secret"] == {"secretName": name, "defaultMode": 0o440, "optional": True}
        assert mounts[f"sip-credentials-{i}"] == {"name": f"sip-credentials-{i}", "mountPath": f"/etc/centralita/sip/{name}",
                                                  "readOnly": True}
    # The layout media reads: {CENTRALITA_SIP_SECRETS_DIR}/{secret}/{agent}.
    registrar = (REPO / "services/media/src/registrar/mod.rs").read_text()
    assert "self.secrets_dir.as_ref()?.join(secret).join(agent)" in registrar
    for s in SERVICES:
        if s != "media":
            assert "CENTRALITA_SIP_SECRETS_DIR" not in env_of(r.get("Deployment", full(s))), s


def test_media_mounts_the_trunks_credential_secrets_beside_the_registrars(chart):
    values = {"services": {"media": {"voice": {"trunkSecrets": ["acme-sbc", "shared"],
                                                "registrarSecrets": ["shared"]}}}}
    d = Rendered(render(chart, values)).get("Deployment", full("media"))
    assert env_of(d)["CENTRALITA_SIP_SECRETS_DIR"]["value"] == "/etc/centralita/sip"
    vols = [v["secret"]["secretName"] for v in d["spec"]["template"]["spec"]["volumes"] if v["name"].startswith("sip-")]
    assert vols == ["shared", "acme-sbc"], "each Secret once"
    mounts = [m["mountPath"] for m in container(d)["volumeMounts"] if m["name"].startswith("sip-")]
    assert mounts == ["/etc/centralita/sip/shared", "/etc/centralita/sip/acme-sbc"]
    # The layout media reads: {CENTRALITA_SIP_SECRETS_DIR}/{secret}/username and /password.
    auth = (REPO / "services/media/src/trunk_auth.rs").read_text()
    assert 'registrar.secret_value(secret, "username")' in auth and 'registrar.secret_value(secret, "password")' in auth
    with pytest.raises(Exception):
        render(chart, {"services": {"media": {"voice": {"trunkSecrets": ["Acme_SBC"]}}}})


def test_media_listens_on_its_pod_address_and_the_charts_rtp_range(chart):
    d = Rendered(render(chart, {"services": {"media": {"voice": {"sipPort": 5080, "rtpPortStart": 30000,
                                                                  "rtpPortEnd": 30999}}}})).get("Deployment", full("media"))
    env = container(d)["env"]
    names = [e["name"] for e in env]
    by = {e["name"]: e for e in env}
    assert by["POD_IP"]["valueFrom"] == {"fieldRef": {"fieldPath": "status.podIP"}}
    # Kubernetes expands $(POD_IP) only from a variable defined earlier in the list.
    assert names.index("POD_IP") < names.index("CENTRALITA_SIP_ADDR")
    assert by["CENTRALITA_SIP_ADDR"]["value"] == "$(POD_IP):5080"
    assert by["CENTRALITA_RTP_PORTS"]["value"] == "30000-30999"
    ports = {p["name"]: p["containerPort"] for p in container(d)["ports"]}
    assert ports["sip-udp"] == ports["sip-tcp"] == 5080
    # The NetworkPolicy admits the peers on that same range.
    text = yaml.safe_dump(Rendered(render(chart, {"services": {"media": {"voice": {"rtpPortStart": 30000,
                                                                                   "rtpPortEnd": 30999}}}})).objects)
    assert "endPort: 30999" in text and "port: 30000" in text


def test_media_speaks_sip_over_tls_with_the_certificate_secret_it_is_given(chart):
    # Off by default: no variable, port or volume.
    d = Rendered(render(chart, {})).get("Deployment", full("media"))
    assert "CENTRALITA_SIP_TLS_ADDR" not in env_of(d)
    assert "sip-tls" not in {p["name"] for p in container(d)["ports"]}
    values = {"services": {"media": {"voice": {"tls": {"secretName": "sip-cert", "port": 5071}}}}}
    r = Rendered(render(chart, values))
    for obj in r.objects:
        if (obj["apiVersion"], obj["kind"]) not in THIRD_PARTY_KINDS:
            kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
    d = r.get("Deployment", full("media"))
    env = {k: v.get("value") for k, v in env_of(d).items()}
    assert env["CENTRALITA_SIP_TLS_ADDR"] == "$(POD_IP):5071"
    assert (env["CENTRALITA_SIP_TLS_CERT_FILE"], env["CENTRALITA_SIP_TLS_KEY_FILE"]) == \
        ("/etc/centralita/sip-tls/tls.crt", "/etc/centralita/sip-tls/tls.key")
    assert {p["name"]: (p["containerPort"], p["protocol"]) for p in container(d)["ports"]}["sip-tls"] == (5071, "TCP")
    # The Secret mounted whole (a renewed certificate reaches the pod; media watches the files).
    vols = {v["name"]: v for v in d["spec"]["template"]["spec"]["volumes"]}
    assert vols["sip-tls"]["secret"] == {"secretName": "sip-cert", "defaultMode": 0o440}
    mounts = {m["name"]: m for m in container(d)["volumeMounts"]}
    assert mounts["sip-tls"] == {"name": "sip-tls", "mountPath": "/etc/centralita/sip-tls", "readOnly": True}
    svc = r.get("Service", full("media-sip"))
    assert {"name": "sip-tls", "port": 5071, "targetPort": "sip-tls", "protocol": "TCP"} in svc["spec"]["ports"]
    assert "port: 5071" in yaml.safe_dump(r.get("NetworkPolicy", full("media"))), "the peers may reach it"
    lib = (REPO / "services/media/src/lib.rs").read_text()
    for var in ("CENTRALITA_SIP_TLS_ADDR", "CENTRALITA_SIP_TLS_CERT_FILE", "CENTRALITA_SIP_TLS_KEY_FILE"):
        assert f'env = "{var}"' in lib, var
    with pytest.raises(Exception):
        render(chart, {"services": {"media": {"voice": {"tls": {"secretName": "Not_A_Secret", "port": 5061}}}}})


# ---------------------------------------------------------------------------------------
# media's digital role: web chat, SMS, email and ConversationService
# ---------------------------------------------------------------------------------------

SIGNING = {"config": {"jwt": {"privateKeySecret": {"name": "centralita-signing", "key": "k.pem"}}}}


def validate_all(r: Rendered) -> None:
    for obj in r.objects:
        if (obj["apiVersion"], obj["kind"]) not in THIRD_PARTY_KINDS:
            kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)


def merge(*dicts: dict) -> dict:
    out: dict = {}
    for d in dicts:
        for k, v in d.items():
            out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def test_digital_runs_medias_binary_in_its_digital_role(chart):
    r = Rendered(render(chart, SIGNING))
    validate_all(r)
    d = r.get("Deployment", full("digital"))
    c = container(d)
    env = env_of(d)
    assert c["command"] == ["/usr/local/bin/centralita-media"]
    assert env["CENTRALITA_MEDIA_ROLES"]["value"] == "digital"
    # Its conversations in PostgreSQL (schema `media`), from the Secret; no Redis.
    assert env["CENTRALITA_DATABASE_URL"]["valueFrom"]["secretKeyRef"] == {"name": "centralita-database", "key": "url"}
    assert env["CENTRALITA_DATABASE_POOL_SIZE"]["value"] == "16"
    assert "CENTRALITA_REDIS_URL" not in env
    ports = {p["name"]: (p["containerPort"], p["protocol"]) for p in c["ports"]}
    assert ports == {"grpc": (50051, "TCP"), "admin": (9090, "TCP"), "http": (8480, "TCP")}, "no SIP, no SMTP by default"
    assert env["CENTRALITA_WEBCHAT_ADDR"]["value"] == "0.0.0.0:8480"
    assert env["CENTRALITA_SESSIONS_ENDPOINT"]["value"] == f"http://{full('sessions')}:50051"
    assert env["CENTRALITA_CRM_ENDPOINT"]["value"] == f"http://{full('crm')}:50051"
    assert env["CENTRALITA_JWT_PRIVATE_KEY_FILE"]["value"] == "/etc/centralita/signing/k.pem"
    for var in ("CENTRALITA_SIP_ADDR", "CENTRALITA_RTP_PORTS", "CENTRALITA_SIP_DRAIN", "CENTRALITA_SMTP_ADDR",
                "CENTRALITA_SMS_PUBLIC_URL", "CENTRALITA_SMS_SECRETS_DIR", "CENTRALITA_EMAIL_SECRETS_DIR",
                "CENTRALITA_WHATSAPP_SECRETS_DIR", "CENTRALITA_TELEGRAM_SECRETS_DIR", "CENTRALITA_MESSENGER_SECRETS_DIR"):
        assert var not in env, var
    # Transcripts of closed digital contacts go to recording.
    assert env["CENTRALITA_RECORDING_ENDPOINT"]["value"] == f"http://{full('recording')}:50051"
    assert c["readinessProbe"]["grpc"] == {"port": 50051}
    svc = r.get("Service", full("digital"))
    assert {p["name"]: (p["port"], p["targetPort"], p.get("appProtocol")) for p in svc["spec"]["ports"]} == {
        "grpc": (50051, "grpc", "kubernetes.io/h2c"), "admin": (9090, "admin", "http"), "http": (8480, "http", "http")}
    # Off by default: no SMTP Service, no customers' Ingress, no Secret volumes.
    assert r.find("Service", full("digital-smtp")) is None and r.find("Ingress", full("digital")) is None
    assert not [v for v in d["spec"]["template"]["spec"]["volumes"] if "credentials" in v["name"]]
    # Scaled and protected on its own, like every service.
    hpa = r.get("HorizontalPodAutoscaler", full("digital"))
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 8)
    assert r.get("PodDisruptionBudget", full("digital"))["spec"]["maxUnavailable"] == 1
    assert r.get("ServiceAccount", full("digital"))["automountServiceAccountToken"] is False
    # media is the voice role only.
    media = env_of(r.get("Deployment", full("media")))
    assert media["CENTRALITA_MEDIA_ROLES"]["value"] == "voice"
    assert "CENTRALITA_WEBCHAT_ADDR" not in media and "CENTRALITA_DATABASE_URL" not in media
    assert "http" not in {p["name"] for p in r.get("Service", full("media"))["spec"]["ports"]}
    # crm's subject access export reads conversations from the digital role's Service.
    crm = env_of(r.get("Deployment", full("crm")))
    assert crm["CENTRALITA_MEDIA_ENDPOINT"]["value"] == f"http://{full('digital')}:50051"
    # The binary reads what the chart sets.
    lib = (REPO / "services/media/src/lib.rs").read_text()
    for var in ("CENTRALITA_MEDIA_ROLES", "CENTRALITA_WEBCHAT_ADDR", "CENTRALITA_SMS_PUBLIC_URL", "CENTRALITA_SMTP_ADDR",
                "CENTRALITA_SMTP_HOSTNAME", "CENTRALITA_SMTP_MAX_MESSAGE_BYTES", "CENTRALITA_SMS_SECRETS_DIR",
                "CENTRALITA_EMAIL_SECRETS_DIR", "CENTRALITA_WHATSAPP_SECRETS_DIR", "CENTRALITA_TELEGRAM_SECRETS_DIR",
                "CENTRALITA_MESSENGER_SECRETS_DIR", "CENTRALITA_CRM_ENDPOINT"):
        assert f'env = "{var}"' in lib, var


def test_digital_takes_mail_the_providers_secrets_and_an_ingress(chart):
    values = {"services": {"digital": {
        "http": {"port": 8081, "publicUrl": "https://chat.bpo.example",
                 "clients": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "edge"}}}],
                 "ingress": {"enabled": True, "className": "nginx", "host": "chat.bpo.example", "tlsSecretName": "chat-tls",
                             "annotations": {"nginx.ingress.kubernetes.io/proxy-read-timeout": "3600"}}},
        "smtp": {"enabled": True, "hostname": "mx.bpo.example", "maxMessageBytes": 5242880,
                 "peerCidrs": ["198.51.100.0/24"],
                 "service": {"type": "LoadBalancer", "port": 25, "externalTrafficPolicy": "Local",
                             "annotations": {"service.beta.kubernetes.io/aws-load-balancer-type": "nlb"}}},
        "smsSecrets": ["acme-sms", "globex.sms"],
        "emailSecrets": ["acme-mail"],
        "whatsappSecrets": ["acme-whatsapp"],
        "telegramSecrets": ["acme-telegram"],
        "messengerSecrets": ["acme-meta"],
        "providerEgress": {"cidrs": ["0.0.0.0/0"], "ports": [443, 587]},
    }}}
    report = lint(CHART_DIR, values, strict=True, namespace=NAMESPACE, kube_version="v1.30.0")
    assert report["errors"] == [] and [m for m in report["messages"] if m["severity"] >= 2] == []
    r = Rendered(render(chart, values))
    validate_all(r)
    d = r.get("Deployment", full("digital"))
    c = container(d)
    env = {k: v.get("value") for k, v in env_of(d).items()}
    assert env["CENTRALITA_WEBCHAT_ADDR"] == "0.0.0.0:8081"
    assert env["CENTRALITA_SMS_PUBLIC_URL"] == "https://chat.bpo.example"
    assert env["CENTRALITA_SMTP_ADDR"] == "0.0.0.0:2525"
    assert env["CENTRALITA_SMTP_HOSTNAME"] == "mx.bpo.example"
    assert env["CENTRALITA_SMTP_MAX_MESSAGE_BYTES"] == "5242880"
    assert env["CENTRALITA_SMS_SECRETS_DIR"] == "/etc/centralita/sms"
    assert env["CENTRALITA_EMAIL_SECRETS_DIR"] == "/etc/centralita/email"
    assert env["CENTRALITA_WHATSAPP_SECRETS_DIR"] == "/etc/centralita/whatsapp"
    assert env["CENTRALITA_TELEGRAM_SECRETS_DIR"] == "/etc/centralita/telegram"
    assert env["CENTRALITA_MESSENGER_SECRETS_DIR"] == "/etc/centralita/messenger"
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"grpc": 50051, "admin": 9090, "http": 8081, "smtp": 2525}
    # The tenants' Secrets, whole and optional (a late or rotated Secret reaches the pod).
    vols = {v["name"]: v for v in d["spec"]["template"]["spec"]["volumes"]}
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    for prefix, directory, names in (("sms-credentials", "/etc/centralita/sms", ["acme-sms", "globex.sms"]),
                                     ("email-credentials", "/etc/centralita/email", ["acme-mail"]),
                                     ("whatsapp-credentials", "/etc/centralita/whatsapp", ["acme-whatsapp"]),
                                     ("telegram-credentials", "/etc/centralita/telegram", ["acme-telegram"]),
                                     ("messenger-credentials", "/etc/centralita/messenger", ["acme-meta"])):
        for i, name in enumerate(names):
            assert vols[f"{prefix}-{i}"]["secret"] == {"secretName": name, "defaultMode": 0o440, "optional": True}
            assert mounts[f"{prefix}-{i}"] == {"name": f"{prefix}-{i}", "mountPath": f"{directory}/{name}", "readOnly": True}
    assert {n for n in vols if "credentials" in n} == {"sms-credentials-0", "sms-credentials-1", "email-credentials-0",
                                                     "whatsapp-credentials-0", "telegram-credentials-0",
                                                     "messenger-credentials-0"}
    # The layouts the binary reads: {dir}/{secret}/authToken and {dir}/{secret}/username, password.
    lib = (REPO / "services/media/src/lib.rs").read_text()
    assert "`{dir}/{secret}/authToken`" in lib and "`{dir}/{secret}/username` and `password`" in lib
    # The component's Service carries http on its port; mail has its own Service.
    svc = r.get("Service", full("digital"))
    assert {p["name"]: p["port"] for p in svc["spec"]["ports"]}["http"] == 8081
    smtp = r.get("Service", full("digital-smtp"))
    assert smtp["spec"]["type"] == "LoadBalancer" and smtp["spec"]["externalTrafficPolicy"] == "Local"
    assert smtp["spec"]["ports"] == [{"name": "smtp", "port": 25, "targetPort": "smtp", "protocol": "TCP"}]
    assert smtp["spec"]["selector"] == d["spec"]["selector"]["matchLabels"]
    assert smtp["metadata"]["annotations"] == {"service.beta.kubernetes.io/aws-load-balancer-type": "nlb"}
    assert "centralita.io/metrics" not in smtp["metadata"]["labels"], "not scraped"
    # The customers' Ingress: the host, `/` to the http port, TLS and the annotations given.
    ing = r.get("Ingress", full("digital"))
    assert ing["spec"]["ingressClassName"] == "nginx"
    assert ing["spec"]["tls"] == [{"hosts": ["chat.bpo.example"], "secretName": "chat-tls"}]
    assert ing["metadata"]["annotations"] == {"nginx.ingress.kubernetes.io/proxy-read-timeout": "3600"}
    (rule,) = ing["spec"]["rules"]
    assert rule["host"] == "chat.bpo.example"
    assert rule["http"]["paths"] == [{"path": "/", "pathType": "Prefix",
                                      "backend": {"service": {"name": full("digital"), "port": {"number": 8081}}}}]
    # NetworkPolicy: http from the clients, SMTP from the senders' CIDRs, out to the providers.
    pol = r.get("NetworkPolicy", full("digital"))
    ingress = {frozenset(ports_of(rule)): rule["from"] for rule in pol["spec"]["ingress"]}
    assert ingress[frozenset({("TCP", 8081, None)})] == values["services"]["digital"]["http"]["clients"]
    assert ingress[frozenset({("TCP", 2525, None)})] == [{"ipBlock": {"cidr": "198.51.100.0/24"}}]
    providers = [e for e in pol["spec"]["egress"] if e["to"] == [{"ipBlock": {"cidr": "0.0.0.0/0"}}]]
    assert [ports_of(e) for e in providers] == [{("TCP", 443, None), ("TCP", 587, None)}]
    assert not any(("TCP", 6379, None) in ports_of(e) for e in pol["spec"]["egress"]), "no Redis"
    assert any(("TCP", 5432, None) in ports_of(e) for e in pol["spec"]["egress"]), "PostgreSQL"
    # media (voice) gets none of it.
    media = env_of(r.get("Deployment", full("media")))
    assert not {"CENTRALITA_SMTP_ADDR", "CENTRALITA_SMS_SECRETS_DIR", "CENTRALITA_EMAIL_SECRETS_DIR"} & set(media)
    # A ClusterIP SMTP Service (behind the cluster's own mail edge) has no traffic policy.
    r = Rendered(render(chart, merge(values, {"services": {"digital": {"smtp": {"service": {"type": "ClusterIP"}}}}})))
    smtp = r.get("Service", full("digital-smtp"))
    assert smtp["spec"]["type"] == "ClusterIP" and "externalTrafficPolicy" not in smtp["spec"]


def test_the_console_reaches_conversations_on_the_digital_role(chart):
    r = Rendered(render(chart, console_values()))
    paths = {p["path"]: p["backend"]["service"] for p in r.get("Ingress", full("console"))["spec"]["rules"][0]["http"]["paths"]}
    svc = r.get("Service", full("digital"))
    grpc = next(p["port"] for p in svc["spec"]["ports"] if p["name"] == "grpc")
    assert paths["/centralita.media.v1.ConversationService"] == {"name": full("digital"), "port": {"number": grpc}}
    assert "media=" + CONSOLE_URL in env_of(r.get("Deployment", full("console")))["CENTRALITA_CONSOLE_ENDPOINTS"]["value"]
    assert env_of(r.get("Deployment", full("digital")))["CENTRALITA_GRPC_WEB_ORIGINS"]["value"] == CONSOLE_URL
    # The browser's `media` endpoint follows the digital role, not voice.
    for media, digital, expected in ((False, True, True), (True, False, False)):
        r = Rendered(render(chart, merge(console_values(), {"services": {"media": {"enabled": media},
                                                                         "digital": {"enabled": digital}}})))
        endpoints = env_of(r.get("Deployment", full("console")))["CENTRALITA_CONSOLE_ENDPOINTS"]["value"].split(",")
        assert (f"media={CONSOLE_URL}" in endpoints) is expected, (media, digital)
        paths = [p["path"] for p in r.get("Ingress", full("console"))["spec"]["rules"][0]["http"]["paths"]]
        assert ("/centralita.media.v1.ConversationService" in paths) is expected
        crm = env_of(r.get("Deployment", full("crm")))
        assert ("CENTRALITA_MEDIA_ENDPOINT" in crm) is expected, "crm's export reads the digital role"
