"""Web chat end to end: a customer chats with an agent through media's digital role.

The customer is an independent WebSocket and HTTP client (PyPI `websockets`, urllib)
talking to media's web chat front door; the agent is a grpcio client of sessions (sign-in,
offers, accept) and of media's `ConversationService` (stream, send, read). Two tenants are
applied with the CLI, each with its own widget key, allowed origin and queue.

Shown: the chat start creates a chat contact that routing offers to the agent; messages go
both ways; the customer's socket drops and resumes from the last sequence it saw with
nothing lost or repeated (messages written meanwhile by the agent and through the HTTP
fallback); typing and read markers reach the agent; the transcript; the agent ending the
contact closes the customer's socket, and a customer leaving ends its contact. Refused: a wrong
origin, a wrong widget key, a wrong or another tenant's visitor token, an oversized text or
frame, too many messages at once; every RPC and endpoint across tenants.
"""
import json
import os
import threading
import time
import urllib.error
import urllib.request
import uuid

import grpc
import pytest

from conftest import OfferedAgent, auth, cli, endpoints, mint, wait_for

websockets = pytest.importorskip("websockets.sync.client")
from websockets.exceptions import ConnectionClosed, InvalidStatus  # noqa: E402


def webchat_port():
    """media's web chat port: what deploy/local/services.sh gives it."""
    if os.environ.get("CENTRALITA_WEBCHAT_PORT"):
        return int(os.environ["CENTRALITA_WEBCHAT_PORT"])
    return 8480 + int(os.environ.get("CENTRALITA_ADMIN_BASE", "9101")) - 9101


BASE = f"http://127.0.0.1:{webchat_port()}"
WS_BASE = f"ws://127.0.0.1:{webchat_port()}"


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


def tenant_yaml(tenant, key, origin):
    return f"""
apiVersion: centralita.io/v1
kind: Tenant
metadata: {{ name: {tenant} }}
spec:
  displayName: Web chat {tenant}
  channels: [chat]
  serviceLevel: {{ targetPercent: 80, thresholdSeconds: 20 }}
  quotas: {{ maxConcurrentContacts: 100, apiRequestsPerSecond: 1000 }}
  businessHours: {{ timeZone: UTC }}
  dataRetentionDays: 30
  recording: {{ voice: none }}
  routing:
    dispositionCodes: [resolved]
    queues:
      - {{ id: support, offerTimeoutSeconds: 60, afterContactWorkSeconds: 60 }}
  webchat:
    widgetKey: {key}
    allowedOrigins: ["{origin}"]
    queue: support
"""


def http(method, path, body=None, headers=None):
    """(status, JSON body) of a request to the web chat front door."""
    data = body if isinstance(body, bytes) else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(BASE + path, data=data, method=method,
                                 headers={"content-type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            return e.code, json.loads(raw or b"null")
        except ValueError:
            return e.code, raw.decode(errors="replace")


def start_chat(tenant, key, origin, **extra):
    return http("POST", f"/v1/tenants/{tenant}/webchat/chats", {"widgetKey": key, **extra}, {"origin": origin})


def open_socket(tenant, token, origin, after=0):
    return websockets.connect(f"{WS_BASE}/v1/tenants/{tenant}/webchat/socket?token={token}&after={after}",
                              origin=origin, open_timeout=10, max_size=2**20)


def last_sequence(tenant, token, origin):
    """The last sequence of the visitor's conversation, from its transcript."""
    status, transcript = http("GET", f"/v1/tenants/{tenant}/webchat/messages",
                              headers={"authorization": f"Bearer {token}", "origin": origin})
    assert status == 200, transcript
    return transcript["messages"][-1]["sequence"]


def read_frames(ws, until, timeout=20):
    """Frames of the socket until `until(frames)` is true (or `timeout` passes)."""
    frames, end = [], time.monotonic() + timeout
    while not until(frames) and time.monotonic() < end:
        try:
            frames.append(json.loads(ws.recv(timeout=max(0.05, end - time.monotonic()))))
        except TimeoutError:
            break
    return frames


def messages(frames):
    return [f for f in frames if f["type"] == "message"]


class Follow:
    """An agent-side StreamMessages, collecting what arrives."""

    def __init__(self, conversations, m, contact, token, after=0):
        self.events, self.errors = [], []
        self.call = conversations.StreamMessages(m.md.StreamMessagesRequest(parent=contact, after_sequence=after),
                                                 metadata=auth(token))
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self):
        try:
            for ev in self.call:
                self.events.append(ev)
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.CANCELLED:
                self.errors.append(e)

    def sequences(self):
        return [e.message.sequence for e in self.events if e.WhichOneof("event") == "message"]


def test_a_customer_chats_with_an_agent_and_resumes_without_loss(m, tmp_path):
    eps = endpoints()
    run = uuid.uuid4().hex[:8]
    a, b = f"wca-{run}", f"wcb-{run}"
    key_a, key_b = f"wk_{run}_aaaaaaaaaaaa", f"wk_{run}_bbbbbbbbbbbb"
    origin_a, origin_b = "https://shop-a.example", "http://localhost:8123"
    manifest = tmp_path / "tenants.yaml"
    manifest.write_text(tenant_yaml(a, key_a, origin_a) + "---\n" + tenant_yaml(b, key_b, origin_b))
    cli("admin", "tenant", "apply", "-f", str(manifest))
    conversations = m.mg.ConversationServiceStub(grpc.insecure_channel(eps["media"]))
    sup_a = mint("--tenant", a, "--role", "supervisor")
    sup_b = mint("--tenant", b, "--role", "supervisor")

    # media knows both tenants once a wrong key is refused as such rather than as unknown.
    assert wait_for(lambda: start_chat(a, "wrong-key-000000000", origin_a)[0] == 401
                    and start_chat(b, "wrong-key-000000000", origin_b)[0] == 401, 60), "media never saw the tenants"
    contacts = m.sg.ContactServiceStub(grpc.insecure_channel(eps["sessions"]))

    def sessions_knows():
        try:
            contacts.ListQueueStats(m.s.ListQueueStatsRequest(), metadata=auth(sup_a), timeout=5)
            return True
        except grpc.RpcError:
            return False

    assert wait_for(sessions_knows, 60), "sessions never saw the tenant"
    agent = OfferedAgent(m, a, f"wc-agent-{run}", m.t.CHANNEL_CHAT)

    # The customer starts a chat: a chat contact, offered to the agent.
    status, started = start_chat(a, key_a, origin_a, requestId=f"start-{run}")
    assert status == 201, started
    contact, token = started["contact"], started["visitorToken"]
    assert contact.startswith(f"tenants/{a}/contacts/") and started["visitorId"].startswith("v-")
    # A retried start (same request id) is the same chat.
    status, again = start_chat(a, key_a, origin_a, requestId=f"start-{run}")
    assert status == 201 and again["contact"] == contact
    assert wait_for(lambda: agent.offers or agent.errors, 30), "no offer of the chat"
    assert not agent.errors, agent.errors
    offer = agent.offers[0]
    assert offer.name == contact and offer.channel == m.t.CHANNEL_CHAT

    # Offered: the agent already reads the conversation (the start notice).
    listed = conversations.ListMessages(m.md.ListMessagesRequest(parent=contact), metadata=auth(agent.token),
                                        timeout=10)
    assert [(x.sequence, x.sender, x.kind) for x in listed.messages] == \
        [(1, m.md.SENDER_KIND_SYSTEM, m.md.MESSAGE_KIND_NOTICE)]
    agent.contacts.AcceptContact(m.s.AcceptContactRequest(name=offer.name, offer_id=offer.offer_id),
                                 metadata=auth(agent.token), timeout=10)
    follow = Follow(conversations, m, contact, agent.token)

    with open_socket(a, token, origin_a) as ws:
        first = read_frames(ws, lambda f: len(messages(f)) >= 1)
        assert [(x["sequence"], x["sender"], x["kind"]) for x in messages(first)] == [(1, "system", "notice")]
        ws.send(json.dumps({"type": "message", "text": "Hola, necesito ayuda", "requestId": "c-1"}))
        acks = read_frames(ws, lambda f: any(x["type"] == "ack" for x in f))
        assert {"type": "ack", "requestId": "c-1", "sequence": 2} in acks
        # The customer's message reaches the agent's stream.
        assert wait_for(lambda: 2 in follow.sequences(), 10), follow.events
        got = [e.message for e in follow.events if e.WhichOneof("event") == "message" and e.message.sequence == 2][0]
        assert got.text == "Hola, necesito ayuda" and got.sender == m.md.SENDER_KIND_CUSTOMER
        # The agent answers; it reaches the customer's socket.
        sent = conversations.SendMessage(m.md.SendMessageRequest(parent=contact, text="Claro, dime",
                                                                 request_id="a-1"),
                                         metadata=auth(agent.token), timeout=10)
        assert sent.sequence == 3 and sent.agent_id == f"wc-agent-{run}"
        again = conversations.SendMessage(m.md.SendMessageRequest(parent=contact, text="Claro, dime",
                                                                  request_id="a-1"),
                                          metadata=auth(agent.token), timeout=10)
        assert again.sequence == 3, "a retried send is stored once"
        frames = read_frames(ws, lambda f: any(x["sequence"] == 3 for x in messages(f)))
        answer = [x for x in messages(frames) if x["sequence"] == 3][0]
        assert answer["sender"] == "agent" and answer["text"] == "Claro, dime"
        # Typing and read markers reach the agent.
        ws.send(json.dumps({"type": "typing", "active": True}))
        assert wait_for(lambda: any(e.WhichOneof("event") == "typing" and e.typing.active for e in follow.events),
                        10), "the agent never saw the customer typing"
        ws.send(json.dumps({"type": "read", "sequence": 3}))
        assert wait_for(lambda: any(e.WhichOneof("event") == "read" and e.read.sequence == 3
                                    for e in follow.events), 10), "the agent never saw the read marker"
        statuses = {x.sequence: x.status for x in conversations.ListMessages(
            m.md.ListMessagesRequest(parent=contact), metadata=auth(agent.token), timeout=10).messages}
        assert statuses[3] == m.md.DELIVERY_STATUS_READ
        # The agent types: the customer sees it.
        conversations.SendTyping(m.md.SendTypingRequest(parent=contact, active=True), metadata=auth(agent.token),
                                 timeout=10)
        typing = read_frames(ws, lambda f: any(x["type"] == "typing" and x["active"] for x in f), timeout=10)
        assert any(x["type"] == "typing" and x["active"] for x in typing)
        # Oversized: a text over 4096 bytes is refused on the socket, which stays open; a
        # frame over the limit closes it.
        ws.send(json.dumps({"type": "message", "text": "x" * 5000, "requestId": "big"}))
        refused = read_frames(ws, lambda f: any(x["type"] == "error" for x in f))
        assert [x["error"] for x in refused if x["type"] == "error"] == ["too_large"]
        seen = 3  # the last sequence this client saw

    # While the customer is away: two agent messages and one customer message over HTTP.
    for text in ("¿Sigues ahí?", "Te espero"):
        conversations.SendMessage(m.md.SendMessageRequest(parent=contact, text=text), metadata=auth(agent.token),
                                  timeout=10)
    status, posted = http("POST", f"/v1/tenants/{a}/webchat/messages", {"text": "Sí, perdona", "requestId": "c-2"},
                          {"authorization": f"Bearer {token}", "origin": origin_a})
    assert status == 201 and posted["sequence"] == 6, posted
    # Resume from the last sequence seen: exactly 4, 5, 6, in order, once.
    with open_socket(a, token, origin_a, after=seen) as ws:
        frames = read_frames(ws, lambda f: len(messages(f)) >= 3)
        frames += read_frames(ws, lambda f: False, timeout=2)  # nothing more arrives
        assert [x["sequence"] for x in messages(frames)] == [4, 5, 6]
        assert [x["text"] for x in messages(frames)] == ["¿Sigues ahí?", "Te espero", "Sí, perdona"]
    assert wait_for(lambda: follow.sequences()[-1:] == [6], 10)
    assert follow.sequences() == [1, 2, 3, 4, 5, 6], "the agent's stream: each message once, in order"
    assert not follow.errors, follow.errors
    # The agent's stream resumes too.
    resumed = Follow(conversations, m, contact, agent.token, after=4)
    assert wait_for(lambda: resumed.sequences() == [5, 6], 10), resumed.sequences()
    resumed.call.cancel()
    follow.call.cancel()
    # The transcript, on request.
    status, transcript = http("GET", f"/v1/tenants/{a}/webchat/messages",
                              headers={"authorization": f"Bearer {token}", "origin": origin_a})
    assert status == 200 and [x["sequence"] for x in transcript["messages"]] == [1, 2, 3, 4, 5, 6]
    assert transcript["messages"][2]["status"] == "read"
    paged = conversations.ListMessages(m.md.ListMessagesRequest(parent=contact, page_size=4),
                                       metadata=auth(sup_a), timeout=10)
    rest = conversations.ListMessages(m.md.ListMessagesRequest(parent=contact, page_token=paged.next_page_token),
                                      metadata=auth(sup_a), timeout=10)
    assert [x.sequence for x in paged.messages] == [1, 2, 3, 4] and [x.sequence for x in rest.messages] == [5, 6]
    assert rest.next_page_token == ""

    # --- Refusals at the front door ---
    assert start_chat(a, key_a, "https://evil.example")[0] == 403, "wrong origin"
    assert start_chat(a, key_a, origin_b)[0] == 403, "tenant B's origin on tenant A"
    assert start_chat(a, "not-the-key-0000000", origin_a)[0] == 401, "wrong widget key"
    assert start_chat(a, key_b, origin_a)[0] == 401, "tenant B's key on tenant A"
    assert start_chat(f"nobody-{run}", key_a, origin_a)[0] == 404
    status, body = http("POST", f"/v1/tenants/{a}/webchat/messages", {"text": "x" * 5000},
                        {"authorization": f"Bearer {token}", "origin": origin_a})
    assert status == 413 and body["error"] == "too_large"
    status, chat_b = start_chat(b, key_b, origin_b)
    assert status == 201, chat_b
    token_b = chat_b["visitorToken"]
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    api_token = mint("--tenant", a, "--role", "channel")  # a real token of the platform, not a visitor's
    for bad in ("", "garbage", forged, api_token):
        for method, path in (("POST", "messages"), ("GET", "messages")):
            status, body = http(method, f"/v1/tenants/{a}/webchat/{path}", {"text": "hi"} if method == "POST" else None,
                                {"authorization": f"Bearer {bad}", "origin": origin_a})
            assert status == 401, (bad[:10], method, path, status, body)
    # Cross-tenant: B's visitor on A's paths, A's visitor on B's paths.
    for tenant, tok, origin in ((a, token_b, origin_a), (b, token, origin_b)):
        status, _ = http("POST", f"/v1/tenants/{tenant}/webchat/messages", {"text": "hi"},
                         {"authorization": f"Bearer {tok}", "origin": origin})
        assert status == 401
        status, _ = http("GET", f"/v1/tenants/{tenant}/webchat/messages",
                         headers={"authorization": f"Bearer {tok}", "origin": origin})
        assert status == 401
        with pytest.raises(InvalidStatus) as refused:
            open_socket(tenant, tok, origin).close()
        assert refused.value.response.status_code == 401
    for tok, origin in ((token, "https://evil.example"), (forged, origin_a)):
        with pytest.raises(InvalidStatus) as refused:
            open_socket(a, tok, origin).close()
        assert refused.value.response.status_code in (401, 403)
    # A frame over the limit closes the socket (1009, message too big).
    with open_socket(a, token, origin_a, after=6) as ws:
        ws.send(json.dumps({"type": "message", "text": "y" * 40_000}))
        with pytest.raises(ConnectionClosed) as closed:
            for _ in range(20):
                ws.recv(timeout=5)
        assert closed.value.rcvd is None or closed.value.rcvd.code == 1009
    # Too many at once: the rate limit (5 a second, bursts of 10) refuses the excess, which is
    # not stored. 60 frames in a row on one socket; the HTTP fallback shares the limit.
    with open_socket(b, token_b, origin_b, after=last_sequence(b, token_b, origin_b)) as ws:
        for i in range(60):
            ws.send(json.dumps({"type": "message", "text": f"m{i}", "requestId": f"r{i}"}))
        replies = read_frames(ws, lambda f: len([x for x in f if x["type"] in ("ack", "error")]) >= 60, timeout=60)
    acks = [x for x in replies if x["type"] == "ack"]
    limited = [x for x in replies if x["type"] == "error" and x["error"] == "rate"]
    assert len(acks) >= 10 and limited and len(acks) + len(limited) == 60, replies[-5:]
    status, body = http("POST", f"/v1/tenants/{b}/webchat/messages", {"text": "one more"},
                        {"authorization": f"Bearer {token_b}", "origin": origin_b})
    assert status in (201, 429), (status, body)
    stored = 1 + len(acks) + (status == 201)
    status, tb = http("GET", f"/v1/tenants/{b}/webchat/messages",
                      headers={"authorization": f"Bearer {token_b}", "origin": origin_b})
    assert len(tb["messages"]) == stored

    # --- Who may use the conversation over gRPC ---
    md = m.md
    calls = {
        "ListMessages": lambda t: conversations.ListMessages(md.ListMessagesRequest(parent=contact),
                                                             metadata=auth(t), timeout=10),
        "StreamMessages": lambda t: next(iter(conversations.StreamMessages(
            md.StreamMessagesRequest(parent=contact), metadata=auth(t), timeout=10))),
        "SendMessage": lambda t: conversations.SendMessage(md.SendMessageRequest(parent=contact, text="hi"),
                                                           metadata=auth(t), timeout=10),
        "SendTyping": lambda t: conversations.SendTyping(md.SendTypingRequest(parent=contact, active=True),
                                                         metadata=auth(t), timeout=10),
        "MarkRead": lambda t: conversations.MarkRead(md.MarkReadRequest(parent=contact, sequence=1),
                                                     metadata=auth(t), timeout=10),
    }
    outsiders = {
        "tenant B's supervisor": sup_b,
        "tenant B's admin": mint("--tenant", b, "--role", "tenant_admin"),
        "tenant B's agent with the holder's id": mint("--tenant", b, "--role", "agent", "--agent-id",
                                                      f"wc-agent-{run}"),
        "another agent of tenant A": mint("--tenant", a, "--role", "agent", "--agent-id", f"other-{run}"),
        "tenant A's channel": mint("--tenant", a, "--role", "channel"),
    }
    for rpc, call in calls.items():
        for who, tok in outsiders.items():
            with pytest.raises(grpc.RpcError) as denied:
                call(tok)
            assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED, (rpc, who, denied.value)
        # Tenant A's supervisor may.
        call(sup_a)
    # Tenant B's own conversation is B's supervisor's, never A's.
    b_contact = chat_b["contact"]
    assert conversations.ListMessages(md.ListMessagesRequest(parent=b_contact), metadata=auth(sup_b),
                                      timeout=10).messages[0].sequence == 1
    with pytest.raises(grpc.RpcError) as denied:
        conversations.ListMessages(md.ListMessagesRequest(parent=b_contact), metadata=auth(sup_a), timeout=10)
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.RpcError) as bad:
        conversations.ListMessages(md.ListMessagesRequest(parent="tenants/x"), metadata=auth(sup_a), timeout=10)
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    # The agent ends the contact: the customer's open socket is told and closes; sends are
    # refused; once wrapped up, the agent no longer holds it.
    with open_socket(a, token, origin_a, after=last_sequence(a, token, origin_a)) as ws:
        agent.contacts.EndContact(m.s.EndContactRequest(name=contact), metadata=auth(agent.token), timeout=10)
        end = read_frames(ws, lambda f: any(x["type"] == "ended" for x in f), timeout=15)
        assert end and end[-1] == {"type": "ended"}, end
    status, body = http("POST", f"/v1/tenants/{a}/webchat/messages", {"text": "¿hola?"},
                        {"authorization": f"Bearer {token}", "origin": origin_a})
    assert status == 409 and body["error"] == "ended", (status, body)
    agent.contacts.WrapUpContact(m.s.WrapUpContactRequest(name=contact, disposition="resolved"),
                                 metadata=auth(agent.token), timeout=10)
    with pytest.raises(grpc.RpcError) as done:
        calls["SendMessage"](agent.token)
    assert done.value.code() == grpc.StatusCode.PERMISSION_DENIED
    agent.stream.cancel()
    # The customer of tenant B leaves before anyone answered: a notice, the contact abandoned.
    with open_socket(b, token_b, origin_b, after=last_sequence(b, token_b, origin_b)) as ws:
        ws.send(json.dumps({"type": "leave"}))
        bye = read_frames(ws, lambda f: any(x["type"] == "ended" for x in f), timeout=15)
        assert [x["text"] for x in messages(bye)] == ["The customer left the chat"] and bye[-1] == {"type": "ended"}
    left = contacts.GetContact(m.s.GetContactRequest(name=b_contact), metadata=auth(sup_b), timeout=10)
    assert left.state == m.s.CONTACT_STATE_ABANDONED
