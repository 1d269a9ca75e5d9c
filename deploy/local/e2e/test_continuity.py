"""One customer thread across channels: a customer chats on the tenant's website through the
embeddable widget (Debian's Chromium driven by Playwright), giving a phone number and email in
its pre-chat form, and is served by an agent; later the same person texts the tenant's SMS
number from that phone (a webhook signed by PyPI `twilio`'s own RequestValidator). The SMS
contact reaches an agent whose screen-pop (CRM) is the same customer, with both identities and
the earlier web chat among the interactions; then the same phone writes on WhatsApp (a delivery
signed as Meta signs them): the same customer again, the screen-pop lists the chat and the
SMS, and CRM's timeline of the customer holds all three conversations with their channels. Tenant B, texted from the same phone, knows a
different customer with nothing of A's chat. A phone the pre-chat form cannot read is refused
in the widget, which asks again.
"""
import uuid

import grpc
import pytest

from conftest import OfferedAgent, auth, cli, endpoints, mint, sessions_knows_tenant, wait_for
from test_console import CHROMIUM, SHOTS, console_url
from test_sms import BASE, inbound, secrets_dir, sid, signed
import test_whatsapp as wa
from test_webchat import start_chat
from test_webchat_widget import Site
from test_sms import m  # noqa: F401 (m: the module's stubs)

twilio_validation = pytest.importorskip("twilio.request_validator")


def wa_secrets_dir():
    return wa.secrets_dir()


def tenant_yaml(tenant, key, origin, account, secret, number, wa_id):
    return f"""
apiVersion: centralita.io/v1
kind: Tenant
metadata: {{ name: {tenant} }}
spec:
  displayName: Thread {tenant}
  channels: [chat, sms, social]
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
  sms:
    accountSid: {account}
    authTokenSecret: {secret}
    numbers:
      - {{ number: "{number}", queue: support }}
  whatsapp:
    secretName: {tenant}-whatsapp
    numbers:
      - {{ phoneNumberId: "{wa_id}", number: "{number}", queue: support }}
"""


def test_a_web_chat_customer_who_later_texts_reaches_an_agent_who_sees_both(m, tmp_path):  # noqa: F811
    from playwright.sync_api import expect, sync_playwright
    from centralita.crm.v1 import crm_pb2 as c, crm_pb2_grpc as cg

    eps = endpoints()
    run = uuid.uuid4().hex[:8]
    a, b = f"thr-{run}", f"thr-{run}-b"
    key_a, key_b = f"wk_{run}_a_0123456789", f"wk_{run}_b_0123456789"
    num = int(run, 16) % 10_000_000
    num_a, num_b, phone = f"+1557{num:07d}", f"+1558{num:07d}", f"+3461{num:07d}"
    acc_a, acc_b, tok_a, tok_b = "AC" + uuid.uuid4().hex, "AC" + uuid.uuid4().hex, uuid.uuid4().hex, uuid.uuid4().hex
    for secret, token in ((f"{a}-twilio", tok_a), (f"{b}-twilio", tok_b)):
        d = secrets_dir() / secret
        d.mkdir(parents=True, exist_ok=True)
        (d / "authToken").write_text(token + "\n")
    wa_id_a, wa_id_b, app_a = f"7{num:07d}1", f"7{num:07d}2", f"app-{uuid.uuid4().hex}"
    for t in (a, b):
        d = wa_secrets_dir() / f"{t}-whatsapp"
        d.mkdir(parents=True, exist_ok=True)
        for k, v in (("appSecret", app_a), ("accessToken", "EAA" + uuid.uuid4().hex), ("verifyToken", "vt-1")):
            (d / k).write_text(v + "\n")
    site = Site(f"{console_url()}/widget/centralita-chat.js", BASE, a, key_a, extra='data-prechat="true"')
    path = tmp_path / "tenants.yaml"
    path.write_text(tenant_yaml(a, key_a, site.origin, acc_a, f"{a}-twilio", num_a, wa_id_a) + "---\n"
                    + tenant_yaml(b, key_b, "http://127.0.0.1:1", acc_b, f"{b}-twilio", num_b, wa_id_b))
    cli("admin", "tenant", "apply", "-f", str(path))
    contacts = m.sg.ContactServiceStub(grpc.insecure_channel(eps["sessions"]))
    for t in (a, b):
        assert sessions_knows_tenant(contacts, m.s, mint("--tenant", t, "--role", "supervisor")), t
    # media knows A's widget once a wrong key is refused as such (401), not as unknown (404).
    assert wait_for(lambda: start_chat(a, "wrong-key", site.origin)[0] == 401, 60), "media never saw the tenant"
    conversations = m.mg.ConversationServiceStub(grpc.insecure_channel(eps["media"]))
    crm = cg.CustomerServiceStub(grpc.insecure_channel(eps["crm"]))
    chat_agent = OfferedAgent(m, a, f"thr-chat-{run}", m.t.CHANNEL_CHAT)
    sms_agent = OfferedAgent(m, a, f"thr-sms-{run}", m.t.CHANNEL_SMS)
    b_agent = OfferedAgent(m, b, f"thr-b-{run}", m.t.CHANNEL_SMS)
    wa_agent = OfferedAgent(m, a, f"thr-wa-{run}", m.t.CHANNEL_SOCIAL)

    def accept(agent):
        assert wait_for(lambda: agent.offers or agent.errors, 30), "no offer"
        assert not agent.errors, agent.errors
        offer = agent.offers[-1]
        agent.contacts.AcceptContact(m.s.AcceptContactRequest(name=offer.name, offer_id=offer.offer_id),
                                     metadata=auth(agent.token), timeout=10)
        return offer.name

    def finish(agent, contact):
        agent.contacts.EndContact(m.s.EndContactRequest(name=contact), metadata=auth(agent.token), timeout=10)
        agent.contacts.WrapUpContact(m.s.WrapUpContactRequest(name=contact, disposition="resolved"),
                                     metadata=auth(agent.token), timeout=10)

    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            try:
                page = browser.new_context(viewport={"width": 1100, "height": 760}, locale="es-ES").new_page()
                page.goto(site.origin)
                widget = page.locator("#centralita-chat")
                widget.get_by_test_id("chat-launcher").click()
                # A number the form cannot read (no country code) is refused; the form asks again.
                expect(widget.get_by_test_id("chat-prechat")).to_be_visible()
                widget.get_by_test_id("chat-phone").fill(phone[3:])
                widget.get_by_test_id("chat-start").click()
                expect(widget.get_by_test_id("chat-notice")).to_contain_text("No se pudo iniciar el chat", timeout=10_000)
                expect(widget.get_by_test_id("chat-prechat")).to_be_visible()
                assert not chat_agent.offers
                spaced = f"{phone[:3]} {phone[3:6]} {phone[6:]}"
                widget.get_by_test_id("chat-phone").fill(spaced)
                widget.get_by_test_id("chat-email").fill(f"Lucia.{run}@Example.com")
                widget.get_by_test_id("chat-start").click()
                chat_contact = accept(chat_agent)
                widget.get_by_test_id("chat-input").fill("Quiero cambiar la dirección de mi póliza")
                widget.get_by_test_id("chat-send").click()
                assert wait_for(lambda: any(x.text == "Quiero cambiar la dirección de mi póliza" for x in
                                            conversations.ListMessages(m.md.ListMessagesRequest(parent=chat_contact),
                                                                       metadata=auth(chat_agent.token),
                                                                       timeout=10).messages), 15)
                conversations.SendMessage(m.md.SendMessageRequest(parent=chat_contact, text="Hecho, gracias",
                                                                  request_id=f"{run}-r"),
                                          metadata=auth(chat_agent.token), timeout=10)
                expect(widget.locator("li.agent")).to_have_text(["Hecho, gracias"], timeout=10_000)
                page.screenshot(path=str(SHOTS / "webchat-widget-prechat.png"))
            finally:
                browser.close()
        finish(chat_agent, chat_contact)

        # Days later, the same person texts A's number from that phone.
        status, _ = signed(tok_a, f"/sms/twilio/{a}", inbound(acc_a, sid(), phone, num_a, "Hola, soy yo otra vez"))
        assert status == 200
        sms_contact = accept(sms_agent)
        assert sms_contact != chat_contact

        def screen_pop(agent, contact):
            return crm.GetScreenPop(c.GetScreenPopRequest(contact=contact, interaction_count=10),
                                    metadata=auth(agent.token), timeout=10)

        def both():
            pop = screen_pop(sms_agent, sms_contact)
            return pop if chat_contact in [i.contact for i in pop.interactions] else None

        assert wait_for(both, 30), screen_pop(sms_agent, sms_contact)
        pop = both()
        kinds = {(i.kind, i.value) for i in pop.customer.identities}
        assert (c.IDENTITY_KIND_PHONE, phone) in kinds and (c.IDENTITY_KIND_EMAIL, f"lucia.{run}@example.com") in kinds, kinds
        assert any(k == c.IDENTITY_KIND_CHAT for k, _ in kinds), kinds
        earlier = [i for i in pop.interactions if i.contact == chat_contact][0]
        assert earlier.channel == m.t.CHANNEL_CHAT and f"thr-chat-{run}" in earlier.agents, earlier
        # The SMS agent, now holding this customer's contact, reads the earlier chat through
        # CRM's timeline, not the conversation itself (only its holder and supervisors do).
        with pytest.raises(grpc.RpcError) as denied:
            conversations.ListMessages(m.md.ListMessagesRequest(parent=chat_contact), metadata=auth(sms_agent.token),
                                       timeout=10)
        assert denied.value.code() in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.NOT_FOUND)

        finish(sms_agent, sms_contact)

        # Later still, WhatsApp from the same phone: the same customer, and CRM's timeline of
        # that customer lists the web chat, the SMS and the WhatsApp conversation.
        body = wa.delivery(wa_id_a, [wa.text(phone[1:], f"wamid.{run}thr", "Y ahora por WhatsApp")])
        assert wa.post(a, body, wa.sign(app_a, body))[0] == 200
        wa_contact = accept(wa_agent)

        def all_three():
            pop = screen_pop(wa_agent, wa_contact)
            seen = [i.contact for i in pop.interactions]
            return pop if chat_contact in seen and sms_contact in seen else None

        assert wait_for(all_three, 30), screen_pop(wa_agent, wa_contact)
        assert all_three().customer.name == pop.customer.name, "one customer on every channel"
        admin_a = mint("--tenant", a, "--role", "tenant_admin")
        entries = crm.ListTimeline(c.ListTimelineRequest(customer=pop.customer.name), metadata=auth(admin_a),
                                   timeout=10).entries
        channels = {e.interaction.contact: e.interaction.channel for e in entries if e.WhichOneof("entry") == "interaction"}
        assert {chat_contact: m.t.CHANNEL_CHAT, sms_contact: m.t.CHANNEL_SMS, wa_contact: m.t.CHANNEL_SOCIAL}.items() \
            <= channels.items(), channels

        # Tenant B, texted from the same phone: its own customer, nothing of A's chat.
        status, _ = signed(tok_b, f"/sms/twilio/{b}", inbound(acc_b, sid(), phone, num_b, "Hola"))
        assert status == 200
        b_contact = accept(b_agent)

        def b_pop():
            pop = screen_pop(b_agent, b_contact)
            return pop if pop.customer.name else None

        assert wait_for(b_pop, 30), screen_pop(b_agent, b_contact)
        pb_pop = b_pop()
        assert pb_pop.customer.name != pop.customer.name
        assert {i.kind for i in pb_pop.customer.identities} == {c.IDENTITY_KIND_PHONE}
        assert chat_contact not in [i.contact for i in pb_pop.interactions]
        with pytest.raises(grpc.RpcError) as denied:
            screen_pop(b_agent, chat_contact)
        assert denied.value.code() in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.NOT_FOUND)
    finally:
        site.close()
