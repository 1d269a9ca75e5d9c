"""SMS through Twilio end to end: media's webhook, an agent over gRPC, a fake provider.

The provider's side is played by independent peers: the webhook requests are signed with
PyPI `twilio`'s own `RequestValidator.compute_signature` (the library Twilio's customers
verify with), and outbound sends reach a small HTTP server in this test standing in for
Twilio's REST API (media's `CENTRALITA_TWILIO_BASE_URL` points at it, see services.sh),
which answers what each step needs (success with a message sid, or errors). The agent is a
grpcio client of sessions and of media's `ConversationService`.

Shown: a signed inbound SMS creates an SMS contact offered to the agent, with the message
in its conversation; a one-byte change of the body, a missing signature and another
tenant's signature are refused with 401 and store nothing; a redelivered `MessageSid`
stores nothing new and answers 200; a second message continues the open conversation; an
unknown number is 404; STOP is recorded; the agent's reply is sent to the provider (basic
auth with the account, To/From/Body) and its signed status callback moves it to delivered;
a provider outage makes a send retry and end `failed` with the reason; an MMS's photo is
downloaded from Twilio's host with the account's credentials and kept beside its text, and a
media URL redirecting to another host is not followed (a line says why); tenant B's agent
cannot read A's SMS conversation.
"""
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

import grpc
import pytest

from conftest import (
    FakeProvider, OfferedAgent, auth, cli, endpoints, free_port, front_door, mint, provider_secrets, wait_for,
    provider_port as conftest_provider_port,
)

twilio_validation = pytest.importorskip("twilio.request_validator")


def provider_port():
    """Where media sends (services.sh: CENTRALITA_TWILIO_BASE_URL)."""
    return conftest_provider_port("CENTRALITA_TWILIO_BASE_URL", 8490)


def secrets_dir():
    """Where media reads the tenants' Secrets (services.sh: CENTRALITA_SMS_SECRETS_DIR)."""
    return provider_secrets("CENTRALITA_SMS_SECRETS_DIR")


BASE = front_door()


class FakeTwilio(FakeProvider):
    """Twilio's `POST /2010-04-01/Accounts/{sid}/Messages.json`: 201 with a fresh sid, or an
    error for a planned status."""

    def __init__(self, port):
        self.sids = []

        def answer(status):
            if status != 201:
                return {"code": 20500, "message": "fake outage", "status": status}
            sid = "SM" + uuid.uuid4().hex
            self.sids.append(sid)
            return {"sid": sid, "status": "queued"}

        super().__init__(port, 201, lambda body: dict(urllib.parse.parse_qsl(body.decode())), answer)


def tenant_yaml(tenant, account, secret, number):
    return f"""
apiVersion: centralita.io/v1
kind: Tenant
metadata: {{ name: {tenant} }}
spec:
  displayName: SMS {tenant}
  channels: [sms]
  serviceLevel: {{ targetPercent: 80, thresholdSeconds: 20 }}
  quotas: {{ maxConcurrentContacts: 100, apiRequestsPerSecond: 1000 }}
  businessHours: {{ timeZone: UTC }}
  dataRetentionDays: 30
  recording: {{ voice: none }}
  routing:
    dispositionCodes: [resolved]
    queues:
      - {{ id: support, offerTimeoutSeconds: 60, afterContactWorkSeconds: 60 }}
  sms:
    accountSid: {account}
    authTokenSecret: {secret}
    numbers:
      - {{ number: "{number}", queue: support }}
"""


def post_form(path, params, signature=None, body=None):
    """(status, text) of a webhook POST; `body` overrides the encoded params."""
    data = body if body is not None else urllib.parse.urlencode(params).encode()
    headers = {"content-type": "application/x-www-form-urlencoded"}
    if signature is not None:
        headers["x-twilio-signature"] = signature
    req = urllib.request.Request(BASE + path, data=data, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def signed(token, path, params):
    """The webhook as Twilio would send it: signed by the `twilio` library."""
    sig = twilio_validation.RequestValidator(token).compute_signature(BASE + path, params)
    return post_form(path, params, sig)


def inbound(account, sid, frm, to, body):
    return {"MessageSid": sid, "SmsSid": sid, "AccountSid": account, "From": frm, "To": to, "Body": body,
            "NumMedia": "0"}


def sid():
    return "SM" + uuid.uuid4().hex


@pytest.fixture(scope="module")
def m(pb):
    from centralita.media.v1 import media_pb2, media_pb2_grpc
    from centralita.sessions.v1 import sessions_pb2, sessions_pb2_grpc

    class M:
        md = media_pb2
        mg = media_pb2_grpc
        s = sessions_pb2
        sg = sessions_pb2_grpc
        t = pb.tenancy

    return M


def test_sms_in_and_out_through_twilio(m, tmp_path):
    eps = endpoints()
    run = uuid.uuid4().hex[:8]
    a, b = f"sma-{run}", f"smb-{run}"
    acc_a, acc_b = "AC" + uuid.uuid4().hex, "AC" + uuid.uuid4().hex
    tok_a, tok_b = uuid.uuid4().hex, uuid.uuid4().hex
    num = int(run, 16) % 10_000_000
    num_a, num_b = f"+1555{num:07d}", f"+1556{num:07d}"
    customer = f"+3460{num:07d}"
    for secret, token in ((f"{a}-twilio", tok_a), (f"{b}-twilio", tok_b)):
        d = secrets_dir() / secret
        d.mkdir(parents=True, exist_ok=True)
        (d / "authToken").write_text(token + "\n")
    manifest = tmp_path / "tenants.yaml"
    manifest.write_text(tenant_yaml(a, acc_a, f"{a}-twilio", num_a) + "---\n"
                        + tenant_yaml(b, acc_b, f"{b}-twilio", num_b))
    cli("admin", "tenant", "apply", "-f", str(manifest))
    fake = FakeTwilio(provider_port())
    try:
        _scenario(m, eps, run, a, b, acc_a, tok_a, tok_b, num_a, num_b, customer, fake)
    finally:
        fake.close()


def _scenario(m, eps, run, a, b, acc_a, tok_a, tok_b, num_a, num_b, customer, fake):
    pa, pb_ = f"/sms/twilio/{a}", f"/sms/twilio/{b}"
    conversations = m.mg.ConversationServiceStub(grpc.insecure_channel(eps["media"]))
    contacts = m.sg.ContactServiceStub(grpc.insecure_channel(eps["sessions"]))
    sup_a = mint("--tenant", a, "--role", "supervisor")
    sup_b = mint("--tenant", b, "--role", "supervisor")

    # media knows both tenants once an unsigned webhook is refused as such (401), not 404.
    assert wait_for(lambda: post_form(pa, {"To": num_a})[0] == 401 and post_form(pb_, {"To": num_b})[0] == 401,
                    60), "media never saw the tenants"
    assert post_form(f"/sms/twilio/nobody-{run}", {"To": num_a})[0] == 404

    def sessions_knows():
        try:
            contacts.ListQueueStats(m.s.ListQueueStatsRequest(), metadata=auth(sup_a), timeout=5)
            return True
        except grpc.RpcError:
            return False

    assert wait_for(sessions_knows, 60), "sessions never saw the tenant"
    agent = OfferedAgent(m, a, f"sms-agent-{run}", m.t.CHANNEL_SMS)

    def listed(contact, token=None):
        return list(conversations.ListMessages(m.md.ListMessagesRequest(parent=contact),
                                               metadata=auth(token or sup_a), timeout=10).messages)

    # A signed inbound SMS: 200 with empty TwiML, an SMS contact offered to the agent.
    first = inbound(acc_a, sid(), customer, num_a, "Hola, mi pedido no llega")
    status, text = signed(tok_a, pa, first)
    assert status == 200 and "<Response></Response>" in text, (status, text)
    assert wait_for(lambda: agent.offers or agent.errors, 30), "no offer of the SMS"
    assert not agent.errors, agent.errors
    offer = agent.offers[0]
    assert offer.channel == m.t.CHANNEL_SMS
    contact = offer.name
    msgs = listed(contact)
    assert [(x.sender, x.text) for x in msgs][-1] == (m.md.SENDER_KIND_CUSTOMER, "Hola, mi pedido no llega")
    count = len(msgs)

    # Refused before anything is stored: a one-byte change, no signature, another tenant's
    # token, a signature made for another tenant's URL.
    sig = twilio_validation.RequestValidator(tok_a).compute_signature(
        BASE + pa, inbound(acc_a, sid(), customer, num_a, "tampered body"))
    tampered = inbound(acc_a, sid(), customer, num_a, "tampered bodY")
    assert post_form(pa, tampered, sig)[0] == 401, "a one-byte change must be refused"
    assert post_form(pa, inbound(acc_a, sid(), customer, num_a, "no signature"))[0] == 401
    assert signed(tok_b, pa, inbound(acc_a, sid(), customer, num_a, "B's token into A"))[0] == 401
    cross = inbound(acc_a, sid(), customer, num_a, "signed for B's URL")
    sig_b_url = twilio_validation.RequestValidator(tok_a).compute_signature(BASE + pb_, cross)
    assert post_form(pa, cross, sig_b_url)[0] == 401
    # B's own signature on B's URL cannot put a message on A's number.
    assert signed(tok_b, pb_, inbound("AC" + "0" * 32, sid(), customer, num_a, "into A"))[0] == 404
    # Malformed but signed: a clear 400.
    assert signed(tok_a, pa, {"MessageSid": "nope", "From": customer, "To": num_a, "Body": "x"})[0] == 400
    assert len(listed(contact)) == count, "a refused webhook stored something"

    # A redelivery of the same MessageSid stores nothing new and answers 200.
    status, _ = signed(tok_a, pa, first)
    assert status == 200
    assert len(listed(contact)) == count

    agent.contacts.AcceptContact(m.s.AcceptContactRequest(name=offer.name, offer_id=offer.offer_id),
                                 metadata=auth(agent.token), timeout=10)
    # A second message continues the open conversation (no new contact).
    assert signed(tok_a, pa, inbound(acc_a, sid(), customer, num_a, "¿Hay novedades?"))[0] == 200
    assert wait_for(lambda: len(listed(contact)) == count + 1, 10)
    assert listed(contact)[-1].text == "¿Hay novedades?"
    assert len(agent.offers) == 1

    # The agent replies: media sends it to the provider, as the tenant's account.
    reply = conversations.SendMessage(m.md.SendMessageRequest(parent=contact, text="Lo revisamos ahora",
                                                              request_id=f"r-{run}"),
                                      metadata=auth(agent.token), timeout=10)
    assert wait_for(lambda: fake.requests, 15), "the provider never received the reply"
    sent = fake.requests[0]
    assert sent["path"] == f"/2010-04-01/Accounts/{acc_a}/Messages.json"
    assert sent["body"]["To"] == customer and sent["body"]["From"] == num_a
    assert sent["body"]["Body"] == "Lo revisamos ahora"
    import base64
    assert sent["auth"] == "Basic " + base64.b64encode(f"{acc_a}:{tok_a}".encode()).decode()
    provider_sid = fake.sids[0]

    # Its status callback, signed like the inbound ones, moves it to delivered.
    def status_of(seq):
        return [x for x in listed(contact) if x.sequence == seq][0]

    callback = {"MessageSid": provider_sid, "MessageStatus": "delivered", "AccountSid": acc_a}
    assert wait_for(lambda: signed(tok_a, pa + "/status", callback)[0] == 204, 10)
    assert status_of(reply.sequence).status == m.md.DELIVERY_STATUS_DELIVERED
    # A late "sent" callback and another tenant's signature change nothing.
    assert signed(tok_a, pa + "/status", {**callback, "MessageStatus": "sent"})[0] == 204
    assert signed(tok_b, pa + "/status", {**callback, "MessageStatus": "failed"})[0] == 401
    assert signed(tok_b, pb_ + "/status", {**callback, "MessageStatus": "failed"})[0] == 404
    assert status_of(reply.sequence).status == m.md.DELIVERY_STATUS_DELIVERED

    # A provider outage: every attempt answered 503; the message ends failed with the reason.
    before = len(fake.requests)
    fake.plan = [503] * 10
    doomed = conversations.SendMessage(m.md.SendMessageRequest(parent=contact, text="¿Sigue ahí?",
                                                               request_id=f"d-{run}"),
                                       metadata=auth(agent.token), timeout=10)
    assert wait_for(lambda: status_of(doomed.sequence).status == m.md.DELIVERY_STATUS_FAILED, 30), \
        "the send never ended failed"
    failed = status_of(doomed.sequence)
    assert "503" in failed.failure_reason and "attempts" in failed.failure_reason, failed.failure_reason
    assert len(fake.requests) - before >= 2, "no retry before failing"
    fake.plan = []
    # A client error is not retried: the message fails at once.
    before = len(fake.requests)
    fake.plan = [400]
    refused = conversations.SendMessage(m.md.SendMessageRequest(parent=contact, text="x", request_id=f"e-{run}"),
                                        metadata=auth(agent.token), timeout=10)
    assert wait_for(lambda: status_of(refused.sequence).status == m.md.DELIVERY_STATUS_FAILED, 15)
    assert len(fake.requests) - before == 1 and "400" in status_of(refused.sequence).failure_reason
    fake.plan = []

    # STOP is recorded in the conversation and in CRM's consent ledger; START grants again.
    from centralita.crm.v1 import crm_pb2, crm_pb2_grpc
    crm = crm_pb2_grpc.CustomerServiceStub(grpc.insecure_channel(eps["crm"]))

    def permission():
        return crm.CheckContactPermission(crm_pb2.CheckContactPermissionRequest(
            identity=crm_pb2.Identity(kind=crm_pb2.IDENTITY_KIND_PHONE, value=customer),
            channel=m.t.CHANNEL_SMS, purpose="messaging"), metadata=auth(sup_a), timeout=10)

    assert signed(tok_a, pa, inbound(acc_a, sid(), customer, num_a, " stop "))[0] == 200
    assert wait_for(lambda: any(x.kind == m.md.MESSAGE_KIND_NOTICE and "opted out" in x.text
                                for x in listed(contact)), 10)
    p = permission()
    assert not p.allowed and p.consent.source == "sms-keyword" and not p.consent.granted, p
    assert signed(tok_a, pa, inbound(acc_a, sid(), customer, num_a, "START"))[0] == 200
    p = permission()
    assert p.allowed and p.consent.granted, p
    # Another tenant's ledger knows nothing of it.
    other = crm.CheckContactPermission(crm_pb2.CheckContactPermissionRequest(
        identity=crm_pb2.Identity(kind=crm_pb2.IDENTITY_KIND_PHONE, value=customer),
        channel=m.t.CHANNEL_SMS, purpose="messaging"), metadata=auth(sup_b), timeout=10)
    assert not other.allowed and not other.customer and not other.consent.source, other

    # An MMS: its photo is downloaded from Twilio's host with the account's credentials and
    # kept; a media URL redirecting to another host is never followed there.
    png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR" + run.encode()
    port = provider_port()
    fake.files[f"/media/{run}/1"] = (200, "image/png", png)
    outside = FakeProvider(free_port(), 200, lambda body: body, lambda status: {})
    fake.files[f"/media/{run}/2"] = (302, f"http://localhost:{outside.server.server_port}/x", b"")
    try:
        mms = inbound(acc_a, "MM" + uuid.uuid4().hex, customer, num_a, "Mire la foto")
        mms.update({"NumMedia": "2", "MediaUrl0": f"http://127.0.0.1:{port}/media/{run}/1", "MediaContentType0": "image/png",
                    "MediaUrl1": f"http://127.0.0.1:{port}/media/{run}/2", "MediaContentType1": "image/png"})
        assert signed(tok_a, pa, mms)[0] == 200
        got = [g for g in fake.gets if g["path"] == f"/media/{run}/1"]
        assert got and got[0]["auth"] == "Basic " + base64.b64encode(f"{acc_a}:{tok_a}".encode()).decode()
        last = listed(contact)[-3:]
        assert [(x.kind, x.text) for x in last[:2]] == [(m.md.MESSAGE_KIND_TEXT, "Mire la foto"),
                                                        (m.md.MESSAGE_KIND_ATTACHMENT, "mms-1.png")], last
        assert "not on the provider's hosts" in last[2].text, last[2]
        assert conversations.GetAttachment(m.md.GetAttachmentRequest(name=last[1].attachment.name),
                                           metadata=auth(sup_a), timeout=10).data == png
        assert outside.gets == [], "a redirect to another host was followed"
        held = len(listed(contact))
        assert signed(tok_a, pa, mms)[0] == 200
        assert len(listed(contact)) == held, "a redelivered MMS stored something"
    finally:
        outside.close()

    # Tenant B never reads or writes A's SMS conversation.
    agent_b = mint("--tenant", b, "--role", "agent", "--agent-id", f"sms-agent-b-{run}")
    for token in (sup_b, agent_b):
        with pytest.raises(grpc.RpcError) as e:
            listed(contact, token)
        assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED, e.value
        with pytest.raises(grpc.RpcError) as e:
            conversations.SendMessage(m.md.SendMessageRequest(parent=contact, text="hijack", request_id=f"h-{run}"),
                                      metadata=auth(token), timeout=10)
        assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED, e.value
    time.sleep(0.5)
    assert not any(r["body"].get("Body") == "hijack" for r in fake.requests)
