"""A caller's contact lands on one customer profile and the offered agent sees it.

The service binaries `deploy/local/test.sh` started: a tenant applied with the CLI, a
customer known to the CRM with a note, then two calls from that customer's number written
two ways, created by a channel through sessions and routed by routing. The CRM consumes the
contacts topic; the agent offered the second call gets the screen-pop (profile, the first
call, the note) with grpcio, an independent client. Another agent, and the tenant's
supervisor, are refused; a GDPR export holds both calls.
"""
import json
import threading
import uuid

import grpc
import pytest

from conftest import auth, cli, endpoints, mint, tenant_manifest, wait_for


@pytest.fixture(scope="module")
def m(pb):
    from centralita.crm.v1 import crm_pb2, crm_pb2_grpc
    from centralita.sessions.v1 import sessions_pb2, sessions_pb2_grpc

    class M:
        c = crm_pb2
        cg = crm_pb2_grpc
        s = sessions_pb2
        sg = sessions_pb2_grpc
        t = pb.tenancy

    return M


def tenant_yaml(tenant):
    queue = "id: support, offerTimeoutSeconds: 30, afterContactWorkSeconds: 60"
    return tenant_manifest(tenant, queue, display=f"CRM screen-pop {tenant}", channels="email", away_reasons="")


def test_offered_agent_gets_the_customer_screen_pop(m, tmp_path):
    eps = endpoints()
    run = uuid.uuid4().hex[:8]
    tenant, agent_id = f"crm-{run}", f"crm-agent-{run}"
    manifest = tmp_path / "tenant.yaml"
    manifest.write_text(tenant_yaml(tenant) + "---\n" + tenant_yaml(f"{tenant}-b"))
    cli("admin", "tenant", "apply", "-f", str(manifest))
    bpo, channel = mint("--role", "bpo_admin"), mint("--tenant", tenant, "--role", "channel")
    admin = mint("--tenant", tenant, "--role", "tenant_admin")
    agent_token = mint("--tenant", tenant, "--role", "agent", "--agent-id", agent_id)
    sessions, crm_channel = grpc.insecure_channel(eps["sessions"]), grpc.insecure_channel(eps["crm"])
    agents, contacts = m.sg.AgentServiceStub(sessions), m.sg.ContactServiceStub(sessions)
    crm = m.cg.CustomerServiceStub(crm_channel)
    s, c = m.s, m.c
    number = f"+3491{int(run, 16) % 10_000_000:07d}"
    national = f"0034 91 {number[5:8]} {number[8:]}"

    def tenant_known():
        try:
            contacts.ListQueueStats(s.ListQueueStatsRequest(), metadata=auth(admin), timeout=5)
            crm.FindCustomers(c.FindCustomersRequest(identity=c.Identity(kind=c.IDENTITY_KIND_PHONE, value=number)),
                              metadata=auth(admin), timeout=5)
            return True
        except grpc.RpcError:
            return False

    assert wait_for(tenant_known, 60), "sessions or crm never saw the tenant"
    known = crm.ResolveCustomer(c.ResolveCustomerRequest(
        identities=[c.Identity(kind=c.IDENTITY_KIND_PHONE, value=national)], display_name="Lucía Gil"),
        metadata=auth(channel), timeout=10)
    assert known.created and known.customer.identities[0].value == number
    crm.AddNote(c.AddNoteRequest(customer=known.customer.name, text="prefers email follow-ups"),
                metadata=auth(admin), timeout=10)

    name = f"agents/{agent_id}"
    agents.UpsertAgent(s.UpsertAgentRequest(agent=s.Agent(
        name=name, display_name=agent_id, queues=[s.QueueAssignment(tenant=tenant, queue="support")],
        capacity=[s.ChannelCapacity(channel=m.t.CHANNEL_EMAIL, max_contacts=1, exclusive=False)])),
        metadata=auth(bpo), timeout=10)
    agents.SignIn(s.SignInRequest(name=name, available=True), metadata=auth(agent_token), timeout=10)
    offers, errors = [], []
    stream = agents.StreamAgentEvents(s.StreamAgentEventsRequest(name=name), metadata=auth(agent_token))

    def listen():
        try:
            for ev in stream:
                if ev.WhichOneof("event") == "offer":
                    offers.append(ev.offer)
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.CANCELLED:
                errors.append(e)

    threading.Thread(target=listen, daemon=True).start()

    def call(value, request_id):
        return contacts.CreateContact(s.CreateContactRequest(contact=s.Contact(
            channel=m.t.CHANNEL_EMAIL, queue="support",
            customer_identities=[c.Identity(kind=c.IDENTITY_KIND_PHONE, value=value)]), request_id=request_id),
            metadata=auth(channel), timeout=10)

    # The first contact: offered, accepted, ended, wrapped up.
    first = call(number, f"{run}-1")
    assert first.customer_identities[0].value == number
    assert wait_for(lambda: len(offers) == 1 or errors, 30), "no offer for the first contact"
    o = offers[0]
    contacts.AcceptContact(s.AcceptContactRequest(name=o.name, offer_id=o.offer_id), metadata=auth(agent_token),
                           timeout=10)
    contacts.EndContact(s.EndContactRequest(name=o.name), metadata=auth(agent_token), timeout=10)
    contacts.WrapUpContact(s.WrapUpContactRequest(name=o.name, disposition="resolved", notes="sent the invoice"),
                           metadata=auth(agent_token), timeout=10)
    # The second, from the same number written nationally.
    second = call(national.replace("0034 ", "+34 "), f"{run}-2")
    assert wait_for(lambda: len(offers) == 2 or errors, 30), "no offer for the second contact"
    assert not errors, errors
    assert offers[1].name == second.name

    pop = crm.GetScreenPop(c.GetScreenPopRequest(contact=second.name), metadata=auth(agent_token), timeout=10)
    assert pop.customer.name == known.customer.name and pop.customer.display_name == "Lucía Gil"
    assert pop.contact.state == "offered"
    assert [n.text for n in pop.notes] == ["prefers email follow-ups"]

    def first_closed():
        p = crm.GetScreenPop(c.GetScreenPopRequest(contact=second.name), metadata=auth(agent_token), timeout=10)
        return [(i.contact, i.state, i.disposition, i.wrap_up_notes) for i in p.interactions] == \
            [(first.name, "closed", "resolved", "sent the invoice")]

    assert wait_for(first_closed, 20), "the first contact never reached the screen-pop"

    # Only the agent holding the contact.
    for token in (mint("--tenant", tenant, "--role", "agent", "--agent-id", f"other-{run}"), admin):
        with pytest.raises(grpc.RpcError) as denied:
            crm.GetScreenPop(c.GetScreenPopRequest(contact=second.name), metadata=auth(token), timeout=10)
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    stream.cancel()

    export = crm.ExportCustomer(c.ExportCustomerRequest(name=known.customer.name), metadata=auth(admin), timeout=10)
    doc = json.loads(export.json)
    assert sorted(i["contact"] for i in doc["interactions"]) == sorted([first.name, second.name])
    with pytest.raises(grpc.RpcError) as other:
        crm.GetCustomer(c.GetCustomerRequest(name=known.customer.name),
                        metadata=auth(mint("--tenant", f"{tenant}-b", "--role", "tenant_admin")), timeout=10)
    assert other.value.code() == grpc.StatusCode.NOT_FOUND
