"""The console's chat pane in a real browser (Debian's Chromium driven by Playwright).

A customer starts a web chat through media's front door (HTTP start, then the WebSocket, with
PyPI `websockets` as test_webchat.py does) and writes first; the agent, signed in to the
console with the development sign-in, accepts the offer in the browser and sees the customer's
message (ListMessages, then StreamMessages over gRPC-Web to media), replies in the composer
(SendMessage) and the customer's socket receives the reply. The customer types, writes again
and reads the reply: the typing indicator, the new message and the read marker appear in the
browser, and the agent's read marker reaches media (the customer's message shows as read). The
browser's connection to media drops while the customer writes: once it is back the message
appears exactly once (the stream resumed from the last sequence). A second customer chats at
the same time in a second pane, each conversation kept apart. The agent ends the first chat
(the customer's socket is told) and wraps up with the history still shown. Tenant B's agent, signed in
at the same time, sees nothing of it, and its token (as its browser holds it) is refused every
ConversationService call on A's chat. A screenshot goes to the run's log folder, or to
docs/screenshots/ with CENTRALITA_SCREENSHOTS=docs.
"""
import json
import pathlib
import time
import urllib.request
import uuid

import grpc
import pytest

from conftest import auth, cli, endpoints, mint, wait_for
from test_console import SHOTS, CHROMIUM, CuttableProxy, console_url, sign_in

websockets = pytest.importorskip("websockets.sync.client")
from test_webchat import BASE, messages, open_socket, read_frames, start_chat  # noqa: E402

ORIGIN = "https://shop.example"


def manifest(tenant, key):
    return f"""
apiVersion: centralita.io/v1
kind: Tenant
metadata: {{ name: {tenant} }}
spec:
  displayName: Chat {tenant}
  channels: [chat]
  serviceLevel: {{ targetPercent: 80, thresholdSeconds: 20 }}
  quotas: {{ maxConcurrentContacts: 100, apiRequestsPerSecond: 1000 }}
  businessHours: {{ timeZone: Europe/Madrid }}
  dataRetentionDays: 30
  recording: {{ voice: none }}
  routing:
    awayReasons: [break]
    dispositionCodes: [resolved]
    queues:
      - id: support
        offerTimeoutSeconds: 60
        afterContactWorkSeconds: 300
        cannedReplies:
          en: ["Thanks for your patience: {{tenant}} is checking your order.", "Anything else?"]
          es: ["Gracias por su paciencia: {{tenant}} revisa su pedido."]
  webchat:
    widgetKey: {key}
    allowedOrigins: ["{ORIGIN}"]
    queue: support
"""


@pytest.fixture(scope="module")
def m(pb):
    from centralita.media.v1 import media_pb2, media_pb2_grpc
    from centralita.sessions.v1 import sessions_pb2, sessions_pb2_grpc

    class M:
        md, mg = media_pb2, media_pb2_grpc
        s, sg = sessions_pb2, sessions_pb2_grpc
        t = pb.tenancy

    return M


def test_agent_chats_with_a_web_chat_customer_in_the_browser(m, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    eps = endpoints()
    url = console_url()
    run = uuid.uuid4().hex[:8]
    a, b = f"chat-{run}", f"chat-{run}-b"
    key_a, key_b = f"wk_{run}_aaaaaaaaaaaa", f"wk_{run}_bbbbbbbbbbbb"
    path = tmp_path / "tenants.yaml"
    path.write_text(manifest(a, key_a) + "---\n" + manifest(b, key_b))
    cli("admin", "tenant", "apply", "-f", str(path))
    s = m.s
    sessions = grpc.insecure_channel(eps["sessions"])
    agents, contacts = m.sg.AgentServiceStub(sessions), m.sg.ContactServiceStub(sessions)
    conversations = m.mg.ConversationServiceStub(grpc.insecure_channel(eps["media"]))
    sup_a = mint("--tenant", a, "--role", "supervisor")

    assert wait_for(lambda: start_chat(a, "wrong-key-000000000", ORIGIN)[0] == 401
                    and start_chat(b, "wrong-key-000000000", ORIGIN)[0] == 401, 60), "media never saw the tenants"

    def sessions_knows():
        try:
            for t in (a, b):
                contacts.ListQueueStats(s.ListQueueStatsRequest(), metadata=auth(mint("--tenant", t, "--role",
                                                                                       "supervisor")), timeout=5)
            return True
        except grpc.RpcError:
            return False

    assert wait_for(sessions_knows, 60), "sessions never saw the tenants"
    agent_a, agent_b = f"ana-{run}", f"bea-{run}"
    chat = s.ChannelCapacity(channel=m.t.CHANNEL_CHAT, max_contacts=3, exclusive=False)
    for who, tenant in ((agent_a, a), (agent_b, b)):
        agents.UpsertAgent(s.UpsertAgentRequest(agent=s.Agent(
            name=f"agents/{who}", display_name=who, capacity=[chat],
            queues=[s.QueueAssignment(tenant=tenant, queue="support")])),
            metadata=auth(mint("--role", "bpo_admin")), timeout=10)

    SHOTS.mkdir(parents=True, exist_ok=True)
    proxy = CuttableProxy(eps["media"])
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            # Tenant B's agent, under the console's Content-Security-Policy, which lets the page
            # reach media.
            page_b = browser.new_context(viewport={"width": 1280, "height": 700}, locale="en-GB").new_page()
            csp = sign_in(page_b, url, b, "agent", agent_b).headers["content-security-policy"]
            assert eps["media"] in csp, csp
            page_b.get_by_test_id("go-available").click()
            expect(page_b.get_by_test_id("agent-state")).to_have_text("Available", timeout=20_000)

            # Tenant A's agent reaches media through a proxy the test can cut (so the page
            # bypasses the policy, which lists the configured endpoints only).
            ctx = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-GB", bypass_csp=True)
            page = ctx.new_page()

            def via_proxy(route):
                resp = route.fetch()
                body = resp.json()
                assert body["endpoints"]["media"] == f"http://{eps['media']}", body
                body["endpoints"]["media"] = proxy.url
                route.fulfill(response=resp, json=body)

            page.route("**/api/config", via_proxy)
            sign_in(page, url, a, "agent", agent_a)
            page.get_by_test_id("go-available").click()
            expect(page.get_by_test_id("agent-state")).to_have_text("Available", timeout=20_000)

            # The customer starts a chat and writes first.
            status, started = start_chat(a, key_a, ORIGIN, requestId=f"start-{run}")
            assert status == 201, started
            contact, token = started["contact"], started["visitorToken"]
            with open_socket(a, token, ORIGIN) as ws:
                read_frames(ws, lambda f: len(messages(f)) >= 1)
                ws.send(json.dumps({"type": "message", "text": "Hola, necesito ayuda con mi pedido",
                                    "requestId": "c-1"}))
                acks = read_frames(ws, lambda f: any(x["type"] == "ack" for x in f))
                first_seq = [x for x in acks if x["type"] == "ack"][0]["sequence"]

                # The agent accepts in the browser and sees the customer's first message.
                offer = page.get_by_test_id("offer")
                expect(offer).to_be_visible(timeout=30_000)
                offer.get_by_test_id("accept").click()
                pane = page.get_by_test_id("chat")
                expect(pane).to_be_visible(timeout=15_000)
                expect(pane.get_by_test_id("chat-status")).to_have_text("connected", timeout=15_000)
                customer_msgs = pane.locator("[data-testid=chat-message][data-sender=customer]")
                expect(customer_msgs.first).to_contain_text("Hola, necesito ayuda con mi pedido", timeout=15_000)
                # Seen by the agent: the pane marks it read (MarkRead), media records it.
                def customer_message_read():
                    listed = conversations.ListMessages(m.md.ListMessagesRequest(parent=contact),
                                                        metadata=auth(sup_a), timeout=10).messages
                    return [x.status for x in listed if x.sequence == first_seq] == [m.md.DELIVERY_STATUS_READ]

                assert wait_for(customer_message_read, 15), "the agent's read marker never reached media"

                # The agent replies; the customer's socket receives it (the agent's typing first).
                pane.get_by_test_id("chat-input").fill("Claro, ¿me das el número de pedido?")
                typing = read_frames(ws, lambda f: any(x["type"] == "typing" and x.get("active") for x in f),
                                     timeout=10)
                assert any(x["type"] == "typing" and x.get("active") for x in typing), typing
                clicked = time.monotonic()
                pane.get_by_test_id("chat-send").click()
                frames = read_frames(ws, lambda f: any(x.get("sender") == "agent" for x in messages(f))
                                     and any(x["type"] == "typing" and not x["active"] for x in f))
                # Well before media's 6 s typing marker would expire by itself.
                assert time.monotonic() - clicked < 4, time.monotonic() - clicked
                reply = [x for x in messages(frames) if x["sender"] == "agent"]
                assert [x["text"] for x in reply] == ["Claro, ¿me das el número de pedido?"], frames
                # Sent: the agent no longer shows as typing.
                assert any(x["type"] == "typing" and not x["active"] for x in frames), frames
                expect(pane.get_by_test_id("chat-input")).to_have_value("")
                # Stored once, from this agent.
                listed = conversations.ListMessages(m.md.ListMessagesRequest(parent=contact), metadata=auth(sup_a),
                                                    timeout=10).messages
                mine = [x for x in listed if x.sender == m.md.SENDER_KIND_AGENT]
                assert [(x.text, x.agent_id) for x in mine] == [("Claro, ¿me das el número de pedido?", agent_a)]

                # The customer types, reads the reply and writes again: all of it in the browser.
                ws.send(json.dumps({"type": "typing", "active": True}))
                expect(pane.get_by_test_id("chat-typing")).to_be_visible(timeout=10_000)
                ws.send(json.dumps({"type": "read", "sequence": reply[0]["sequence"]}))
                expect(pane.get_by_test_id("chat-read")).to_have_count(1, timeout=10_000)
                ws.send(json.dumps({"type": "message", "text": "Es el 4711", "requestId": "c-2"}))
                expect(customer_msgs).to_have_count(2, timeout=15_000)
                expect(customer_msgs.nth(1)).to_contain_text("Es el 4711")
                expect(pane.get_by_test_id("chat-typing")).to_have_count(0)

                # A quick reply of the queue (its manifest's cannedReplies, in the agent's
                # language, the tenant's name filled in) goes into the composer, then out.
                canned = f"Thanks for your patience: Chat {a} is checking your order."
                assert pane.get_by_test_id("canned").locator("option").all_inner_texts()[1:] == [
                    canned[:59] + "…", "Anything else?"]
                pane.get_by_test_id("canned").select_option(canned)
                expect(pane.get_by_test_id("chat-input")).to_have_value(canned)
                pane.get_by_test_id("chat-send").click()
                frames = read_frames(ws, lambda f: any(x.get("text") == canned for x in messages(f)))
                assert [x["sender"] for x in messages(frames) if x.get("text") == canned] == ["agent"], frames
                # The send answered in the browser too (the customer can get the message before
                # the agent's page gets SendMessage's answer): the composer is cleared.
                expect(pane.get_by_test_id("chat-input")).to_have_value("", timeout=10_000)

                # The browser loses media while the customer writes; back, the message shows once.
                proxy.cut()
                expect(pane.get_by_test_id("chat-status")).to_have_text("reconnecting…", timeout=20_000)
                ws.send(json.dumps({"type": "message", "text": "¿Sigues ahí?", "requestId": "c-3"}))
                read_frames(ws, lambda f: any(x["type"] == "ack" for x in f))
                time.sleep(1)
                proxy.restore()
                expect(pane.get_by_test_id("chat-status")).to_have_text("connected", timeout=30_000)
                expect(customer_msgs).to_have_count(3, timeout=15_000)
                expect(customer_msgs.nth(2)).to_contain_text("¿Sigues ahí?")
                time.sleep(1.5)
                sequences = pane.get_by_test_id("chat-message").evaluate_all(
                    "els => els.map(e => Number(e.dataset.sequence))")
                stored = [x.sequence for x in conversations.ListMessages(
                    m.md.ListMessagesRequest(parent=contact), metadata=auth(sup_a), timeout=10).messages]
                assert sequences == stored, (sequences, stored)

                # Files: the customer's PNG shows in the pane and downloads with its bytes; the
                # agent's PDF from the pane's file input reaches the customer's socket and
                # downloads there the same.
                png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR" + run.encode()
                files = []
                up = urllib.request.Request(
                    f"{BASE}/v1/tenants/{a}/webchat/attachments?name=foto.png&requestId=f-1", data=png,
                    method="POST", headers={"content-type": "image/png", "authorization": f"Bearer {token}"})
                with urllib.request.urlopen(up, timeout=10) as r:
                    assert r.status == 201
                link = pane.locator("[data-sender=customer] [data-testid=chat-file]")
                expect(link).to_contain_text("foto.png", timeout=15_000)
                with page.expect_download(timeout=10_000) as download:
                    link.click()
                assert download.value.suggested_filename == "foto.png"
                assert pathlib.Path(download.value.path()).read_bytes() == png
                pdf = b"%PDF-1.4\n% pedido " + run.encode() + b"\n%%EOF\n"
                pane.get_by_test_id("chat-attach").set_input_files(
                    files=[{"name": "pedido.pdf", "mimeType": "application/pdf", "buffer": pdf}])
                frames = read_frames(ws, lambda f: any(x.get("kind") == "attachment" and x.get("sender") == "agent"
                                                       for x in messages(f)))
                sent = [x for x in messages(frames) if x.get("kind") == "attachment" and x["sender"] == "agent"]
                assert [x["attachment"]["name"] for x in sent] == ["pedido.pdf"], frames
                files.append(sent[0]["attachment"]["id"])
                got = urllib.request.Request(f"{BASE}/v1/tenants/{a}/webchat/attachments/{sent[0]['attachment']['id']}",
                                             headers={"authorization": f"Bearer {token}"})
                with urllib.request.urlopen(got, timeout=10) as r:
                    assert r.read() == pdf
                # A program is refused in the pane before anything is sent.
                pane.get_by_test_id("chat-attach").set_input_files(
                    files=[{"name": "setup.exe", "mimeType": "application/x-msdownload", "buffer": b"MZ\x90\0"}])
                expect(pane.get_by_test_id("chat-error")).to_contain_text("cannot be sent", timeout=5_000)
                pane.get_by_test_id("chat-input").fill("Recibido")
                pane.get_by_test_id("chat-send").click()
                expect(pane.get_by_test_id("chat-error")).to_have_count(0, timeout=10_000)
                assert read_frames(ws, lambda f: any(x.get("text") == "Recibido" for x in messages(f)))

                # Spanish strings in the pane.
                page.get_by_test_id("lang").select_option("es")
                expect(pane.get_by_test_id("chat-send")).to_have_text("Enviar")
                expect(pane.get_by_test_id("chat-status")).to_have_text("conectado")
                page.get_by_test_id("lang").select_option("en")
                # No error left on the pane (a read marker cut in flight is sent again).
                expect(pane.get_by_test_id("chat-error")).to_have_count(0)
                expect(pane.get_by_test_id("chat-read-error")).to_have_count(0, timeout=10_000)
                page.screenshot(path=str(SHOTS / "console-chat.png"), full_page=True)

                # Tenant B's agent saw nothing of it.
                expect(page_b.get_by_test_id("no-contacts")).to_be_visible()
                assert page_b.get_by_test_id("offer").count() == 0 and page_b.get_by_test_id("chat").count() == 0
                for text in ("Hola, necesito ayuda", "4711", a + "/"):
                    assert text not in page_b.content()

                # A second customer at the same time: a second pane, each conversation in its own.
                status, second = start_chat(a, key_a, ORIGIN, requestId=f"start2-{run}")
                assert status == 201, second
                with open_socket(a, second["visitorToken"], ORIGIN) as ws2:
                    read_frames(ws2, lambda f: len(messages(f)) >= 1)
                    ws2.send(json.dumps({"type": "message", "text": "Soy otro cliente", "requestId": "d-1"}))
                    read_frames(ws2, lambda f: any(x["type"] == "ack" for x in f))
                    expect(page.get_by_test_id("offer")).to_be_visible(timeout=30_000)
                    page.get_by_test_id("offer").get_by_test_id("accept").click()
                    expect(page.get_by_test_id("chat")).to_have_count(2, timeout=15_000)
                    pane = page.get_by_test_id("contact").filter(has_text="Hola, necesito ayuda").get_by_test_id("chat")
                    pane2 = page.get_by_test_id("contact").filter(has_text="Soy otro cliente").get_by_test_id("chat")
                    expect(pane2.get_by_test_id("chat-status")).to_have_text("connected", timeout=15_000)
                    customer_msgs = pane.locator("[data-testid=chat-message][data-sender=customer]")
                    expect(customer_msgs).to_have_count(4)
                    assert "Soy otro cliente" not in pane.inner_text()
                    pane2.get_by_test_id("chat-input").fill("Enseguida te atiendo")
                    pane2.get_by_test_id("chat-input").press("Enter")
                    got = read_frames(ws2, lambda f: any(x.get("sender") == "agent" for x in messages(f)))
                    assert [x["text"] for x in messages(got) if x["sender"] == "agent"] == ["Enseguida te atiendo"]
                    # Nothing of it reaches the first customer or the first pane.
                    assert not [x for x in messages(read_frames(ws, lambda f: False, timeout=1.5))
                                if x["sender"] == "agent"]
                    assert "Enseguida te atiendo" not in pane.inner_text()

                # The agent ends the first chat: the customer is told; the pane keeps the history
                # for the wrap-up, without a composer.
                page.get_by_test_id("contact").filter(has_text="Hola, necesito ayuda").get_by_test_id(
                    "end-contact").click()
                end = read_frames(ws, lambda f: any(x["type"] == "ended" for x in f), timeout=15)
                assert end and end[-1] == {"type": "ended"}, end
                expect(pane.get_by_test_id("chat-status")).to_have_text("ended", timeout=15_000)
                expect(pane.get_by_test_id("chat-input")).to_have_count(0)
                expect(customer_msgs).to_have_count(4)
                wrap = page.get_by_test_id("wrap-up")
                wrap.get_by_test_id("disposition").select_option("resolved")
                wrap.get_by_test_id("submit-wrap-up").click()
                expect(page.get_by_test_id("chat")).to_have_count(1, timeout=15_000)
                expect(page.get_by_test_id("chat")).to_contain_text("Soy otro cliente")
                assert contacts.GetContact(s.GetContactRequest(name=contact), metadata=auth(sup_a),
                                           timeout=10).state == s.CONTACT_STATE_CLOSED
        finally:
            browser.close()
            proxy.close()

    # B's agent token, as its browser holds it, and A's other agents reach nothing of A's chat.
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
        "SendAttachment": lambda t: conversations.SendAttachment(md.SendAttachmentRequest(
            parent=contact, file_name="x.pdf", content_type="application/pdf", data=b"%PDF-1.4\n"),
            metadata=auth(t), timeout=10),
        "GetAttachment": lambda t: conversations.GetAttachment(md.GetAttachmentRequest(
            name=f"{contact}/attachments/{files[0]}"), metadata=auth(t), timeout=10),
    }
    for who, tok in {"tenant B's agent": mint("--tenant", b, "--role", "agent", "--agent-id", agent_b),
                     "tenant B's agent with A's agent id": mint("--tenant", b, "--role", "agent", "--agent-id",
                                                                agent_a)}.items():
        for rpc, call in calls.items():
            with pytest.raises(grpc.RpcError) as denied:
                call(tok)
            assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED, (rpc, who, denied.value)
