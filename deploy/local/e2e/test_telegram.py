"""Telegram through the Bot API end to end: media's webhook, an agent over gRPC, a fake Bot API.

Telegram's side is played by this test: updates in the Bot API's documented shape posted with
the webhook's secret token in `X-Telegram-Bot-Api-Secret-Token` (what Telegram sends once a
webhook is set with `secret_token`), and a small HTTP server standing in for the Bot API
(media's `CENTRALITA_TELEGRAM_BASE_URL` points at it, see services.sh) receiving the agent's
replies. The agent is a grpcio client of sessions and of media's `ConversationService`.

Shown: a private chat's message creates a `social` contact offered to the agent with the
message in its conversation, the customer a CRM social identity (network `telegram`, the
chat's id); a wrong or missing secret token is 401 and stores nothing; malformed JSON 400; a
group's message is ignored; a redelivered update stores nothing new; a second message
continues the conversation; the agent's reply reaches the fake Bot API (`/bot<token>/
sendMessage`, the chat and the text); an outage makes a send retry and end `failed`; a
photo is looked up with getFile and downloaded from the Bot API's host, kept with its
caption; an unreachable Bot API fails a reply without the bot's token in the reason; tenant
B's agent cannot read A's conversation and B's secret does not open A's webhook.
"""
import json
import time
import urllib.error
import urllib.request
import uuid

import grpc

from conftest import (
    FakeProvider, OfferedAgent, auth, cli, endpoints, front_door, mint, provider_secrets,
    sessions_knows_tenant, wait_for, provider_port as conftest_provider_port,
)


def provider_port():
    """Where media sends (services.sh: CENTRALITA_TELEGRAM_BASE_URL)."""
    return conftest_provider_port("CENTRALITA_TELEGRAM_BASE_URL", 8492)


def secrets_dir():
    """Where media reads the tenants' Secrets (services.sh: CENTRALITA_TELEGRAM_SECRETS_DIR)."""
    return provider_secrets("CENTRALITA_TELEGRAM_SECRETS_DIR")


BASE = front_door()


class FakeBotApi(FakeProvider):
    """`POST /bot<token>/sendMessage`: `ok` with a fresh message id, or an error for a
    planned status."""

    def __init__(self, port):
        self.next_id = 500

        def answer(status):
            if status != 200:
                return {"ok": False, "error_code": status, "description": "fake outage"}
            self.next_id += 1
            return {"ok": True, "result": {"message_id": self.next_id}}

        super().__init__(port, 200, lambda body: json.loads(body or b"null"), answer)


def tenant_yaml(tenant, bot_id, secret):
    return f"""
apiVersion: centralita.io/v1
kind: Tenant
metadata: {{ name: {tenant} }}
spec:
  displayName: Telegram {tenant}
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
  telegram:
    botId: "{bot_id}"
    secretName: {secret}
    queue: support
"""


def update(update_id, chat_id, text, chat_type="private"):
    return json.dumps({"update_id": update_id, "message": {
        "message_id": update_id + 1000, "date": 1765000000,
        "from": {"id": chat_id, "is_bot": False, "first_name": "Ana"},
        "chat": {"id": chat_id, "type": chat_type, "first_name": "Ana"}, "text": text}}).encode()


def post(tenant, body, secret=None):
    headers = {"content-type": "application/json"}
    if secret is not None:
        headers["x-telegram-bot-api-secret-token"] = secret
    req = urllib.request.Request(f"{BASE}/telegram/{tenant}", data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def test_a_telegram_customer_reaches_an_agent_and_gets_the_reply(pb, tmp_path):
    from centralita.crm.v1 import crm_pb2, crm_pb2_grpc
    from centralita.media.v1 import media_pb2, media_pb2_grpc
    from centralita.sessions.v1 import sessions_pb2, sessions_pb2_grpc

    class M:
        md, mg, s, sg, t = media_pb2, media_pb2_grpc, sessions_pb2, sessions_pb2_grpc, pb.tenancy

    eps = endpoints()
    run = uuid.uuid4().hex[:8]
    a, b = f"tg-{run}", f"tgb-{run}"
    bots = {a: str(700000000 + int(run, 16) % 10**8), b: str(800000000 + int(run, 16) % 10**8)}
    secrets = {t: {"botToken": f"{bots[t]}:AA{uuid.uuid4().hex}", "webhookSecret": f"whs-{uuid.uuid4().hex}"}
               for t in (a, b)}
    for t, keys in secrets.items():
        d = secrets_dir() / f"{t}-telegram"
        d.mkdir(parents=True, exist_ok=True)
        for k, v in keys.items():
            (d / k).write_text(v + "\n")
    (tmp_path / "t.yaml").write_text(tenant_yaml(a, bots[a], f"{a}-telegram") + "---\n" +
                                     tenant_yaml(b, bots[b], f"{b}-telegram"))
    cli("admin", "tenant", "apply", "-f", str(tmp_path / "t.yaml"))
    api = FakeBotApi(provider_port())
    chat = 5000000 + int(run, 16) % 10**6
    conversations = M.mg.ConversationServiceStub(grpc.insecure_channel(eps["media"]))
    crm = crm_pb2_grpc.CustomerServiceStub(grpc.insecure_channel(eps["crm"]))
    secret_a = secrets[a]["webhookSecret"]
    try:
        first = update(1, chat, "Hola, ¿hacen envíos a Canarias?")
        # media knows the tenant once a wrong secret is refused as such rather than as unknown.
        assert wait_for(lambda: post(a, first, "wrong") == 401, 60)
        assert post(a, first) == 401, "no secret"
        assert post(a, first, secrets[b]["webhookSecret"]) == 401, "B's secret"
        assert post(f"nobody-{run}", first, secret_a) == 404
        assert post(a, b"{", secret_a) == 400
        assert post(a, update(2, -100123, "group chatter", chat_type="group"), secret_a) == 200

        # Sessions reads the tenants topic on its own: it knows the tenant before the agent.
        sessions = M.sg.ContactServiceStub(grpc.insecure_channel(eps["sessions"]))
        assert sessions_knows_tenant(sessions, M.s, mint("--tenant", a, "--role", "supervisor"))
        agent = OfferedAgent(M, a, f"tg-agent-{run}", M.t.CHANNEL_SOCIAL)
        assert post(a, first, secret_a) == 200
        assert wait_for(lambda: agent.offers or agent.errors, 30) and not agent.errors, agent.errors
        offer = agent.offers[0]
        assert offer.channel == M.t.CHANNEL_SOCIAL
        contact = offer.name
        assert post(a, first, secret_a) == 200, "a redelivery"
        assert post(a, update(3, chat, "Y a Baleares"), secret_a) == 200

        def said():
            return [x.text for x in conversations.ListMessages(M.md.ListMessagesRequest(parent=contact),
                                                               metadata=auth(agent.token), timeout=10).messages
                    if x.sender == M.md.SENDER_KIND_CUSTOMER]

        assert wait_for(lambda: said() == ["Hola, ¿hacen envíos a Canarias?", "Y a Baleares"], 10), said()
        assert len(agent.offers) == 1, "the second message continued the conversation"
        admin_a = mint("--tenant", a, "--role", "tenant_admin")

        def found():
            return crm.FindCustomers(crm_pb2.FindCustomersRequest(identity=crm_pb2.Identity(
                kind=crm_pb2.IDENTITY_KIND_SOCIAL, network="telegram", value=str(chat))), metadata=auth(admin_a),
                timeout=10).customers

        assert wait_for(lambda: len(found()) == 1, 20), found()

        agent.contacts.AcceptContact(M.s.AcceptContactRequest(name=offer.name, offer_id=offer.offer_id),
                                     metadata=auth(agent.token), timeout=10)
        conversations.SendMessage(M.md.SendMessageRequest(parent=contact, text="Sí, a las dos"),
                                  metadata=auth(agent.token), timeout=10)
        assert wait_for(lambda: api.requests, 10)
        req = api.requests[-1]
        assert req["path"] == f"/bot{secrets[a]['botToken']}/sendMessage"
        assert (req["body"]["chat_id"], req["body"]["text"]) == (str(chat), "Sí, a las dos")

        def status_of(seq):
            return {x.sequence: x.status for x in conversations.ListMessages(
                M.md.ListMessagesRequest(parent=contact), metadata=auth(agent.token), timeout=10).messages}[seq]

        api.plan = [502, 502, 502, 502]
        down = conversations.SendMessage(M.md.SendMessageRequest(parent=contact, text="¿Algo más?"),
                                         metadata=auth(agent.token), timeout=10)
        assert wait_for(lambda: status_of(down.sequence) == M.md.DELIVERY_STATUS_FAILED, 30)
        assert len([r for r in api.requests if r["body"]["text"] == "¿Algo más?"]) == 4

        # A photo with a caption: looked up with getFile and downloaded from the Bot API's host
        # with the bot's token in the path, kept, the caption after it.
        token = secrets[a]["botToken"]
        jpeg = b"\xff\xd8\xff\xe0\0\x10JFIF" + run.encode()
        api.files[f"/bot{token}/getFile?file_id=AgAD{run}"] = (200, "application/json", json.dumps(
            {"ok": True, "result": {"file_id": f"AgAD{run}", "file_path": f"photos/file_{run}.jpg"}}).encode())
        api.files[f"/file/bot{token}/photos/file_{run}.jpg"] = (200, "application/octet-stream", jpeg)
        photo = json.dumps({"update_id": 4, "message": {
            "message_id": 40, "date": int(time.time()), "chat": {"id": chat, "type": "private"},
            "photo": [{"file_id": f"small{run}", "width": 90, "height": 90},
                      {"file_id": f"AgAD{run}", "width": 1280, "height": 960}],
            "caption": "El paquete llegó así"}}).encode()
        assert post(a, photo, secret_a) == 200

        def mine():
            return [x for x in conversations.ListMessages(M.md.ListMessagesRequest(parent=contact),
                                                          metadata=auth(agent.token), timeout=10).messages
                    if x.sender == M.md.SENDER_KIND_CUSTOMER]

        last = mine()[-2:]
        assert [(x.kind, x.text) for x in last] == [(M.md.MESSAGE_KIND_ATTACHMENT, "telegram-photo.jpg"),
                                                    (M.md.MESSAGE_KIND_TEXT, "El paquete llegó así")], last
        assert conversations.GetAttachment(M.md.GetAttachmentRequest(name=last[0].attachment.name),
                                           metadata=auth(agent.token), timeout=10).data == jpeg

        # With the Bot API unreachable a reply fails, and its reason does not carry the
        # bot's token (the send URL has it).
        api.close()
        gone = conversations.SendMessage(M.md.SendMessageRequest(parent=contact, text="¿Sigue ahí?"),
                                         metadata=auth(agent.token), timeout=10)
        assert wait_for(lambda: status_of(gone.sequence) == M.md.DELIVERY_STATUS_FAILED, 30)
        reason = {x.sequence: x.failure_reason for x in conversations.ListMessages(
            M.md.ListMessagesRequest(parent=contact), metadata=auth(agent.token), timeout=10).messages}[gone.sequence]
        assert "unreachable" in reason and token not in reason and token.split(":")[1] not in reason, reason

        b_agent = mint("--tenant", b, "--role", "agent", "--agent-id", f"tgb-agent-{run}")
        try:
            conversations.ListMessages(M.md.ListMessagesRequest(parent=contact), metadata=auth(b_agent), timeout=10)
            raise AssertionError("tenant B read A's Telegram conversation")
        except grpc.RpcError as e:
            assert e.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.PERMISSION_DENIED), e
        agent.stream.cancel()
    finally:
        api.close()
