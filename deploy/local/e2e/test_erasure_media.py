"""Erasure reaches media's conversations, end to end (issue 23), against the running
services: an SMS from a customer's phone (signed by PyPI `twilio`, as in test_sms.py) makes
an SMS contact in sessions whose phone identity the CRM links to a customer; the tenant
admin erases that customer through the CRM; media deletes the conversation and reports
its store, and the erasure's audit record (`GetErasure`) shows `media` done.

Checked in PostgreSQL (as the services' role, reading each tenant through row-level
security, every table of schema `media`, the outbox's encoded events included): the
erased customer's text and phone number are gone from tenant A; A's other customer's
conversation, and tenant B's conversation with the **same phone number**, are untouched.
"""
import os
import subprocess
import uuid

import grpc
import pytest

from conftest import auth, cli, endpoints, mint, wait_for
from test_sms import BASE, inbound, post_form, secrets_dir, sid, signed, tenant_yaml

MEDIA_TABLES = ("conversations", "messages", "sms_messages")


def found(tenant, needle):
    """Rows of schema `media` holding `needle`, as `tenant` sees them."""
    url = os.environ.get("CENTRALITA_DATABASE_URL",
                         f"postgres://centralita:centralita@127.0.0.1:{os.environ.get('CENTRALITA_PG_PORT', '5440')}"
                         "/centralita")
    counts = " + ".join(
        [f"(SELECT count(*) FROM media.{t} x WHERE position(:'needle' in x::text) > 0)" for t in MEDIA_TABLES]
        + ["(SELECT count(*) FROM media.outbox x WHERE position(convert_to(:'needle', 'UTF8') in x.envelope) > 0)"])
    sql = f"SELECT set_config('centralita.tenant', :'tenant', false) \\g /dev/null\nSELECT {counts};\n"
    out = subprocess.run(["psql", url, "-X", "-At", "-v", "ON_ERROR_STOP=1", "-v", f"tenant={tenant}",
                          "-v", f"needle={needle}"], input=sql, capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return int(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def m(pb):
    from centralita.crm.v1 import crm_pb2, crm_pb2_grpc

    class M:
        c = crm_pb2
        cg = crm_pb2_grpc

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
    assert signed(tok_a, pa, inbound(acc_a, sid(), phone, num_a, f"Soy Zoe, {erased_text}"))[0] == 200
    assert signed(tok_a, pa, inbound(acc_a, sid(), other_phone, num_a, f"Soy Ana, {kept_text}"))[0] == 200
    assert signed(tok_b, pb_, inbound(acc_b, sid(), phone, num_b, f"Soy Bea, {b_text}"))[0] == 200
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
