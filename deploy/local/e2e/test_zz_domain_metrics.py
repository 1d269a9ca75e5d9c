"""Every service's /metrics shows its own domain metrics, with values, after real traffic.

Named to run after the other end-to-end tests (pytest runs files in name order), and it
drives one contact of its own through its whole life as well — created with a customer
phone number, offered, accepted, ended, wrapped up — so it holds when run alone. Then it
reads each service's admin port with plain HTTP (services.sh gives the admin ports in the
order sessions, routing, media, crm, recording, reporting) and checks that the domain
metric families are there and counted what happened: contacts created and offered in
sessions, inputs and decisions in routing, customers resolved and timeline entries in CRM,
contacts recorded and legs written in reporting.
"""
import os
import uuid

import grpc
import pytest

from conftest import (
    sessions_knows_tenant, upsert_voice_agents, auth, cli, endpoints, http_get, mint, tenant_manifest,
    wait_for,
)

ADMIN_ORDER = ["sessions", "routing", "media", "crm", "recording", "reporting"]


@pytest.fixture(scope="module")
def m(pb):
    from centralita.crm.v1 import crm_pb2
    from centralita.sessions.v1 import sessions_pb2, sessions_pb2_grpc

    class M:
        c = crm_pb2
        s = sessions_pb2
        sg = sessions_pb2_grpc
        t = pb.tenancy

    return M


def samples(text, name):
    """The values of metric `name`'s samples in a Prometheus text exposition, by label set."""
    out = {}
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            labels, _, value = line.rpartition(" ")
            out[labels[len(name):]] = float(value)
    return out


def metrics_of(service):
    port = int(os.environ["CENTRALITA_ADMIN_BASE"]) + ADMIN_ORDER.index(service)
    status, text = http_get(port, "/metrics")
    assert status == 200, (service, status)
    return text


def one_contact(m, tmp_path):
    """A contact with a customer phone number through its whole life."""
    s, eps, run = m.s, endpoints(), uuid.uuid4().hex[:8]
    tenant, ana = f"metrics-{run}", f"ana-{run}"
    manifest = tmp_path / "tenant.yaml"
    manifest.write_text(tenant_manifest(tenant, "id: support, offerTimeoutSeconds: 30", channels="voice"))
    cli("admin", "tenant", "apply", "-f", str(manifest))
    bpo, channel = mint("--role", "bpo_admin"), mint("--tenant", tenant, "--role", "channel")
    sup = mint("--tenant", tenant, "--role", "supervisor")
    ta = mint("--tenant", tenant, "--role", "agent", "--agent-id", ana)
    sessions = grpc.insecure_channel(eps["sessions"])
    agents, contacts = m.sg.AgentServiceStub(sessions), m.sg.ContactServiceStub(sessions)

    assert sessions_knows_tenant(contacts, s, sup), "sessions never learned the tenant"
    upsert_voice_agents(agents, s, m.t.CHANNEL_VOICE, tenant, (ana,), bpo)
    agents.SignIn(s.SignInRequest(name=f"agents/{ana}", available=True), metadata=auth(ta), timeout=10)
    phone = m.c.Identity(kind=m.c.IDENTITY_KIND_PHONE, value="+34600" + str(uuid.uuid4().int)[:6])
    call = contacts.CreateContact(s.CreateContactRequest(contact=s.Contact(
        channel=m.t.CHANNEL_VOICE, queue="support", customer_identities=[phone])), metadata=auth(channel), timeout=10)
    got = {}

    def offered():
        got["c"] = contacts.GetContact(s.GetContactRequest(name=call.name), metadata=auth(sup), timeout=5)
        return got["c"].state == s.CONTACT_STATE_OFFERED

    assert wait_for(offered, 30), got.get("c")
    contacts.AcceptContact(s.AcceptContactRequest(name=call.name, offer_id=got["c"].offer_id), metadata=auth(ta),
                           timeout=10)
    contacts.EndContact(s.EndContactRequest(name=call.name), metadata=auth(ta), timeout=10)
    contacts.WrapUpContact(s.WrapUpContactRequest(name=call.name, disposition="resolved"), metadata=auth(ta),
                           timeout=10)


@pytest.fixture(scope="module")
def traffic(m, tmp_path_factory):
    one_contact(m, tmp_path_factory.mktemp("metrics"))


def counted(service, name, *, label=""):
    """True once `service` exposes a sample of `name` (with `label` in its label set) above 0."""
    return any(v > 0 and label in k for k, v in samples(metrics_of(service), name).items())


@pytest.mark.parametrize("service, name, label", [
    ("sessions", "centralita_sessions_contacts_created_total", 'channel="voice"'),
    ("sessions", "centralita_sessions_contact_events_total", 'kind="offered"'),
    ("sessions", "centralita_sessions_contact_events_total", 'kind="wrapped_up"'),
    ("sessions", "centralita_sessions_routing_decisions_total", 'outcome="applied"'),
    ("routing", "centralita_routing_inputs_total", 'kind="contact_queued"'),
    ("routing", "centralita_routing_decisions_total", 'kind="offer"'),
    ("crm", "centralita_crm_customers_resolved_total", ""),
    ("crm", "centralita_crm_timeline_entries_written_total", ""),
    ("reporting", "centralita_reporting_contacts_recorded_total", ""),
    ("reporting", "centralita_reporting_legs_written_total", ""),
])
def test_domain_metrics_count_what_happened(traffic, service, name, label):
    assert wait_for(lambda: counted(service, name, label=label), 30), (
        service, name, label, samples(metrics_of(service), name))


@pytest.mark.parametrize("service, gauge", [
    ("sessions", "centralita_sessions_outbox_pending_records"),
    ("sessions", "centralita_sessions_agent_streams"),
    ("routing", "centralita_routing_queued_contacts"),
    ("routing", "centralita_routing_ready_agents"),
    ("reporting", "centralita_reporting_wallboard_subscribers"),
])
def test_domain_gauges_are_exported(traffic, service, gauge):
    assert samples(metrics_of(service), gauge), f"{service} does not export {gauge}"


def test_the_operator_exports_its_reconcile_metrics(spawn, tmp_path):
    """The operator runs on the same runtime and admin port as the services. No Kubernetes
    API server runs here (its reconciles are counted against a mocked API server in
    services/operator/tests/controller.rs), so this checks what an SRE scrapes from a fresh
    operator: both families, every result at zero, beside the platform's own metrics."""
    from conftest import BIN, DEV_PUB, free_port

    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(f"""
apiVersion: v1
kind: Config
clusters: [{{ name: none, cluster: {{ server: "https://127.0.0.1:{free_port()}" }} }}]
users: [{{ name: none, user: {{ token: none }} }}]
contexts: [{{ name: none, context: {{ cluster: none, user: none }} }}]
current-context: none
""")
    admin = free_port()
    env = {
        "KUBECONFIG": str(kubeconfig),
        "CENTRALITA_GRPC_ADDR": f"127.0.0.1:{free_port()}",
        "CENTRALITA_ADMIN_ADDR": f"127.0.0.1:{admin}",
        "CENTRALITA_JWT_PUBLIC_KEY_FILE": str(DEV_PUB),
        "CENTRALITA_KAFKA_TOPIC_PREFIX": f"e2e-operator-{uuid.uuid4().hex[:8]}.",
    }
    proc = spawn([str(BIN / "centralita-operator")], env, tmp_path / "operator.log")
    assert wait_for(lambda: http_get(admin, "/livez")[0] == 200, 30), (tmp_path / "operator.log").read_text()
    text = http_get(admin, "/metrics")[1]
    reconciles = samples(text, "centralita_operator_reconciles_total")
    assert {k for k in reconciles} >= {'{service="operator",result="applied"}', '{service="operator",result="error"}'}, text
    assert "# TYPE centralita_operator_reconcile_duration_seconds histogram" in text, text
    # Not ready without the Kubernetes API, and says so.
    code, body = http_get(admin, "/readyz")
    assert code == 503, body
    assert proc.poll() is None, "the operator must not exit while the API server is unreachable"
