"""The subject access export reaches every store (issue 23), against the running services:
an SMS from a customer's phone (signed by PyPI `twilio`, as in test_sms.py) makes an SMS
contact in sessions, a conversation in media, and the CRM links the contact to the customer
its phone resolves to. The tenant admin's `ExportCustomer` then holds, beside the CRM's own
record, what sessions (the contact record with the phone), media (the conversation with the
text the customer wrote) and recording (the contact's recordings: none for an SMS) keep
about that customer — read by the CRM with the admin's own token — and says it is complete.

Cross-tenant: tenant B has a customer with the **same phone number** who wrote another text;
A's export holds nothing of B's, B's export nothing of A's, and B's admin cannot export A's
customer.
"""
import json
import uuid

import grpc
import pytest

from conftest import auth, cli, endpoints, mint, wait_for
from test_sms import BASE, inbound, post_form, secrets_dir, sid, signed, tenant_yaml


@pytest.fixture(scope="module")
def c(pb):
    from centralita.crm.v1 import crm_pb2, crm_pb2_grpc

    class C:
        m = crm_pb2
        g = crm_pb2_grpc

    return C


def linked(crm, c, admin, phone):
    """The customer the CRM linked an SMS contact of `phone` to, and its contacts, once it has."""
    identity = c.m.Identity(kind=c.m.IDENTITY_KIND_PHONE, value=phone)
    try:
        found = crm.FindCustomers(c.m.FindCustomersRequest(identity=identity), metadata=auth(admin), timeout=5)
        if not found.customers:
            return None
        name = found.customers[0].name
        timeline = crm.ListTimeline(c.m.ListTimelineRequest(customer=name), metadata=auth(admin), timeout=5)
        contacts = [e.interaction.contact for e in timeline.entries if e.HasField("interaction")]
        return (name, contacts) if contacts else None
    except grpc.RpcError:
        return None


def export(crm, c, admin, customer):
    r = crm.ExportCustomer(c.m.ExportCustomerRequest(name=customer), metadata=auth(admin), timeout=30)
    return json.loads(r.json)


def test_the_export_holds_what_sessions_media_and_recording_keep_of_its_tenant_only(c, tmp_path):
    eps = endpoints()
    run = uuid.uuid4().hex[:8]
    a, b = f"sara-{run}", f"sarb-{run}"
    acc_a, acc_b = "AC" + uuid.uuid4().hex, "AC" + uuid.uuid4().hex
    tok_a, tok_b = uuid.uuid4().hex, uuid.uuid4().hex
    num = int(run, 16) % 10_000_000
    num_a, num_b = f"+1559{num:07d}", f"+1550{num:07d}"
    phone = f"+3463{num:07d}"
    for secret, token in ((f"{a}-twilio", tok_a), (f"{b}-twilio", tok_b)):
        d = secrets_dir() / secret
        d.mkdir(parents=True, exist_ok=True)
        (d / "authToken").write_text(token + "\n")
    manifest = tmp_path / "tenants.yaml"
    manifest.write_text(tenant_yaml(a, acc_a, f"{a}-twilio", num_a) + "---\n"
                        + tenant_yaml(b, acc_b, f"{b}-twilio", num_b))
    cli("admin", "tenant", "apply", "-f", str(manifest))
    pa, pb_ = f"/sms/twilio/{a}", f"/sms/twilio/{b}"
    assert wait_for(lambda: post_form(pa, {"To": num_a})[0] == 401 and post_form(pb_, {"To": num_b})[0] == 401,
                    60), f"media at {BASE} never saw the tenants"
    crm = c.g.CustomerServiceStub(grpc.insecure_channel(eps["crm"]))
    admin_a, admin_b = mint("--tenant", a, "--role", "tenant_admin"), mint("--tenant", b, "--role", "tenant_admin")

    a_text, b_text = f"sar-a-{run}", f"sar-b-{run}"
    # Each message posted again while media answers 503 (sessions has not read the new tenant
    # yet), as the provider retries; the same message id, so it is taken once.
    form_a = inbound(acc_a, sid(), phone, num_a, f"Soy Zoe, {a_text}")
    form_b = inbound(acc_b, sid(), phone, num_b, f"Soy Bea, {b_text}")
    assert wait_for(lambda: signed(tok_a, pa, form_a)[0] == 200, 30), signed(tok_a, pa, form_a)
    assert wait_for(lambda: signed(tok_b, pb_, form_b)[0] == 200, 30), signed(tok_b, pb_, form_b)
    assert wait_for(lambda: linked(crm, c, admin_a, phone) is not None, 60), "A's SMS contact never linked"
    assert wait_for(lambda: linked(crm, c, admin_b, phone) is not None, 60), "B's SMS contact never linked"
    customer_a, contacts_a = linked(crm, c, admin_a, phone)
    customer_b, _ = linked(crm, c, admin_b, phone)

    doc = export(crm, c, admin_a, customer_a)
    others = doc["other_stores"]
    assert doc["complete"] is True, others
    assert [others[s]["state"] for s in ("sessions", "media", "recording")] == ["included"] * 3, others
    # sessions: the SMS contact's record, with the customer's phone as its identity.
    records = {r["contact"]: r for r in others["sessions"]["contacts"]}
    assert set(contacts_a) <= set(records), (contacts_a, list(records))
    assert any(i["kind"] == "phone" and i["value"] == phone
               for r in records.values() for i in r["customer_identities"]), records
    # media: the conversation, with what the customer wrote.
    conversations = {x["contact"]: x for x in others["media"]["conversations"]}
    assert set(contacts_a) <= set(conversations), (contacts_a, list(conversations))
    texts = [m["text"] for x in conversations.values() for m in x["messages"]]
    assert any(a_text in t for t in texts), texts
    # recording: asked about each contact; an SMS has none.
    assert others["recording"]["recordings"] == []
    # Nothing of tenant B's customer with the same phone.
    assert b_text not in json.dumps(doc)

    doc_b = export(crm, c, admin_b, customer_b)
    assert doc_b["complete"] is True, doc_b["other_stores"]
    assert b_text in json.dumps(doc_b) and a_text not in json.dumps(doc_b)

    # B's admin cannot export A's customer; an agent cannot export at all.
    with pytest.raises(grpc.RpcError) as e:
        export(crm, c, admin_b, customer_a)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as e:
        export(crm, c, mint("--tenant", a, "--role", "agent", "--agent-id", f"ag-{run}"), customer_a)
    assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED
