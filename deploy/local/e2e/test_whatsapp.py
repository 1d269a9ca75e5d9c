"""WhatsApp through Meta's Cloud API end to end: media's webhook, an agent over gRPC, a fake
Cloud API.

The provider's side is played by peers independent of media: webhook deliveries are signed
here with Python's `hmac` (HMAC-SHA256 of the raw body under the app secret, `sha256=` and
hex: Meta's X-Hub-Signature-256; the scheme's published example is checked first), and the
agent's replies reach a small HTTP server in this test standing in for the Cloud API
(media's `CENTRALITA_WHATSAPP_BASE_URL` points at it, see services.sh), which answers what
each step needs (a `wamid` message id, or errors). The agent is a grpcio client of sessions
and of media's `ConversationService`.

Shown: the subscription handshake echoes the challenge for the tenant's verify token only; a
signed delivery creates a `social` contact offered to the agent with the message in its
conversation (the customer resolved by phone number: the CRM customer their calls and SMS
reach, the WhatsApp contact on their CRM timeline); a one-byte change, a missing signature
and another tenant's app secret are refused with 401 and store nothing; a redelivered message id stores nothing new; a message
for a number that is not the tenant's is 404; the agent's reply goes to the Cloud API (bearer
token, `to` and text) and the delivery's status reports (read, then a late `delivered`) end
at `read`; a provider outage makes a send retry and end `failed`; more than a day after the
customer's last message the agent's text is refused (the 24-hour window) while an approved
template goes out in the Cloud API's shape (a malformed one refused); the customer's "Baja"
is recorded in CRM's consent ledger (CheckContactPermission says withdrawn, from the keyword)
with a notice, and stops every text and template until "ALTA"; tenant B's agent cannot read
A's conversation, and B's app secret does not sign for A.
"""
import hashlib
import hmac
import json
import time
import urllib.error
import urllib.request
import uuid

import grpc
import pytest

from conftest import (
    FakeProvider, OfferedAgent, auth, cli, endpoints, front_door, mint, provider_secrets,
    sessions_knows_tenant, wait_for, provider_port as conftest_provider_port,
)


def provider_port():
    """Where media sends (services.sh: CENTRALITA_WHATSAPP_BASE_URL)."""
    return conftest_provider_port("CENTRALITA_WHATSAPP_BASE_URL", 8491)


def secrets_dir():
    """Where media reads the tenants' Secrets (services.sh: CENTRALITA_WHATSAPP_SECRETS_DIR)."""
    return provider_secrets("CENTRALITA_WHATSAPP_SECRETS_DIR")


BASE = front_door()


def sign(secret, body):
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class FakeCloudApi(FakeProvider):
    """`POST /{version}/{phone_number_id}/messages`: 200 with a fresh `wamid`, or an error for
    a planned status."""

    def __init__(self, port):
        self.ids = []

        def answer(status):
            if status != 200:
                return {"error": {"message": "fake outage", "code": 2, "type": "OAuthException"}}
            wamid = "wamid." + uuid.uuid4().hex
            self.ids.append(wamid)
            return {"messaging_product": "whatsapp", "contacts": [{"input": "x", "wa_id": "x"}],
                    "messages": [{"id": wamid}]}

        super().__init__(port, 200, lambda body: json.loads(body or b"null"), answer)


def tenant_yaml(tenant, secret, number_id, number):
    return f"""
apiVersion: centralita.io/v1
kind: Tenant
metadata: {{ name: {tenant} }}
spec:
  displayName: WhatsApp {tenant}
  channels: [social]
  serviceLevel: {{ targetPercent: 80, thresholdSeconds: 20 }}
  quotas: {{ maxConcurrentContacts: 100, apiRequestsPerSecond: 1000 }}
  businessHours: {{ timeZone: UTC }}
  dataRetentionDays: 30
  recording: {{ voice: none }}
  routing:
    dispositionCodes: [resolved]
    queues:
      - {{ id: support, offerTimeoutSeconds: 60, afterContactWorkSeconds: 60 }}
  whatsapp:
    secretName: {secret}
    numbers:
      - {{ phoneNumberId: "{number_id}", number: "{number}", queue: support }}
"""


def delivery(number_id, messages=(), statuses=()):
    return json.dumps({"object": "whatsapp_business_account", "entry": [{"id": "waba-1", "changes": [{
        "field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "34910000000", "phone_number_id": number_id},
            "contacts": [{"profile": {"name": m["from"]}, "wa_id": m["from"]} for m in messages],
            "messages": list(messages), "statuses": list(statuses)}}]}]}).encode()


def text(sender_digits, wamid, body, at=None):
    return {"from": sender_digits, "id": wamid, "timestamp": str(int(at or time.time())), "type": "text",
            "text": {"body": body}}


def post(tenant, body, signature=None):
    headers = {"content-type": "application/json"}
    if signature is not None:
        headers["x-hub-signature-256"] = signature
    req = urllib.request.Request(f"{BASE}/whatsapp/{tenant}", data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def get(path):
    try:
        with urllib.request.urlopen(BASE + path, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_the_published_example_of_the_signature_scheme():
    # The X-Hub-Signature-256 example of GitHub's webhook documentation, the scheme Meta uses.
    assert sign("It's a Secret to Everybody", b"Hello, World!") == \
        "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"


def test_a_whatsapp_customer_reaches_an_agent_and_gets_the_reply(pb, tmp_path):
    from centralita.crm.v1 import crm_pb2, crm_pb2_grpc
    from centralita.media.v1 import media_pb2, media_pb2_grpc
    from centralita.sessions.v1 import sessions_pb2, sessions_pb2_grpc

    class M:
        md, mg, s, sg, t = media_pb2, media_pb2_grpc, sessions_pb2, sessions_pb2_grpc, pb.tenancy

    eps = endpoints()
    run = uuid.uuid4().hex[:8]
    a, b = f"wa-{run}", f"wb-{run}"
    id_a, id_b = f"1065{int(run, 16) % 10**9:09d}", f"2065{int(run, 16) % 10**9:09d}"
    number_a, number_b = f"+3491{int(run, 16) % 10**7:07d}", f"+3492{int(run, 16) % 10**7:07d}"
    secrets = {t: {"appSecret": f"app-{t}-{uuid.uuid4().hex}", "accessToken": f"EAA{uuid.uuid4().hex}",
                   "verifyToken": f"vt-{uuid.uuid4().hex[:12]}"} for t in (a, b)}
    for t, keys in secrets.items():
        d = secrets_dir() / f"{t}-whatsapp"
        d.mkdir(parents=True, exist_ok=True)
        for k, v in keys.items():
            (d / k).write_text(v + "\n")
    (tmp_path / "t.yaml").write_text(tenant_yaml(a, f"{a}-whatsapp", id_a, number_a) + "---\n" +
                                     tenant_yaml(b, f"{b}-whatsapp", id_b, number_b))
    cli("admin", "tenant", "apply", "-f", str(tmp_path / "t.yaml"))
    api = FakeCloudApi(provider_port())
    customer = f"3466{int(run, 16) % 10**7:07d}"
    conversations = M.mg.ConversationServiceStub(grpc.insecure_channel(eps["media"]))
    crm = crm_pb2_grpc.CustomerServiceStub(grpc.insecure_channel(eps["crm"]))
    try:
        app_a = secrets[a]["appSecret"]
        # The handshake: the challenge back for A's verify token only.
        q = f"hub.mode=subscribe&hub.challenge=1158201444&hub.verify_token={secrets[a]['verifyToken']}"
        assert wait_for(lambda: get(f"/whatsapp/{a}?{q}") == (200, "1158201444"), 60), get(f"/whatsapp/{a}?{q}")
        q_b = f"hub.mode=subscribe&hub.challenge=1158201444&hub.verify_token={secrets[b]['verifyToken']}"
        assert get(f"/whatsapp/{a}?{q_b}")[0] == 403
        assert get(f"/whatsapp/nobody-{run}?{q}")[0] == 404

        # Refused and storing nothing: a one-byte change, no signature, B's app secret.
        first = delivery(id_a, [text(customer, f"wamid.{run}1", "Hola, ¿tienen la talla M?")])
        assert post(a, first.replace(b"talla M", b"talla L"), sign(app_a, first))[0] == 401
        assert post(a, first)[0] == 401
        assert post(a, first, sign(secrets[b]["appSecret"], first))[0] == 401
        # Malformed and unknown-number deliveries.
        bad = b'{"object": "whatsapp_business_account", "entry": [{"changes": [{"field": "messages"}]}]}'
        assert post(a, bad, sign(app_a, bad))[0] == 400
        elsewhere = delivery("999999", [text(customer, f"wamid.{run}x", "hola")])
        assert post(a, elsewhere, sign(app_a, elsewhere))[0] == 404

        # Sessions reads the tenants topic on its own: it knows the tenant before the agent.
        sessions = M.sg.ContactServiceStub(grpc.insecure_channel(eps["sessions"]))
        assert sessions_knows_tenant(sessions, M.s, mint("--tenant", a, "--role", "supervisor"))
        agent = OfferedAgent(M, a, f"wa-agent-{run}", M.t.CHANNEL_SOCIAL)
        status, _ = post(a, first, sign(app_a, first))
        assert status == 200
        assert wait_for(lambda: agent.offers or agent.errors, 30) and not agent.errors, agent.errors
        offer = agent.offers[0]
        assert offer.channel == M.t.CHANNEL_SOCIAL
        contact = offer.name
        # Redelivered: nothing new.
        assert post(a, first, sign(app_a, first))[0] == 200
        listed = conversations.ListMessages(M.md.ListMessagesRequest(parent=contact), metadata=auth(agent.token),
                                            timeout=10).messages
        texts = [m.text for m in listed if m.sender == M.md.SENDER_KIND_CUSTOMER]
        assert texts == ["Hola, ¿tienen la talla M?"], texts
        # The customer is the CRM's customer of that phone number.
        admin_a = mint("--tenant", a, "--role", "tenant_admin")
        def found():
            return crm.FindCustomers(crm_pb2.FindCustomersRequest(identity=crm_pb2.Identity(
                kind=crm_pb2.IDENTITY_KIND_PHONE, value=f"+{customer}")), metadata=auth(admin_a),
                timeout=10).customers

        assert wait_for(lambda: len(found()) == 1, 20), found()

        def timeline():
            entries = crm.ListTimeline(crm_pb2.ListTimelineRequest(customer=found()[0].name), metadata=auth(admin_a),
                                       timeout=10).entries
            return [(e.interaction.contact, e.interaction.channel) for e in entries if e.WhichOneof("entry") == "interaction"]

        assert wait_for(lambda: (contact, M.t.CHANNEL_SOCIAL) in timeline(), 20), timeline()

        agent.contacts.AcceptContact(M.s.AcceptContactRequest(name=offer.name, offer_id=offer.offer_id),
                                     metadata=auth(agent.token), timeout=10)
        sent = conversations.SendMessage(M.md.SendMessageRequest(parent=contact, text="Sí, la tenemos"),
                                         metadata=auth(agent.token), timeout=10)
        assert wait_for(lambda: api.ids, 10), api.requests
        req = api.requests[-1]
        assert req["path"] == f"/v21.0/{id_a}/messages" and req["auth"] == f"Bearer {secrets[a]['accessToken']}"
        assert (req["body"]["to"], req["body"]["type"], req["body"]["text"]["body"]) == \
            (customer, "text", "Sí, la tenemos")
        # Status reports, reordered: read, then a late delivered; the message ends read.
        wamid = api.ids[-1]
        now = int(time.time())
        for status_ in ("read", "delivered"):
            report = delivery(id_a, statuses=[{"id": wamid, "status": status_, "timestamp": str(now),
                                               "recipient_id": customer}])
            assert post(a, report, sign(app_a, report))[0] == 200

        def status_of(seq):
            return {m.sequence: m.status for m in conversations.ListMessages(
                M.md.ListMessagesRequest(parent=contact), metadata=auth(agent.token), timeout=10).messages}[seq]

        assert wait_for(lambda: status_of(sent.sequence) == M.md.DELIVERY_STATUS_READ, 10)

        # A provider outage: retried, then failed with the reason.
        api.plan = [503, 503, 503, 503]
        down = conversations.SendMessage(M.md.SendMessageRequest(parent=contact, text="¿Algo más?"),
                                         metadata=auth(agent.token), timeout=10)
        assert wait_for(lambda: status_of(down.sequence) == M.md.DELIVERY_STATUS_FAILED, 30)
        assert len([r for r in api.requests if r["body"]["text"]["body"] == "¿Algo más?"]) == 4

        # Tenant B's agent reads nothing of A's conversation.
        b_agent = mint("--tenant", b, "--role", "agent", "--agent-id", f"wb-agent-{run}")
        try:
            conversations.ListMessages(M.md.ListMessagesRequest(parent=contact), metadata=auth(b_agent), timeout=10)
            raise AssertionError("tenant B read A's WhatsApp conversation")
        except grpc.RpcError as e:
            assert e.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.PERMISSION_DENIED), e

        # The 24-hour window: a customer whose last message is two days old gets no free text.
        late = f"3467{int(run, 16) % 10**7:07d}"
        old = delivery(id_a, [text(late, f"wamid.{run}old", "¿Siguen abiertos?", at=time.time() - 2 * 86400)])
        assert post(a, old, sign(app_a, old))[0] == 200
        assert wait_for(lambda: len(agent.offers) >= 2, 30), agent.offers
        second = agent.offers[-1]
        agent.contacts.AcceptContact(M.s.AcceptContactRequest(name=second.name, offer_id=second.offer_id),
                                     metadata=auth(agent.token), timeout=10)
        before = len(api.requests)
        try:
            conversations.SendMessage(M.md.SendMessageRequest(parent=second.name, text="Sí"),
                                      metadata=auth(agent.token), timeout=10)
            raise AssertionError("a free text outside the 24-hour window was taken")
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.FAILED_PRECONDITION and "24-hour" in e.details(), e
        assert len(api.requests) == before, "nothing went to the provider"
        # An approved template goes out even then, named in the conversation.
        tpl = M.md.WhatsAppTemplate(name="order_update", language="es", parameters=["Ana", "4711"])
        kept = conversations.SendMessage(M.md.SendMessageRequest(parent=second.name, template=tpl),
                                         metadata=auth(agent.token), timeout=10)
        assert kept.text == "[WhatsApp template order_update (es)] Ana · 4711", kept.text
        assert wait_for(lambda: len(api.requests) > before, 10)
        body = api.requests[-1]["body"]
        assert (body["to"], body["type"], body["template"]["name"], body["template"]["language"]) == \
            (late, "template", "order_update", {"code": "es"})
        assert body["template"]["components"] == [{"type": "body", "parameters": [
            {"type": "text", "text": "Ana"}, {"type": "text", "text": "4711"}]}]
        for bad in (M.md.WhatsAppTemplate(name="Order Update", language="es"),
                    M.md.WhatsAppTemplate(name="x", language="es", parameters=["a\nb"])):
            with pytest.raises(grpc.RpcError) as refused:
                conversations.SendMessage(M.md.SendMessageRequest(parent=second.name, template=bad),
                                          metadata=auth(agent.token), timeout=10)
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT

        # Opting out: "BAJA" is recorded in CRM's consent ledger and stops every send; "ALTA"
        # lifts it.
        def permission():
            return crm.CheckContactPermission(crm_pb2.CheckContactPermissionRequest(
                identity=crm_pb2.Identity(kind=crm_pb2.IDENTITY_KIND_PHONE, value=f"+{customer}"),
                channel=M.t.CHANNEL_SOCIAL, purpose="messaging"), metadata=auth(admin_a), timeout=10)

        stop = delivery(id_a, [text(customer, f"wamid.{run}stop", "Baja")])
        assert post(a, stop, sign(app_a, stop))[0] == 200
        perm = permission()
        assert not perm.allowed and perm.consent.source == "whatsapp-keyword", perm
        notices = [m.text for m in conversations.ListMessages(M.md.ListMessagesRequest(parent=contact),
                                                             metadata=auth(agent.token), timeout=10).messages
                   if m.kind == M.md.MESSAGE_KIND_NOTICE]
        assert "The customer opted out of WhatsApp messages (keyword; recorded in CRM)" in notices, notices
        before = len(api.requests)
        for req_ in (M.md.SendMessageRequest(parent=contact, text="¿Seguro?"),
                     M.md.SendMessageRequest(parent=contact, template=tpl)):
            with pytest.raises(grpc.RpcError) as refused:
                conversations.SendMessage(req_, metadata=auth(agent.token), timeout=10)
            assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "may not be messaged" in \
                refused.value.details(), refused.value
        assert len(api.requests) == before, "nothing went to the provider"
        back = delivery(id_a, [text(customer, f"wamid.{run}start", "ALTA")])
        assert post(a, back, sign(app_a, back))[0] == 200
        assert permission().allowed
        conversations.SendMessage(M.md.SendMessageRequest(parent=contact, text="Bienvenida de nuevo"),
                                  metadata=auth(agent.token), timeout=10)
        assert wait_for(lambda: len(api.requests) > before, 10)
        agent.stream.cancel()
    finally:
        api.close()
