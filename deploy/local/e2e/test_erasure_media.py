"""Erasure reaches media's conversations, end to end (issue 23), against the running
services: an SMS from a customer's phone (signed by PyPI `twilio`, as in test_sms.py) makes
an SMS contact in sessions whose phone identity the CRM links to a customer; the tenant
admin erases that customer through the CRM; media deletes the conversation and reports
its store, and the erasure's audit record (`GetErasure`) shows `media` done.

Checked in PostgreSQL (as the services' role, reading each tenant through row-level
security, every table of schema `media`, the outbox's encoded events included): the
erased customer's text and phone number are gone from tenant A; A's other customer's
conversation, and tenant B's conversation with the **same phone number**, are untouched.

Web chat: a visitor writes and leaves (the contact abandoned in sessions); media records
the conversation's end from the contacts topic (`ended_at`, what retention counts from);
erasing the visitor's customer (its chat identity) deletes the conversation.
"""
import json
import os
import subprocess
import uuid

import grpc
import pytest

from conftest import LOGS, auth, cli, endpoints, mint, wait_for
from test_sms import BASE, inbound, post_form, secrets_dir, sid, signed, tenant_yaml
from test_webchat import http, last_sequence, open_socket, read_frames, start_chat
from test_webchat import tenant_yaml as webchat_yaml

MEDIA_TABLES = ("conversations", "messages", "sms_messages")


def psql(tenant, sql, **variables):
    """The last line psql prints for `sql` run as `tenant` (row-level security on); `:'name'`
    in `sql` is a variable."""
    url = os.environ.get("CENTRALITA_DATABASE_URL",
                         f"postgres://centralita:centralita@127.0.0.1:{os.environ.get('CENTRALITA_PG_PORT', '5440')}"
                         "/centralita")
    args = ["psql", url, "-X", "-At", "-v", "ON_ERROR_STOP=1", "-v", f"tenant={tenant}"]
    for k, v in variables.items():
        args += ["-v", f"{k}={v}"]
    script = f"SELECT set_config('centralita.tenant', :'tenant', false) \\g /dev/null\n{sql};\n"
    out = subprocess.run(args, input=script, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1]


def found(tenant, needle):
    """Rows of schema `media` holding `needle`, as `tenant` sees them."""
    counts = " + ".join(
        [f"(SELECT count(*) FROM media.{t} x WHERE position(:'needle' in x::text) > 0)" for t in MEDIA_TABLES]
        + ["(SELECT count(*) FROM media.outbox x WHERE position(convert_to(:'needle', 'UTF8') in x.envelope) > 0)"])
    return int(psql(tenant, f"SELECT {counts}", needle=needle))


@pytest.fixture(scope="module")
def m(pb):
    from centralita.crm.v1 import crm_pb2, crm_pb2_grpc
    from centralita.sessions.v1 import sessions_pb2, sessions_pb2_grpc

    class M:
        c = crm_pb2
        cg = crm_pb2_grpc
        s = sessions_pb2
        sg = sessions_pb2_grpc

    return M


def test_an_erased_customers_sms_conversation_goes_from_its_tenant_only(m, tmp_path):
    eps = endpoints()
    run = uuid.uuid4().hex[:8]
    a, b = f"era-{run}", f"erb-{run}"
    acc_a, acc_b = "AC" + uuid.uuid4().hex, "AC" + uuid.uuid4().hex
    tok_a, tok_b = uuid.uuid4().hex, uuid.uuid4().hex
    num = int(run, 16) % 10_000_000
    num_a, num_b = f"+1557{num:07d}", f"+1558{num:07d}"
    phone, other_phone = f"+3461{num:07d}", f"+3462{num:07d}"
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
    crm = m.cg.CustomerServiceStub(grpc.insecure_channel(eps["crm"]))
    c = m.c
    admin_a, admin_b = mint("--tenant", a, "--role", "tenant_admin"), mint("--tenant", b, "--role", "tenant_admin")

    erased_text, kept_text, b_text = f"erase-me-{run}", f"keep-me-{run}", f"keep-b-{run}"
    # Each message posted again while media answers 503 (sessions has not read the new tenant
    # yet), as the provider retries; the same message id, so it is taken once.
    for tok, path, form in ((tok_a, pa, inbound(acc_a, sid(), phone, num_a, f"Soy Zoe, {erased_text}")),
                            (tok_a, pa, inbound(acc_a, sid(), other_phone, num_a, f"Soy Ana, {kept_text}")),
                            (tok_b, pb_, inbound(acc_b, sid(), phone, num_b, f"Soy Bea, {b_text}"))):
        assert wait_for(lambda: signed(tok, path, form)[0] == 200, 30), signed(tok, path, form)
    assert found(a, erased_text) > 0 and found(a, phone) > 0
    assert found(a, kept_text) > 0 and found(b, b_text) > 0 and found(b, phone) > 0
    assert found(b, erased_text) == 0, "B sees nothing of A"

    # The CRM links the SMS contact to the customer its phone identity resolves to.
    identity = c.Identity(kind=c.IDENTITY_KIND_PHONE, value=phone)

    def linked():
        try:
            found_ = crm.FindCustomers(c.FindCustomersRequest(identity=identity), metadata=auth(admin_a), timeout=5)
            if not found_.customers:
                return None
            name = found_.customers[0].name
            timeline = crm.ListTimeline(c.ListTimelineRequest(customer=name), metadata=auth(admin_a), timeout=5)
            contacts = [e.interaction.contact for e in timeline.entries if e.HasField("interaction")]
            return (name, contacts) if contacts else None
        except grpc.RpcError:
            return None

    assert wait_for(lambda: linked() is not None, 60), "the CRM never linked the SMS contact to a customer"
    customer, contacts = linked()
    erasure = crm.EraseCustomer(c.EraseCustomerRequest(name=customer, reason="data subject request"),
                                metadata=auth(admin_a), timeout=10)
    assert set(contacts) <= set(erasure.contacts)
    assert "media" in [s.store for s in erasure.stores]

    def media_done():
        e = crm.GetErasure(c.GetErasureRequest(name=erasure.name), metadata=auth(admin_a), timeout=5)
        return next((s for s in e.stores if s.store == "media" and s.state == c.ErasureStore.STATE_DONE), None)

    assert wait_for(lambda: media_done() is not None, 60), "media never reported the erasure"
    # The conversation's head, its notice and the message, and the SMS id at least.
    assert media_done().records_erased >= 4
    assert found(a, erased_text) == 0, "the erased customer's text is still in schema media"
    assert found(a, phone) == 0, "the erased customer's phone number is still in tenant A's conversations"
    assert found(a, kept_text) > 0, "A's other customer's conversation went too"
    assert found(b, b_text) > 0 and found(b, phone) > 0, "B's conversation with the same number went too"
    # B's admin cannot read A's erasure.
    with pytest.raises(grpc.RpcError) as e:
        crm.GetErasure(c.GetErasureRequest(name=erasure.name), metadata=auth(admin_b), timeout=5)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND

    # Every store the erasure waits for reports it done: sessions' contact record of the SMS
    # contact no longer holds the phone number either.
    def stores():
        e = crm.GetErasure(c.GetErasureRequest(name=erasure.name), metadata=auth(admin_a), timeout=5)
        return {s.store: s.state for s in e.stores}

    assert wait_for(lambda: set(stores().values()) == {c.ErasureStore.STATE_DONE}, 60), stores()
    assert {"media", "recording", "reporting", "sessions"} <= set(stores()), stores()
    contacts_api = m.sg.ContactServiceStub(grpc.insecure_channel(endpoints()["sessions"]))
    for name in erasure.contacts:
        record = contacts_api.GetContact(m.s.GetContactRequest(name=name), metadata=auth(admin_a), timeout=5)
        assert not record.customer_identities and phone not in str(record), record

    # The services' logs never held the customers' numbers or words (checked in every log
    # file of the run: the suite's services and those the tests started).
    planted = (phone, other_phone, erased_text, kept_text, b_text)
    leaks = [(str(f), p) for f in LOGS.rglob("*.log") for p in planted
             if p in f.read_text(errors="replace")]
    assert list(LOGS.rglob("*.log")) and not leaks, leaks


def test_a_web_chat_that_ended_is_dated_and_its_erased_customer_goes(m, tmp_path):
    eps = endpoints()
    run = uuid.uuid4().hex[:8]
    a, b = f"ewa-{run}", f"ewb-{run}"
    origin, key_a, key_b = f"https://shop-{run}.example", f"widget-key-a-{run}", f"widget-key-b-{run}"
    manifest = tmp_path / "tenants.yaml"
    manifest.write_text(webchat_yaml(a, key_a, origin) + "---\n" + webchat_yaml(b, key_b, origin))
    cli("admin", "tenant", "apply", "-f", str(manifest))
    crm = m.cg.CustomerServiceStub(grpc.insecure_channel(eps["crm"]))
    c = m.c
    admin_a = mint("--tenant", a, "--role", "tenant_admin")

    def started(tenant, key):
        status, body = start_chat(tenant, key, origin)
        return body if status == 201 else None

    # Both tenants are one apply but two records of the tenants topic: media may have read A
    # and not yet B.
    assert wait_for(lambda: started(a, key_a) is not None, 60), "media never saw tenant A"
    assert wait_for(lambda: started(b, key_b) is not None, 60), "media never saw tenant B"
    chat, chat_b = started(a, key_a), started(b, key_b)
    assert chat_b is not None
    text, text_b = f"erase-chat-{run}", f"keep-chat-{run}"
    for tenant, ch, t in ((a, chat, text), (b, chat_b, text_b)):
        status, body = http("POST", f"/v1/tenants/{tenant}/webchat/messages", {"text": f"Soy yo: {t}"},
                            {"authorization": f"Bearer {ch['visitorToken']}", "origin": origin})
        assert status == 201, body
    assert found(a, text) > 0 and found(a, chat["visitorId"]) > 0 and found(b, text) == 0
    contact_id = chat["contact"].rsplit("/", 1)[1]

    def ended():
        return psql(a, "SELECT count(*) FROM media.conversations WHERE contact_id = :'c' AND ended_at IS NOT NULL",
                    c=contact_id)

    assert ended() == "0", "open"

    # The visitor leaves: sessions abandons the contact; media dates the conversation's end.
    with open_socket(a, chat["visitorToken"], origin, after=last_sequence(a, chat["visitorToken"], origin)) as ws:
        ws.send(json.dumps({"type": "leave"}))
        assert read_frames(ws, lambda f: any(x["type"] == "ended" for x in f), timeout=15)[-1] == {"type": "ended"}
    assert wait_for(lambda: ended() == "1", 30), "media never recorded the chat's end"

    # Erasing the visitor's customer (the CRM linked the contact by its chat identity).
    identity = c.Identity(kind=c.IDENTITY_KIND_CHAT, value=chat["visitorId"])

    def customer():
        try:
            r = crm.FindCustomers(c.FindCustomersRequest(identity=identity), metadata=auth(admin_a), timeout=5)
            return r.customers[0].name if r.customers else None
        except grpc.RpcError:
            return None

    assert wait_for(lambda: customer() is not None, 60), "the CRM never linked the chat to a customer"
    erasure = crm.EraseCustomer(c.EraseCustomerRequest(name=customer(), reason="data subject request"),
                                metadata=auth(admin_a), timeout=10)
    assert chat["contact"] in erasure.contacts

    def media_done():
        e = crm.GetErasure(c.GetErasureRequest(name=erasure.name), metadata=auth(admin_a), timeout=5)
        return any(s.store == "media" and s.state == c.ErasureStore.STATE_DONE for s in e.stores)

    assert wait_for(media_done, 60), "media never reported the erasure"
    assert found(a, text) == 0 and found(a, chat["visitorId"]) == 0
    assert found(b, text_b) > 0, "tenant B's chat went too"
