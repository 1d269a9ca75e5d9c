"""Messenger and Instagram through Meta's Messenger Platform end to end: media's webhooks, an
agent over gRPC, a fake Graph API (Send API and customers' files).

The provider's side is played by peers independent of media: deliveries are signed here with
Python's `hmac` (Meta's X-Hub-Signature-256, the scheme whose published example
test_whatsapp.py checks), shaped as Meta's webhook reference shows (`object` `page` or
`instagram`, `entry[].messaging[]` with `message`, `delivery` and `read` events and echoes of
our own messages); the agent's replies and the customers' files are served by a small HTTP
server of this test (media's `CENTRALITA_MESSENGER_BASE_URL` points at it, services.sh).

Shown, for each network: the subscription handshake for the tenant's verify token only; a
signed message creates a `social` contact offered to the agent (the customer a CRM social
identity of that network), a redelivery and an echo of our own message store nothing; a
one-byte change, no signature and tenant B's app secret are 401, malformed 400, another
tenant's Page 404, all storing nothing; a customer's image is downloaded from the provider's
host and kept, a file URL on another host is never fetched; the agent's reply reaches the
Send API (Page access token, recipient, `RESPONSE`); the delivery receipt and the read
receipt (Messenger: a watermark time; Instagram: the message id) end the reply `read`; an
outage ends a reply `failed` after its retries; tenant B's agent cannot read A's
conversation; two days after the customer's last message a reply goes tagged `HUMAN_AGENT`,
after 7 days none goes.
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
    FakeProvider, OfferedAgent, auth, cli, endpoints, free_port, front_door, mint, provider_port, provider_secrets,
    sessions_knows_tenant, wait_for,
)

BASE = front_door()
PNG = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR" + uuid.uuid4().bytes


def sign(secret, body):
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class FakeGraph(FakeProvider):
    """`POST /{version}/{page}/messages`: 200 with a fresh message id, or an error for a
    planned status; GETs of customers' files from `files`."""

    def __init__(self, port):
        self.ids = []

        def answer(status):
            if status != 200:
                return {"error": {"message": "fake outage", "code": 2}}
            mid = "m_" + uuid.uuid4().hex
            self.ids.append(mid)
            return {"recipient_id": "x", "message_id": mid}

        super().__init__(port, 200, lambda body: json.loads(body or b"null"), answer)


def tenant_yaml(tenant, network, secret, page):
    return f"""
apiVersion: centralita.io/v1
kind: Tenant
metadata: {{ name: {tenant} }}
spec:
  displayName: {network} {tenant}
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
  {network}:
    secretName: {secret}
    pages:
      - {{ id: "{page}", queue: support }}
"""


def delivery(network, page, events):
    return json.dumps({"object": "page" if network == "messenger" else "instagram",
                       "entry": [{"id": page, "time": int(time.time() * 1000), "messaging": list(events)}]}).encode()


def message(customer, page, mid, text=None, attachments=None, at=None):
    m = {"mid": mid}
    if text is not None:
        m["text"] = text
    if attachments:
        m["attachments"] = attachments
    return {"sender": {"id": customer}, "recipient": {"id": page}, "timestamp": int((at or time.time()) * 1000),
            "message": m}


def post(network, tenant, body, signature=None):
    headers = {"content-type": "application/json"}
    if signature is not None:
        headers["x-hub-signature-256"] = signature
    req = urllib.request.Request(f"{BASE}/{network}/{tenant}", data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def get(path):
    try:
        with urllib.request.urlopen(BASE + path, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


@pytest.mark.parametrize("network", ["messenger", "instagram"])
def test_a_customer_writes_on_meta_and_gets_the_reply(pb, tmp_path, network):
    from centralita.crm.v1 import crm_pb2, crm_pb2_grpc
    from centralita.media.v1 import media_pb2, media_pb2_grpc
    from centralita.sessions.v1 import sessions_pb2, sessions_pb2_grpc

    class M:
        md, mg, s, sg, t = media_pb2, media_pb2_grpc, sessions_pb2, sessions_pb2_grpc, pb.tenancy

    eps = endpoints()
    run = uuid.uuid4().hex[:8]
    a, b = f"{network[:2]}a-{run}", f"{network[:2]}b-{run}"
    page_a, page_b = f"10{int(run, 16) % 10**9:09d}", f"20{int(run, 16) % 10**9:09d}"
    secrets = {t: {"appSecret": f"app-{uuid.uuid4().hex}", "pageAccessToken": f"EAAP{uuid.uuid4().hex}",
                   "verifyToken": f"vt-{uuid.uuid4().hex[:12]}"} for t in (a, b)}
    for t, keys in secrets.items():
        d = provider_secrets("CENTRALITA_MESSENGER_SECRETS_DIR") / f"{t}-meta"
        d.mkdir(parents=True, exist_ok=True)
        for k, v in keys.items():
            (d / k).write_text(v + "\n")
    (tmp_path / "t.yaml").write_text(tenant_yaml(a, network, f"{a}-meta", page_a) + "---\n" +
                                     tenant_yaml(b, network, f"{b}-meta", page_b))
    cli("admin", "tenant", "apply", "-f", str(tmp_path / "t.yaml"))
    port = provider_port("CENTRALITA_MESSENGER_BASE_URL", 8493)
    api = FakeGraph(port)
    elsewhere = FakeProvider(free_port(), 200, lambda body: body, lambda status: {})
    conversations = M.mg.ConversationServiceStub(grpc.insecure_channel(eps["media"]))
    crm = crm_pb2_grpc.CustomerServiceStub(grpc.insecure_channel(eps["crm"]))
    customer = f"{int(run, 16) % 10**12:012d}"
    app_a = secrets[a]["appSecret"]

    def send(body, secret=app_a, tenant=a):
        return post(network, tenant, body, sign(secret, body))

    try:
        q = f"hub.mode=subscribe&hub.challenge=4242&hub.verify_token={secrets[a]['verifyToken']}"
        assert wait_for(lambda: get(f"/{network}/{a}?{q}") == (200, "4242"), 60), get(f"/{network}/{a}?{q}")
        q_b = f"hub.mode=subscribe&hub.challenge=4242&hub.verify_token={secrets[b]['verifyToken']}"
        assert get(f"/{network}/{a}?{q_b}")[0] == 403
        assert get(f"/{network}/nobody-{run}?{q}")[0] == 404

        first = delivery(network, page_a, [message(customer, page_a, f"m_{run}1", "Hola, ¿tienen cita el lunes?")])
        # Refused, storing nothing.
        assert post(network, a, first.replace(b"lunes", b"martes"), sign(app_a, first)) == 401
        assert post(network, a, first) == 401
        assert send(first, secrets[b]["appSecret"]) == 401
        bad = json.dumps({"object": "page" if network == "messenger" else "instagram",
                          "entry": [{"id": page_a, "messaging": [{"sender": {"id": customer}}]}]}).encode()
        assert send(bad) == 400
        assert send(delivery(network, page_b, [message(customer, page_b, f"m_{run}x", "hola")])) == 404

        contacts = M.sg.ContactServiceStub(grpc.insecure_channel(eps["sessions"]))
        assert sessions_knows_tenant(contacts, M.s, mint("--tenant", a, "--role", "supervisor"))
        agent = OfferedAgent(M, a, f"{network[:2]}-agent-{run}", M.t.CHANNEL_SOCIAL)
        assert send(first) == 200
        assert wait_for(lambda: agent.offers or agent.errors, 30) and not agent.errors, agent.errors
        offer = agent.offers[0]
        contact = offer.name
        assert offer.channel == M.t.CHANNEL_SOCIAL
        # A redelivery and an echo of our own message store nothing.
        echo = {"sender": {"id": page_a}, "recipient": {"id": customer}, "timestamp": int(time.time() * 1000),
                "message": {"mid": f"m_{run}echo", "text": "eco", "is_echo": True}}
        assert send(first) == 200 and send(delivery(network, page_a, [echo])) == 200

        def listed():
            return conversations.ListMessages(M.md.ListMessagesRequest(parent=contact), metadata=auth(agent.token),
                                              timeout=10).messages

        def customer_messages():
            return [x for x in listed() if x.sender == M.md.SENDER_KIND_CUSTOMER]

        assert [x.text for x in customer_messages()] == ["Hola, ¿tienen cita el lunes?"]
        assert "eco" not in [x.text for x in listed()]
        # The customer is CRM's customer of that network's identity.
        admin_a = mint("--tenant", a, "--role", "tenant_admin")

        def found():
            return crm.FindCustomers(crm_pb2.FindCustomersRequest(identity=crm_pb2.Identity(
                kind=crm_pb2.IDENTITY_KIND_SOCIAL, value=customer, network=network)), metadata=auth(admin_a),
                timeout=10).customers

        assert wait_for(lambda: len(found()) == 1, 20), found()

        # A photo: downloaded from the provider's host and kept; a URL elsewhere is never fetched.
        api.files[f"/cdn/{run}.png"] = (200, "image/png", PNG)
        photo = delivery(network, page_a, [message(customer, page_a, f"m_{run}2", attachments=[
            {"type": "image", "payload": {"url": f"http://127.0.0.1:{port}/cdn/{run}.png"}}])])
        assert send(photo) == 200
        hostile = delivery(network, page_a, [message(customer, page_a, f"m_{run}3", attachments=[
            {"type": "image", "payload": {"url": f"http://localhost:{elsewhere.server.server_port}/internal"}}])])
        assert send(hostile) == 200
        assert wait_for(lambda: len(customer_messages()) == 3, 10), customer_messages()
        kinds = [(x.kind, x.text) for x in customer_messages()[1:]]
        assert kinds[0] == (M.md.MESSAGE_KIND_ATTACHMENT, f"{network}-image.png"), kinds
        assert kinds[1][0] == M.md.MESSAGE_KIND_TEXT and "not on the provider's hosts" in kinds[1][1], kinds
        got = conversations.GetAttachment(M.md.GetAttachmentRequest(name=customer_messages()[1].attachment.name),
                                          metadata=auth(agent.token), timeout=10)
        assert got.data == PNG and elsewhere.gets == []

        # The agent's reply reaches the Send API; receipts end it read.
        agent.contacts.AcceptContact(M.s.AcceptContactRequest(name=offer.name, offer_id=offer.offer_id),
                                     metadata=auth(agent.token), timeout=10)
        sent = conversations.SendMessage(M.md.SendMessageRequest(parent=contact, text="Sí, a las 10"),
                                         metadata=auth(agent.token), timeout=10)
        assert wait_for(lambda: api.ids, 10), api.requests
        req = api.requests[-1]
        assert req["path"] == f"/v21.0/{page_a}/messages" and req["auth"] == f"Bearer {secrets[a]['pageAccessToken']}"
        assert req["body"] == {"recipient": {"id": customer}, "messaging_type": "RESPONSE",
                               "message": {"text": "Sí, a las 10"}}
        mid = api.ids[-1]

        def status_of(seq):
            return {x.sequence: x.status for x in listed()}[seq]

        delivered = {"sender": {"id": customer}, "recipient": {"id": page_a},
                     "delivery": {"mids": [mid], "watermark": int(time.time() * 1000)}}
        assert send(delivery(network, page_a, [delivered])) == 200
        assert wait_for(lambda: status_of(sent.sequence) == M.md.DELIVERY_STATUS_DELIVERED, 10)
        read = {"watermark": int(time.time() * 1000) + 1000} if network == "messenger" else {"mid": mid}
        assert send(delivery(network, page_a, [{"sender": {"id": customer}, "recipient": {"id": page_a},
                                                "timestamp": int(time.time() * 1000), "read": read}])) == 200
        assert wait_for(lambda: status_of(sent.sequence) == M.md.DELIVERY_STATUS_READ, 10)

        # An outage: retried, then failed with the reason.
        api.plan = [503, 503, 503, 503]
        down = conversations.SendMessage(M.md.SendMessageRequest(parent=contact, text="¿Algo más?"),
                                         metadata=auth(agent.token), timeout=10)
        assert wait_for(lambda: status_of(down.sequence) == M.md.DELIVERY_STATUS_FAILED, 30)
        assert len([r for r in api.requests if r["body"]["message"]["text"] == "¿Algo más?"]) == 4

        # Tenant B's agent reads nothing of A's conversation.
        b_agent = mint("--tenant", b, "--role", "agent", "--agent-id", f"b-agent-{run}")
        with pytest.raises(grpc.RpcError) as denied:
            conversations.ListMessages(M.md.ListMessagesRequest(parent=contact), metadata=auth(b_agent), timeout=10)
        assert denied.value.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.PERMISSION_DENIED)

        # The windows: two days after the customer's last message a reply goes tagged
        # HUMAN_AGENT; after 7 days none goes.
        late = f"9{int(run, 16) % 10**11:011d}"
        old = delivery(network, page_a, [message(late, page_a, f"m_{run}old", "¿Siguen?", at=time.time() - 2 * 86400)])
        assert send(old) == 200
        assert wait_for(lambda: len(agent.offers) >= 2, 30), agent.offers
        second = agent.offers[-1]
        agent.contacts.AcceptContact(M.s.AcceptContactRequest(name=second.name, offer_id=second.offer_id),
                                     metadata=auth(agent.token), timeout=10)
        conversations.SendMessage(M.md.SendMessageRequest(parent=second.name, text="Sí, seguimos"),
                                  metadata=auth(agent.token), timeout=10)
        assert wait_for(lambda: any(r["body"]["message"]["text"] == "Sí, seguimos" for r in api.requests), 10)
        tagged = [r["body"] for r in api.requests if r["body"]["message"]["text"] == "Sí, seguimos"][0]
        assert (tagged["messaging_type"], tagged["tag"], tagged["recipient"]["id"]) == \
            ("MESSAGE_TAG", "HUMAN_AGENT", late), tagged
        assert req["body"]["messaging_type"] == "RESPONSE" and "tag" not in req["body"], "within a day: untagged"
        later = f"8{int(run, 16) % 10**11:011d}"
        older = delivery(network, page_a, [message(later, page_a, f"m_{run}older", "¿Hola?", at=time.time() - 8 * 86400)])
        assert send(older) == 200
        assert wait_for(lambda: len(agent.offers) >= 3, 30), agent.offers
        third = agent.offers[-1]
        agent.contacts.AcceptContact(M.s.AcceptContactRequest(name=third.name, offer_id=third.offer_id),
                                     metadata=auth(agent.token), timeout=10)
        before = len(api.requests)
        with pytest.raises(grpc.RpcError) as closed:
            conversations.SendMessage(M.md.SendMessageRequest(parent=third.name, text="Sí"),
                                      metadata=auth(agent.token), timeout=10)
        assert closed.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "7-day" in closed.value.details()
        assert len(api.requests) == before
        agent.stream.cancel()
    finally:
        api.close()
        elsewhere.close()
