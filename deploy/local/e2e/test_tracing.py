"""One contact is one trace across services, seen by an independent OTLP receiver.

The test starts a small OTLP/gRPC trace receiver (`opentelemetry-proto` and grpcio, no
OpenTelemetry SDK) and its own sessions, routing, reporting and CRM processes exporting to
it (own ports and topic prefix, short batch delay). As the caller with one span of its own,
it creates a contact with a `traceparent` naming that span. The first agent lets the offer
time out (the offer timer fires: RONA); a second agent signing in later, in a trace of its
own, is offered the contact and handles it (accept, end, wrap-up), each call in a trace of
its own too, as a real desktop would: sessions keeps the contact's trace context on its
record and runs each command in a span of that trace, linked to the calling trace.

Then, in what the services exported:
- every span about the contact (a `contact` attribute naming it) has the caller's trace id;
- the spans of that trace form one tree rooted at the caller's span (every parent is the
  caller's span or another exported span of the trace);
- the tree holds the RPCs, the outbox drains, routing's input and decision spans, sessions'
  decision handling, the offer timer, the agent's commands (each linked to the agent's own
  call) and reporting's and CRM's consumption of the contact's events, and each batch span
  that consumed them links to a span of the tree;
- the services' JSON log lines written inside the trace carry its trace and span ids;
- the services push their metrics to the same receiver over OTLP (every second here): the
  last push of sessions agrees with its `/metrics`, and the CreateContact latency point
  carries the caller's trace as its exemplar.
"""
import json
import os
import secrets
import threading
import time
import uuid
from concurrent import futures

import grpc
import pytest

from conftest import (
    sessions_knows_tenant, upsert_voice_agents, BIN, DEV_PUB, auth, cli, free_port, http_get, mint,
    tenant_manifest, wait_for,
)

SERVICES = ("sessions", "routing", "reporting", "crm")
OFFER_TIMEOUT_S = 3


class Receiver:
    """An OTLP/gRPC TraceService keeping every span it is sent, flattened, and a
    MetricsService keeping every export it is sent."""

    def __init__(self):
        from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

        receiver = self
        self.spans, self.metric_exports, self.lock = [], [], threading.Lock()

        class Service(trace_service_pb2_grpc.TraceServiceServicer):
            def Export(self, request, context):
                receiver.add(request)
                return trace_service_pb2.ExportTraceServiceResponse()

        class Metrics(metrics_service_pb2_grpc.MetricsServiceServicer):
            def Export(self, request, context):
                with receiver.lock:
                    receiver.metric_exports.append(request)
                return metrics_service_pb2.ExportMetricsServiceResponse()

        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Service(), self.server)
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(Metrics(), self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def add(self, request):
        out = []
        for rs in request.resource_spans:
            service = attrs(rs.resource.attributes).get("service.name", "")
            for ss in rs.scope_spans:
                for sp in ss.spans:
                    out.append({
                        "service": service,
                        "name": sp.name,
                        "trace": sp.trace_id.hex(),
                        "id": sp.span_id.hex(),
                        "parent": sp.parent_span_id.hex(),
                        "attrs": attrs(sp.attributes),
                        "links": [(l.trace_id.hex(), l.span_id.hex()) for l in sp.links],
                    })
        with self.lock:
            self.spans.extend(out)

    def all(self):
        with self.lock:
            return list(self.spans)

    def last_metrics(self, service):
        """The metrics of `service`'s latest export, by name."""
        with self.lock:
            exports = list(self.metric_exports)
        for request in reversed(exports):
            for rm in request.resource_metrics:
                if attrs(rm.resource.attributes).get("service.name") == service:
                    return {m.name: m for sm in rm.scope_metrics for m in sm.metrics}
        return {}


def attrs(kvs):
    out = {}
    for kv in kvs:
        v = kv.value
        out[kv.key] = getattr(v, v.WhichOneof("value")) if v.WhichOneof("value") else None
    return out


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.server.stop(0)


@pytest.fixture(scope="module")
def m(pb):
    from centralita.sessions.v1 import sessions_pb2, sessions_pb2_grpc

    class M:
        s = sessions_pb2
        sg = sessions_pb2_grpc
        t = pb.tenancy

    return M


def test_one_contact_is_one_trace_across_services(m, receiver, spawn, tmp_path):
    s = m.s
    run = uuid.uuid4().hex[:8]
    prefix = f"trace-{run}."
    ports = {}
    for service in SERVICES:
        grpc_port, admin_port = free_port(), free_port()
        ports[service] = (grpc_port, admin_port)
        spawn([str(BIN / f"centralita-{service}")], {
            "CENTRALITA_GRPC_ADDR": f"127.0.0.1:{grpc_port}",
            "CENTRALITA_ADMIN_ADDR": f"127.0.0.1:{admin_port}",
            "CENTRALITA_JWT_PUBLIC_KEY_FILE": str(DEV_PUB),
            "CENTRALITA_KAFKA_TOPIC_PREFIX": prefix,
            "CENTRALITA_LOG_FORMAT": "json",
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver.port}",
            "OTEL_BSP_SCHEDULE_DELAY": "200",
            "OTEL_METRIC_EXPORT_INTERVAL": "1000",
        }, tmp_path / f"{service}.log")
    for service, (_, admin_port) in ports.items():
        assert wait_for(lambda: http_get(admin_port, "/readyz")[0] == 200, 60), (service, http_get(admin_port, "/readyz"))

    tenant, ana, bob = f"trace-{run}", f"ana-{run}", f"bob-{run}"
    manifest = tmp_path / "tenant.yaml"
    queue = f"id: support, offerTimeoutSeconds: {OFFER_TIMEOUT_S}, afterContactWorkSeconds: 60"
    manifest.write_text(tenant_manifest(tenant, queue, display=f"Tracing {tenant}", channels="voice"))
    cli("admin", "tenant", "apply", "-f", str(manifest), env={"CENTRALITA_KAFKA_TOPIC_PREFIX": prefix})
    bpo, channel = mint("--role", "bpo_admin"), mint("--tenant", tenant, "--role", "channel")
    sup = mint("--tenant", tenant, "--role", "supervisor")
    ta = mint("--tenant", tenant, "--role", "agent", "--agent-id", ana)
    tb = mint("--tenant", tenant, "--role", "agent", "--agent-id", bob)
    sessions = grpc.insecure_channel(f"127.0.0.1:{ports['sessions'][0]}")
    agents, contacts = m.sg.AgentServiceStub(sessions), m.sg.ContactServiceStub(sessions)

    assert sessions_knows_tenant(contacts, s, sup), "sessions never learned the tenant"
    upsert_voice_agents(agents, s, m.t.CHANNEL_VOICE, tenant, (ana, bob), bpo)
    agents.SignIn(s.SignInRequest(name=f"agents/{ana}", available=True), metadata=auth(ta), timeout=10)

    # The caller's span: the contact's creation carries it as the parent.
    trace_id, caller = secrets.token_hex(16), secrets.token_hex(8)
    traced = lambda token: auth(token) + (("traceparent", f"00-{trace_id}-{caller}-01"),)  # noqa: E731
    # Bob's desktop: each of his calls in a trace of its own.
    bob_traces = []

    def bob_call(token):
        bob_traces.append(secrets.token_hex(16))
        return auth(token) + (("traceparent", f"00-{bob_traces[-1]}-{secrets.token_hex(8)}-01"),)

    call = contacts.CreateContact(s.CreateContactRequest(contact=s.Contact(
        channel=m.t.CHANNEL_VOICE, queue="support")), metadata=traced(channel), timeout=10)
    contact_id = call.name.rsplit("/", 1)[-1]

    def state_is(state, agent=None):
        c = contacts.GetContact(s.GetContactRequest(name=call.name), metadata=auth(sup), timeout=5)
        return c if c.state == state and (agent is None or c.agent_id == agent) else None

    assert wait_for(lambda: state_is(s.CONTACT_STATE_OFFERED, ana), 30), "not offered to ana"
    # Ana does not answer: the offer timer fires and the contact goes back to its queue.
    assert wait_for(lambda: state_is(s.CONTACT_STATE_QUEUED), OFFER_TIMEOUT_S + 15), "the offer did not time out"
    # Bob signs in (a trace of his own) and is offered the contact, which he handles.
    agents.SignIn(s.SignInRequest(name=f"agents/{bob}", available=True), metadata=auth(tb), timeout=10)
    assert wait_for(lambda: state_is(s.CONTACT_STATE_OFFERED, bob), 30), "not offered to bob"
    o = state_is(s.CONTACT_STATE_OFFERED, bob)
    accepted = contacts.AcceptContact(s.AcceptContactRequest(name=o.name, offer_id=o.offer_id),
                                      metadata=bob_call(tb), timeout=10)
    assert accepted.trace_parent.split("-")[1] == trace_id, accepted.trace_parent
    contacts.EndContact(s.EndContactRequest(name=call.name), metadata=bob_call(tb), timeout=10)
    contacts.WrapUpContact(s.WrapUpContactRequest(name=call.name, disposition="resolved"), metadata=bob_call(tb),
                           timeout=10)

    def in_trace():
        return [sp for sp in receiver.all() if sp["trace"] == trace_id]

    def consumed_by(service):
        return [sp for sp in in_trace() if sp["service"] == service and sp["name"] == "consume_record"]

    # Reporting and CRM consume the contact's events, its wrap-up among them.
    assert wait_for(lambda: len(consumed_by("reporting")) >= 5 and len(consumed_by("crm")) >= 5, 60), \
        [(sp["service"], sp["name"]) for sp in in_trace()]
    time.sleep(2)  # what is still in the exporters' batches
    spans, everything = in_trace(), receiver.all()
    ids = {sp["id"] for sp in spans}

    def about_contact(sp):
        v = sp["attrs"].get("contact")
        return isinstance(v, str) and (v == contact_id or v.endswith("/" + contact_id))

    astray = [(sp["service"], sp["name"], sp["trace"]) for sp in everything if about_contact(sp) and sp["trace"] != trace_id]
    assert not astray, f"spans about the contact outside the caller's trace: {astray}"

    orphans = [(sp["service"], sp["name"], sp["parent"]) for sp in spans if sp["parent"] not in ids | {caller}]
    assert not orphans, f"spans of the trace whose parent is neither the caller's span nor in the trace: {orphans}"
    roots = [sp for sp in spans if sp["parent"] == caller]
    assert roots and all(sp["service"] == "sessions" and sp["name"] == "grpc" for sp in roots), \
        [(sp["service"], sp["name"]) for sp in roots]

    names = {(sp["service"], sp["name"]) for sp in spans}
    for want in [("sessions", "grpc"), ("sessions", "outbox"), ("routing", "routing.input"),
                 ("routing", "routing.decision"), ("sessions", "consume"), ("sessions", "decision"),
                 ("sessions", "timer"), ("reporting", "consume_record"), ("crm", "consume_record")]:
        assert want in names, f"{want} not in the trace: {sorted(names)}"
    offers = [sp for sp in spans if sp["name"] == "routing.decision" and sp["attrs"].get("kind") == "offer"]
    assert {sp["attrs"].get("tenant") for sp in offers} == {tenant} and len(offers) >= 2, offers
    assert all(sp["attrs"].get("pool") for sp in offers), offers
    # Bob's offer was decided on his readiness (his own trace), in the contact's trace, linked to it.
    assert any(l[0] != trace_id for sp in offers for l in sp["links"]), offers
    timers = [sp for sp in spans if sp["name"] == "timer"]
    assert [sp["attrs"].get("kind") for sp in timers] == ["offer"], timers
    # Bob's commands ran in the contact's trace, each linked to the call that made it.
    commands = {sp["attrs"].get("command"): sp for sp in spans if sp["name"] == "contact_command"}
    assert set(commands) == {"accept", "end", "wrap_up"}, commands
    for (command, sp), bob_trace in zip(sorted(commands.items(), key=lambda kv: ["accept", "end", "wrap_up"].index(kv[0])),
                                        bob_traces):
        assert [t for t, _ in sp["links"]] == [bob_trace], (command, sp["links"], bob_trace)
        assert any(other["trace"] == bob_trace and other["name"] == "grpc" for other in everything), command

    for service in ("reporting", "crm"):
        batches = [sp for sp in everything if sp["service"] == service and sp["name"] == "consume_batch"
                   and any(t == trace_id for t, _ in sp["links"])]
        assert batches, f"no {service} batch span links to the trace"
        for sp in batches:
            linked = [i for t, i in sp["links"] if t == trace_id]
            assert all(i in ids for i in linked), (service, linked)

    # Logs lead to the trace.
    lines = []
    for line in (tmp_path / "sessions.log").read_text().splitlines():
        try:
            lines.append(json.loads(line))
        except ValueError:
            continue
    traced_lines = [l for l in lines if l.get("trace_id") == trace_id]
    assert traced_lines and all(l.get("span_id") in ids for l in traced_lines), traced_lines[:3]
    # Metrics lead to it as well: the caller's CreateContact is the OpenMetrics exemplar of the
    # latency bucket it fell in (the only CreateContact of these services).
    text = http_get(ports["sessions"][1], "/metrics")[1]
    create = [l for l in text.splitlines()
              if l.startswith("centralita_grpc_server_handling_seconds_bucket{") and 'grpc_method="CreateContact"' in l]
    assert any(l.split(" # ", 1)[-1].startswith(f'{{trace_id="{trace_id}"}} ') for l in create if " # " in l), create

    # The same metrics were pushed over OTLP: sessions' last push agrees with its scrape.
    def create_point(pushed):
        h = pushed.get("centralita_grpc_server_handling_seconds")
        points = [p for p in (h.histogram.data_points if h else [])
                  if attrs(p.attributes).get("grpc_method") == "CreateContact"]
        return points[0] if points else None

    assert wait_for(lambda: create_point(receiver.last_metrics("sessions")), 10), "sessions pushed no metrics"
    time.sleep(1.5)  # a push after the scrape above
    pushed = receiver.last_metrics("sessions")
    point = create_point(pushed)
    scraped_count = [l for l in text.splitlines() if l.startswith("centralita_grpc_server_handling_seconds_count{")
                     and 'grpc_method="CreateContact"' in l]
    assert point.count == 1 and scraped_count and scraped_count[0].split()[-1] == "1", (point, scraped_count)
    assert sum(point.bucket_counts) == point.count and len(point.bucket_counts) == len(point.explicit_bounds) + 1
    assert [e.trace_id.hex() for e in point.exemplars] == [trace_id], point.exemplars
    handled = pushed["centralita_grpc_server_handled"].sum
    assert handled.is_monotonic and any(
        attrs(p.attributes).get("grpc_method") == "WrapUpContact" and attrs(p.attributes).get("grpc_code") == "OK"
        and p.as_double == 1 for p in handled.data_points), handled
    for service in ("routing", "reporting", "crm"):
        assert "centralita_bus_consumed_events" in receiver.last_metrics(service), f"{service} pushed no bus metrics"

    by_service = {}
    for sp in spans:
        by_service.setdefault(sp["service"], []).append(sp["name"])
    print(f"\n{len(spans)} spans in trace {trace_id}:", {k: sorted(set(v)) for k, v in by_service.items()})
