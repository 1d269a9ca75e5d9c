"""The embeddable web chat widget in a real browser (Debian's Chromium driven by Playwright):
a page of the tenant's website (served by the test on its own origin, which the tenant's
manifest allows) includes the widget script from the console server, exactly as a tenant
pastes it; the customer chats in it with an agent driven over gRPC (sessions and media's
ConversationService). The widget's connection to media goes through a proxy the test cuts:
messages the agent writes meanwhile arrive once the widget has reconnected, and a message the
customer writes while cut is delivered once — the widget's list equals media's transcript, no
message lost or shown twice. A page on an origin the tenant does not allow gets a refusal in
the widget and no contact; tenant B's agent cannot read the chat.
"""
import http.server
import pathlib
import threading
import uuid

import grpc
import pytest

from conftest import OfferedAgent, auth, cli, mint, sessions_knows_tenant, wait_for
from test_console import CHROMIUM, SHOTS, CuttableProxy, console_url
from test_webchat import BASE, Follow, m, start_chat, tenant_yaml  # noqa: F401 (m: the module's stubs)


class Site:
    """A tenant's website: one page that pastes the widget, on an origin of its own."""

    def __init__(self, script_url, endpoint, tenant, key, extra=""):
        page = f"""<!doctype html><html lang="es"><head><meta charset="utf-8"><title>Seguros {tenant}</title></head>
<body><h1>Seguros {tenant}</h1><p>Bienvenido.</p>
<script src="{script_url}" data-endpoint="{endpoint}" data-tenant="{tenant}" data-widget-key="{key}" data-lang="es" {extra}></script>
</body></html>""".encode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                self.send_response(200)
                self.send_header("content-type", "text/html; charset=utf-8")
                self.send_header("content-length", str(len(page)))
                self.end_headers()
                self.wfile.write(page)

            def log_message(self, *_):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.origin = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


def shown(page):
    """(sequence, sender, text) of each message the widget shows, and its unsent ones."""
    items = page.locator("#centralita-chat").locator("li")
    out = []
    for i in range(items.count()):
        li = items.nth(i)
        out.append((li.get_attribute("data-sequence"), li.get_attribute("class"), li.inner_text()))
    return out


def test_the_widget_on_a_tenants_page_chats_with_an_agent_and_survives_a_drop(m, tmp_path):  # noqa: F811
    from playwright.sync_api import expect, sync_playwright

    run = uuid.uuid4().hex[:8]
    a, b = f"wdg-{run}", f"wdg-{run}-b"
    key_a, key_b = f"wk_{run}_a_0123456789", f"wk_{run}_b_0123456789"
    proxy = CuttableProxy(BASE.removeprefix("http://"))
    site = Site(f"{console_url()}/widget/centralita-chat.js", proxy.url, a, key_a)
    stranger = Site(f"{console_url()}/widget/centralita-chat.js", proxy.url, a, key_a)
    path = tmp_path / "tenants.yaml"
    path.write_text(tenant_yaml(a, key_a, site.origin) + "---\n" + tenant_yaml(b, key_b, "http://127.0.0.1:1"))
    cli("admin", "tenant", "apply", "-f", str(path))
    import grpc as _grpc
    from conftest import endpoints

    contacts = m.sg.ContactServiceStub(_grpc.insecure_channel(endpoints()["sessions"]))
    for t in (a, b):
        assert sessions_knows_tenant(contacts, m.s, mint("--tenant", t, "--role", "supervisor")), t
    # media knows A's widget once a wrong key is refused as such (401), not as unknown (404).
    assert wait_for(lambda: start_chat(a, "wrong-key", site.origin)[0] == 401, 60), "media never saw the tenant"
    media = _grpc.insecure_channel(endpoints()["media"])
    conversations = m.mg.ConversationServiceStub(media)
    agent = OfferedAgent(m, a, f"wdg-agent-{run}", m.t.CHANNEL_CHAT)
    other = OfferedAgent(m, b, f"wdg-other-{run}", m.t.CHANNEL_CHAT)

    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            try:
                page = browser.new_context(viewport={"width": 1100, "height": 760}, locale="es-ES").new_page()
                page.goto(site.origin)
                widget = page.locator("#centralita-chat")
                widget.get_by_test_id("chat-launcher").click()

                # media knows the tenant once the chat starts; the first open may race the
                # tenant feed (404), so the test reloads until it starts.
                def started():
                    return bool(agent.offers) or agent.errors

                if not wait_for(started, 20):
                    for _ in range(10):
                        page.evaluate("sessionStorage.clear()")
                        page.reload()
                        page.locator("#centralita-chat").get_by_test_id("chat-launcher").click()
                        if wait_for(started, 6):
                            break
                assert agent.offers and not agent.errors, (agent.errors, shown(page))
                offer = agent.offers[0]
                contact = offer.name
                assert contact.startswith(f"tenants/{a}/contacts/") and offer.channel == m.t.CHANNEL_CHAT
                agent.contacts.AcceptContact(m.s.AcceptContactRequest(name=contact, offer_id=offer.offer_id),
                                             metadata=auth(agent.token), timeout=10)
                follow = Follow(conversations, m, contact, agent.token)

                # The customer writes in the widget; the agent's stream gets it.
                widget.get_by_test_id("chat-input").fill("Hola, tengo un problema con mi póliza")
                widget.get_by_test_id("chat-send").click()

                def customer_texts():
                    return [e.message.text for e in follow.events
                            if e.WhichOneof("event") == "message" and e.message.sender == m.md.SENDER_KIND_CUSTOMER]

                assert wait_for(lambda: "Hola, tengo un problema con mi póliza" in customer_texts(), 15), follow.events
                # The agent answers and types; the widget shows both.
                conversations.SendTyping(m.md.SendTypingRequest(parent=contact, active=True), metadata=auth(agent.token),
                                        timeout=10)
                expect(widget.get_by_test_id("chat-typing")).to_have_text("El agente está escribiendo…", timeout=10_000)
                conversations.SendMessage(m.md.SendMessageRequest(parent=contact, text="Claro, ¿cuál es el número?",
                                                                  request_id=f"{run}-a1"),
                                          metadata=auth(agent.token), timeout=10)
                expect(widget.locator("li.agent")).to_have_text(["Claro, ¿cuál es el número?"], timeout=10_000)
                expect(widget.get_by_test_id("chat-typing")).to_have_text("")

                # The widget's connection drops. The agent writes twice meanwhile; the customer
                # writes once (kept as unsent until the widget is back).
                proxy.cut()
                expect(widget.get_by_test_id("chat-status")).to_have_text("reconectando…", timeout=10_000)
                for i, text in enumerate(["¿Sigue ahí?", "Le espero."]):
                    conversations.SendMessage(m.md.SendMessageRequest(parent=contact, text=text,
                                                                      request_id=f"{run}-a{i + 2}"),
                                              metadata=auth(agent.token), timeout=10)
                widget.get_by_test_id("chat-input").fill("Es el 4455")
                widget.get_by_test_id("chat-send").click()
                expect(widget.locator("li.pending")).to_have_text(["Es el 4455"])
                page.wait_for_timeout(1500)
                proxy.restore()
                expect(widget.get_by_test_id("chat-status")).to_have_text("", timeout=15_000)
                expect(widget.locator("li.pending")).to_have_count(0, timeout=15_000)
                expect(widget.locator("li.agent")).to_have_text(
                    ["Claro, ¿cuál es el número?", "¿Sigue ahí?", "Le espero."], timeout=15_000)

                # Exactly media's transcript: each message once, in order, the customer's
                # unsent one stored once.
                listed = conversations.ListMessages(m.md.ListMessagesRequest(parent=contact),
                                                    metadata=auth(agent.token), timeout=10).messages
                want = [(str(x.sequence), x.text) for x in listed]
                got = [(seq, text) for seq, _, text in shown(page)]
                assert got == want, (got, want)
                assert [x.text for x in listed].count("Es el 4455") == 1
                assert wait_for(lambda: customer_texts().count("Es el 4455") == 1, 10), customer_texts()
                page.screenshot(path=str(SHOTS / "webchat-widget.png"))

                # Files: the customer's PNG from the widget reaches the agent byte for byte.
                png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR" + run.encode()
                widget.get_by_test_id("chat-attach").set_input_files(
                    files=[{"name": "recibo.png", "mimeType": "image/png", "buffer": png}])

                def files():
                    return [x for x in conversations.ListMessages(m.md.ListMessagesRequest(parent=contact),
                                                                  metadata=auth(agent.token), timeout=10).messages
                            if x.kind == m.md.MESSAGE_KIND_ATTACHMENT]

                assert wait_for(files, 15), shown(page)
                got = conversations.GetAttachment(m.md.GetAttachmentRequest(name=files()[0].attachment.name),
                                                  metadata=auth(agent.token), timeout=10)
                assert got.data == png and got.attachment.file_name == "recibo.png"
                expect(widget.locator("li.customer [data-testid=chat-file]")).to_have_count(1, timeout=10_000)
                # A page of HTML is refused by the widget before it is sent.
                widget.get_by_test_id("chat-attach").set_input_files(
                    files=[{"name": "x.html", "mimeType": "text/html", "buffer": b"<html></html>"}])
                expect(widget.get_by_test_id("chat-notice")).to_contain_text("Este tipo de archivo", timeout=5_000)
                assert len(files()) == 1
                # The agent's PDF appears in the widget and downloads with the same bytes.
                pdf = b"%PDF-1.4\n% condiciones " + run.encode() + b"\n%%EOF\n"
                conversations.SendAttachment(m.md.SendAttachmentRequest(
                    parent=contact, file_name="condiciones.pdf", content_type="application/pdf", data=pdf),
                    metadata=auth(agent.token), timeout=10)
                link = widget.locator("li.agent [data-testid=chat-file]")
                expect(link).to_have_count(1, timeout=10_000)
                try:
                    with page.expect_download(timeout=10_000) as download:
                        link.click()
                except Exception:
                    raise AssertionError(widget.get_by_test_id("chat-notice").inner_text())
                assert download.value.suggested_filename == "condiciones.pdf"
                assert pathlib.Path(download.value.path()).read_bytes() == pdf
                page.screenshot(path=str(SHOTS / "webchat-widget-files.png"))

                # Tenant B's agent cannot read A's chat.
                with pytest.raises(grpc.RpcError) as denied:
                    conversations.ListMessages(m.md.ListMessagesRequest(parent=contact), metadata=auth(other.token),
                                               timeout=10)
                assert denied.value.code() in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.NOT_FOUND)

                # The agent ends the chat: the widget says so and takes no more text.
                agent.contacts.EndContact(m.s.EndContactRequest(name=contact), metadata=auth(agent.token), timeout=10)
                expect(widget.get_by_test_id("chat-notice")).to_have_text("El chat ha terminado.", timeout=15_000)
                expect(widget.get_by_test_id("chat-input")).to_be_disabled()

                # A page on an origin the tenant does not allow: refused, shown, no contact.
                offers_before = len(agent.offers)
                bad = browser.new_context(locale="es-ES").new_page()
                bad.goto(stranger.origin)
                bad.locator("#centralita-chat").get_by_test_id("chat-launcher").click()
                expect(bad.locator("#centralita-chat").get_by_test_id("chat-notice")).to_contain_text(
                    "No se pudo iniciar el chat", timeout=10_000)
                page.wait_for_timeout(2000)
                assert len(agent.offers) == offers_before
            finally:
                browser.close()
    finally:
        proxy.close()
        site.close()
        stranger.close()
