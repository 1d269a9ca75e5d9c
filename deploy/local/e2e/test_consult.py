"""A warm transfer through the service binaries, driven by grpcio (an independent client).

On the services `deploy/local/test.sh` started: a tenant applied with the CLI, two agents,
a call accepted by the first; she consults the second agent, conferences him in and leaves
the call to him. The contact, its consult leg and both agents are read back over gRPC, and
the contacts topic is read with kafka-python: the customer's contact carries
CONSULT_STARTED, CONFERENCED and HANDED_OVER in that order, and the leg closes with
CONSULT_CLOSED. While the leg is open, queue stats count it as a consult, not a waiting
contact; reporting counts the call offered and answered once, handled twice (Ana's part
transferred). Sessions and routing expose how old the decisions and inputs they handled
were (`centralita_bus_event_age_seconds`).
"""
import os
import time
import uuid

import grpc
import pytest
from kafka import KafkaConsumer, TopicPartition

from conftest import (
    sessions_knows_tenant, upsert_voice_agents, BROKERS, PREFIX, auth, cli, endpoints, http_get, mint,
    tenant_manifest, wait_for,
)


@pytest.fixture(scope="module")
def m(pb):
    from centralita.reporting.v1 import reporting_pb2, reporting_pb2_grpc
    from centralita.sessions.v1 import sessions_pb2, sessions_pb2_grpc

    class M:
        r = reporting_pb2
        rg = reporting_pb2_grpc
        s = sessions_pb2
        sg = sessions_pb2_grpc
        t = pb.tenancy
        env = pb.envelope

    return M


def tenant_yaml(tenant):
    queue = "id: support, offerTimeoutSeconds: 30, afterContactWorkSeconds: 60, preferredAgentSeconds: 30"
    return tenant_manifest(tenant, queue, display=f"Consult {tenant}", channels="voice")


def contact_events(m, names, want, timeout=30):
    """The contacts topic's events of `names`, by contact name, once `want` holds."""
    consumer = KafkaConsumer(bootstrap_servers=BROKERS, enable_auto_commit=False, group_id=None,
                             auto_offset_reset="earliest")
    seen = {}
    try:
        topic = PREFIX + "contacts"
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        assert tps, f"topic {topic} not found"
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ids, deadline = set(), time.monotonic() + timeout
        while time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                for r in records:
                    env = m.env.Envelope.FromString(r.value)
                    ev = m.s.ContactEvent.FromString(env.payload)
                    if ev.contact.name in names and env.event_id not in ids:
                        ids.add(env.event_id)
                        seen.setdefault(ev.contact.name, []).append(
                            m.s.ContactEvent.Kind.Name(ev.kind).removeprefix("KIND_"))
            if want(seen):
                return seen
    finally:
        consumer.close()
    return seen


def test_warm_transfer_through_a_conference(m, tmp_path):
    s = m.s
    eps = endpoints()
    run = uuid.uuid4().hex[:8]
    tenant, ana, bob = f"consult-{run}", f"ana-{run}", f"bob-{run}"
    manifest = tmp_path / "tenant.yaml"
    manifest.write_text(tenant_yaml(tenant))
    cli("admin", "tenant", "apply", "-f", str(manifest))
    bpo, channel = mint("--role", "bpo_admin"), mint("--tenant", tenant, "--role", "channel")
    sup = mint("--tenant", tenant, "--role", "supervisor")
    ta = mint("--tenant", tenant, "--role", "agent", "--agent-id", ana)
    tb = mint("--tenant", tenant, "--role", "agent", "--agent-id", bob)
    sessions = grpc.insecure_channel(eps["sessions"])
    agents, contacts = m.sg.AgentServiceStub(sessions), m.sg.ContactServiceStub(sessions)

    assert sessions_knows_tenant(contacts, s, sup), "sessions never learned the tenant"
    upsert_voice_agents(agents, s, m.t.CHANNEL_VOICE, tenant, (ana, bob), bpo)
    agents.SignIn(s.SignInRequest(name=f"agents/{ana}", available=True), metadata=auth(ta), timeout=10)

    def offered(name, to):
        """The contact once offered to `to`, read by the supervisor."""
        got = {}

        def check():
            c = contacts.GetContact(s.GetContactRequest(name=name), metadata=auth(sup), timeout=5)
            got["c"] = c
            return c.state == s.CONTACT_STATE_OFFERED and c.agent_id == to

        assert wait_for(check, 30), f"{name} was not offered to {to}: {got.get('c')}"
        return got["c"]

    call = contacts.CreateContact(s.CreateContactRequest(contact=s.Contact(
        channel=m.t.CHANNEL_VOICE, queue="support")), metadata=auth(channel), timeout=10)
    o = offered(call.name, ana)
    contacts.AcceptContact(s.AcceptContactRequest(name=o.name, offer_id=o.offer_id), metadata=auth(ta), timeout=10)

    # Ana consults Bob; he signs in, is offered the leg and accepts it.
    leg = contacts.ConsultContact(s.ConsultContactRequest(name=call.name, agent_id=bob), metadata=auth(ta),
                                  timeout=10)
    assert leg.consult_of == call.name and leg.state == s.CONTACT_STATE_QUEUED
    q = contacts.ListQueueStats(s.ListQueueStatsRequest(queue="support"), metadata=auth(sup), timeout=5).queues[0]
    assert (q.waiting, q.connected, q.consults) == (0, 1, 1), q
    agents.SignIn(s.SignInRequest(name=f"agents/{bob}", available=True), metadata=auth(tb), timeout=10)
    lo = offered(leg.name, bob)
    contacts.AcceptContact(s.AcceptContactRequest(name=lo.name, offer_id=lo.offer_id), metadata=auth(tb), timeout=10)

    # Bob does not see the customer's contact before he joins it; Ana conferences him in,
    # then leaves.
    with pytest.raises(grpc.RpcError) as refused:
        contacts.CompleteConsult(s.CompleteConsultRequest(
            name=call.name, outcome=s.CompleteConsultRequest.OUTCOME_TRANSFER), metadata=auth(tb), timeout=10)
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND, refused.value
    conf = contacts.CompleteConsult(s.CompleteConsultRequest(
        name=call.name, outcome=s.CompleteConsultRequest.OUTCOME_CONFERENCE), metadata=auth(ta), timeout=10)
    assert [(p.agent_id, p.role) for p in conf.participants if not p.HasField("leave_time")] == [
        (ana, s.Participant.ROLE_HOLDER), (bob, s.Participant.ROLE_CONFERENCED)]
    done = contacts.CompleteConsult(s.CompleteConsultRequest(
        name=call.name, outcome=s.CompleteConsultRequest.OUTCOME_TRANSFER), metadata=auth(ta), timeout=10)
    assert (done.agent_id, list(done.previous_agents), done.consult_leg) == (bob, [ana], "")

    def settled():
        l = contacts.GetContact(s.GetContactRequest(name=leg.name), metadata=auth(sup), timeout=5)
        b = agents.GetAgent(s.GetAgentRequest(name=f"agents/{bob}"), metadata=auth(tb), timeout=5)
        a = agents.GetAgent(s.GetAgentRequest(name=f"agents/{ana}"), metadata=auth(ta), timeout=5)
        return l.state == s.CONTACT_STATE_CLOSED and list(b.contacts) == [call.name] and not a.contacts

    assert wait_for(settled, 30), "the leg did not close, or the agents' contacts are not settled"
    # The customer's contact is Bob's to end and wrap up.
    contacts.EndContact(s.EndContactRequest(name=call.name), metadata=auth(tb), timeout=10)
    contacts.WrapUpContact(s.WrapUpContactRequest(name=call.name, disposition="resolved"), metadata=auth(tb),
                           timeout=10)

    want = ["CONSULT_STARTED", "CONFERENCED", "HANDED_OVER", "ENDED", "WRAPPED_UP"]

    def complete(seen):
        return all(k in seen.get(call.name, []) for k in want) and "CONSULT_CLOSED" in seen.get(leg.name, [])

    seen = contact_events(m, {call.name, leg.name}, complete)
    assert complete(seen), seen
    customer = [k for k in seen[call.name] if k in want]
    assert customer == want, seen
    assert seen[leg.name][0] == "QUEUED" and seen[leg.name][-1] == "CONSULT_CLOSED", seen

    # Reporting: one call offered and answered; Ana's handling ends at the hand-over
    # (transferred), Bob's at his wrap-up.
    reports = m.rg.ReportingServiceStub(grpc.insecure_channel(eps["reporting"]))
    now = int(time.time())
    query = m.r.QueryHistoryRequest(start_time={"seconds": now - 3600}, end_time={"seconds": now + 60},
                                    granularity=m.r.GRANULARITY_DAY, group_by=[m.r.DIMENSION_QUEUE])

    def figures():
        rows = reports.QueryHistory(query, metadata=auth(sup), timeout=10).rows
        return rows[0].figures if len(rows) == 1 else None

    assert wait_for(lambda: (f := figures()) is not None and f.handled == 2, 30), figures()
    f = figures()
    assert (f.offered, f.answered, f.waiting, f.handled, f.transferred) == (1, 1, 0, 2, 1), f

    # Every consumer records how old each event is as it handles it: sessions the routing
    # decisions, routing its inputs (services.sh gives sessions the first admin port,
    # routing the next).
    base = int(os.environ["CENTRALITA_ADMIN_BASE"])
    for port, topic in ((base, "routing.decisions"), (base + 1, "routing.inputs")):
        status, text = http_get(port, "/metrics")
        counts = [line for line in text.splitlines()
                  if line.startswith("centralita_bus_event_age_seconds_count") and f'{topic}"' in line]
        assert status == 200 and counts and float(counts[0].rsplit(" ", 1)[1]) > 0, (port, topic, counts)
