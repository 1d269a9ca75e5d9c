"""The agent desktop's call controls in a real browser (Debian's Chromium driven by Playwright):
an agent accepts a voice contact, puts the customer on hold and takes them back, pauses the
call's recording (PCI) and resumes it, and
transfers the contact to another queue of the tenant, where another agent (over gRPC) is
offered it. Each step is checked through sessions' API, not only on the screen. The
transfer form lists the tenant's own queues only, and the same agent cannot transfer into
another tenant's queue through the API either.
"""
import uuid

import grpc
import pytest

from conftest import auth, cli, endpoints, mint, tenant_manifest, wait_for
from test_console import CHROMIUM, SHOTS, console_url, m, sign_in  # noqa: F401 (m: the module's stubs)


def test_hold_resume_and_transfer_from_the_desktop(m, tmp_path):  # noqa: F811
    from playwright.sync_api import expect, sync_playwright

    s = m.s
    eps = endpoints()
    run = uuid.uuid4().hex[:8]
    tenant, other = f"ctl-{run}", f"ctl-{run}-b"
    # Two queues in A (the second one through the one-queue helper's flow mapping).
    queues = ("id: support, displayName: Support, offerTimeoutSeconds: 60, afterContactWorkSeconds: 300 }\n"
              "      - { id: billing, displayName: Billing, offerTimeoutSeconds: 60")
    path = tmp_path / "tenants.yaml"
    path.write_text(tenant_manifest(tenant, queues, display=f"Controls {tenant}", channels="voice, chat",
                                    recording="all, allowPause: true")
                    + "---\n" + tenant_manifest(other, "id: claims, displayName: Claims B", display="Other B"))
    cli("admin", "tenant", "apply", "-f", str(path))
    bpo, admin = mint("--role", "bpo_admin"), mint("--tenant", tenant, "--role", "tenant_admin")
    channel = mint("--tenant", tenant, "--role", "channel")
    sessions = grpc.insecure_channel(eps["sessions"])
    agents, contacts = m.sg.AgentServiceStub(sessions), m.sg.ContactServiceStub(sessions)

    def known():
        try:
            for tok in (admin, mint("--tenant", other, "--role", "tenant_admin")):
                contacts.ListQueueStats(s.ListQueueStatsRequest(), metadata=auth(tok), timeout=5)
            return True
        except grpc.RpcError:
            return False

    assert wait_for(known, 60), "sessions never saw the tenants"
    ana, bob = f"ana-{run}", f"bob-{run}"
    voice = s.ChannelCapacity(channel=m.t.CHANNEL_VOICE, max_contacts=1, exclusive=True)
    for agent, queue in ((ana, "support"), (bob, "billing")):
        agents.UpsertAgent(s.UpsertAgentRequest(agent=s.Agent(
            name=f"agents/{agent}", display_name=agent, capacity=[voice],
            queues=[s.QueueAssignment(tenant=tenant, queue=queue)])), metadata=auth(bpo), timeout=10)
    bob_token = mint("--tenant", tenant, "--role", "agent", "--agent-id", bob)
    agents.SignIn(s.SignInRequest(name=f"agents/{bob}", available=True), metadata=auth(bob_token), timeout=10)
    # An agent of tenant B only, signed in: never in A's transfer directory.
    carl = f"carl-{run}"
    agents.UpsertAgent(s.UpsertAgentRequest(agent=s.Agent(
        name=f"agents/{carl}", display_name=carl, capacity=[voice],
        queues=[s.QueueAssignment(tenant=other, queue="claims")])), metadata=auth(bpo), timeout=10)
    carl_token = mint("--tenant", other, "--role", "agent", "--agent-id", carl)
    agents.SignIn(s.SignInRequest(name=f"agents/{carl}", available=True), metadata=auth(carl_token), timeout=10)

    def get(name):
        return contacts.GetContact(s.GetContactRequest(name=name), metadata=auth(admin), timeout=10)

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-GB").new_page()
            sign_in(page, console_url(), tenant, "agent", ana)
            expect(page.get_by_test_id("stream-status")).to_have_text("connected", timeout=30_000)
            page.get_by_test_id("go-available").click()
            expect(page.get_by_test_id("agent-state")).to_have_text("Available", timeout=10_000)

            phone = f"+3491{int(run, 16) % 10_000_000:07d}"
            call = contacts.CreateContact(s.CreateContactRequest(contact=s.Contact(
                channel=m.t.CHANNEL_VOICE, queue="support",
                customer_identities=[m.c.Identity(kind=m.c.IDENTITY_KIND_PHONE, value=phone)]),
                request_id=f"{run}-call"), metadata=auth(channel), timeout=10)
            expect(page.get_by_test_id("offer")).to_be_visible(timeout=30_000)
            page.get_by_test_id("accept").click()
            card = page.get_by_test_id("contact")
            expect(card.get_by_test_id("call-controls")).to_be_visible(timeout=15_000)
            assert get(call.name).state == s.CONTACT_STATE_CONNECTED

            # Hold, then resume: each reaches sessions and shows on the card.
            card.get_by_test_id("hold").click()
            expect(card.get_by_test_id("on-hold")).to_be_visible(timeout=10_000)
            assert wait_for(lambda: get(call.name).on_hold, 10), "the hold did not reach sessions"
            page.screenshot(path=str(SHOTS / "console-call-controls.png"), full_page=True)
            card.get_by_test_id("resume").click()
            expect(card.get_by_test_id("on-hold")).to_have_count(0, timeout=10_000)
            assert wait_for(lambda: not get(call.name).on_hold, 10), "the resume did not reach sessions"

            # PCI pause of the call's recording, and back.
            card.get_by_test_id("pause-recording").click()
            expect(card.get_by_test_id("recording-paused")).to_be_visible(timeout=10_000)
            assert wait_for(lambda: get(call.name).recording_paused, 10), "the pause did not reach sessions"
            card.get_by_test_id("resume-recording").click()
            expect(card.get_by_test_id("recording-paused")).to_have_count(0, timeout=10_000)
            assert wait_for(lambda: not get(call.name).recording_paused, 10), "the resume did not reach sessions"

            # The transfer form offers A's queues and nothing of B's.
            options = card.get_by_test_id("transfer-queue").locator("option").all_inner_texts()
            assert sorted(options) == ["Billing", "Support"], options
            assert "Claims B" not in page.content()

            # The transfer directory (ListTransferTargets): the queue chosen with who waits and
            # who is available; A's signed-in agents with their state, not B's Carl.
            card.get_by_test_id("transfer-queue").select_option("billing")
            expect(card.get_by_test_id("transfer-queue-load")).to_have_text("0 waiting · 1 available",
                                                                             timeout=10_000)
            agent_options = card.get_by_test_id("transfer-agent").locator("option")
            expect(agent_options).to_have_count(2, timeout=10_000)
            assert agent_options.all_inner_texts() == ["— the queue —", f"{bob} · Available"]
            assert carl not in page.content()
            directory = contacts.ListTransferTargets(s.ListTransferTargetsRequest(name=call.name),
                                                     metadata=auth(mint("--tenant", tenant, "--role", "agent",
                                                                        "--agent-id", ana)), timeout=10)
            assert [a.name for a in directory.agents] == [f"agents/{bob}"], directory
            with pytest.raises(grpc.RpcError) as refused:
                contacts.ListTransferTargets(s.ListTransferTargetsRequest(name=call.name),
                                             metadata=auth(carl_token), timeout=10)
            assert refused.value.code() == grpc.StatusCode.NOT_FOUND

            # Transfer to billing: the contact leaves Ana's desktop and Bob is offered it.
            card.get_by_test_id("transfer-queue").select_option("billing")
            card.get_by_test_id("transfer-submit").click()
            expect(page.get_by_test_id("no-contacts")).to_be_visible(timeout=15_000)

            def offered_to_bob():
                c = get(call.name)
                return c if c.state == s.CONTACT_STATE_OFFERED and c.agent_id == bob else None

            assert wait_for(offered_to_bob, 30), get(call.name)
            moved = offered_to_bob()
            assert moved.queue == "billing" and moved.transfer_count == 1 and ana in moved.previous_agents, moved
            contacts.AcceptContact(s.AcceptContactRequest(name=moved.name, offer_id=moved.offer_id),
                                   metadata=auth(bob_token), timeout=10)
            assert get(call.name).agent_id == bob
            me = agents.GetAgent(s.GetAgentRequest(name=f"agents/{ana}"), metadata=auth(admin), timeout=10)
            assert call.name not in me.contacts, me

            # Through the API, a holder cannot send a contact into another tenant's queue.
            ana_token = mint("--tenant", tenant, "--role", "agent", "--agent-id", ana)
            second = contacts.CreateContact(s.CreateContactRequest(contact=s.Contact(
                channel=m.t.CHANNEL_VOICE, queue="support"), request_id=f"{run}-second"), metadata=auth(channel), timeout=10)

            def offered_to_ana():
                c = get(second.name)
                return c if c.state == s.CONTACT_STATE_OFFERED and c.agent_id == ana else None

            assert wait_for(offered_to_ana, 30), get(second.name)
            o = offered_to_ana()
            contacts.AcceptContact(s.AcceptContactRequest(name=o.name, offer_id=o.offer_id), metadata=auth(ana_token),
                                   timeout=10)
            with pytest.raises(grpc.RpcError) as refused:
                contacts.TransferContact(s.TransferContactRequest(name=o.name, queue="claims"), metadata=auth(ana_token),
                                         timeout=10)
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, refused.value
            assert get(second.name).queue == "support" and get(second.name).agent_id == ana
            # And another tenant's agent cannot hold or transfer A's contact at all.
            intruder = mint("--tenant", other, "--role", "agent", "--agent-id", ana)
            for call_ in (lambda md: contacts.HoldContact(s.HoldContactRequest(name=o.name), metadata=md, timeout=10),
                          lambda md: contacts.TransferContact(s.TransferContactRequest(name=o.name, queue="support"),
                                                              metadata=md, timeout=10)):
                with pytest.raises(grpc.RpcError) as denied:
                    call_(auth(intruder))
                assert denied.value.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.PERMISSION_DENIED), denied.value
            assert not get(second.name).on_hold
        finally:
            browser.close()



def test_consult_then_conference_and_consult_then_transfer_from_the_desktop(m, tmp_path):  # noqa: F811
    """Warm transfer and conference from the browser: Ana consults Bob (the leg is offered to
    Bob, who accepts over gRPC), Conference puts Bob on the customer's contact beside Ana, and
    Ana takes him off again; on a
    second call a transfer before Bob answers is refused and shown, the consult is cancelled
    and Ana keeps the customer; a third one is
    completed as a transfer that hands the customer to Bob. Each step is checked in sessions;
    another tenant's agent cannot complete A's consult."""
    from playwright.sync_api import expect, sync_playwright

    s = m.s
    eps = endpoints()
    run = uuid.uuid4().hex[:8]
    tenant, other = f"cns-{run}", f"cns-{run}-b"
    path = tmp_path / "tenants.yaml"
    path.write_text(tenant_manifest(tenant, "id: support, displayName: Support, offerTimeoutSeconds: 60, "
                                    "preferredAgentSeconds: 30", display=f"Consult {tenant}", channels="voice")
                    + "---\n" + tenant_manifest(other, "id: claims, displayName: Claims B", display="Other B"))
    cli("admin", "tenant", "apply", "-f", str(path))
    bpo, admin = mint("--role", "bpo_admin"), mint("--tenant", tenant, "--role", "tenant_admin")
    channel = mint("--tenant", tenant, "--role", "channel")
    sessions = grpc.insecure_channel(eps["sessions"])
    agents, contacts = m.sg.AgentServiceStub(sessions), m.sg.ContactServiceStub(sessions)

    def known():
        try:
            contacts.ListQueueStats(s.ListQueueStatsRequest(), metadata=auth(admin), timeout=5)
            return True
        except grpc.RpcError:
            return False

    assert wait_for(known, 60), "sessions never saw the tenant"
    ana, bob = f"ana-{run}", f"bob-{run}"
    voice = s.ChannelCapacity(channel=m.t.CHANNEL_VOICE, max_contacts=1, exclusive=True)
    for agent in (ana, bob):
        agents.UpsertAgent(s.UpsertAgentRequest(agent=s.Agent(
            name=f"agents/{agent}", display_name=agent, capacity=[voice],
            queues=[s.QueueAssignment(tenant=tenant, queue="support")])), metadata=auth(bpo), timeout=10)
    bob_token = mint("--tenant", tenant, "--role", "agent", "--agent-id", bob)

    def get(name):
        return contacts.GetContact(s.GetContactRequest(name=name), metadata=auth(admin), timeout=10)

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-GB").new_page()
            sign_in(page, console_url(), tenant, "agent", ana)
            expect(page.get_by_test_id("stream-status")).to_have_text("connected", timeout=30_000)
            page.get_by_test_id("go-available").click()
            expect(page.get_by_test_id("agent-state")).to_have_text("Available", timeout=10_000)

            def call_to_ana(tag):
                # Bob stays signed out until Ana holds the call, so the customer reaches Ana.
                agents.SignOut(s.SignOutRequest(name=f"agents/{bob}"), metadata=auth(bob_token), timeout=10)
                call = contacts.CreateContact(s.CreateContactRequest(contact=s.Contact(
                    channel=m.t.CHANNEL_VOICE, queue="support"), request_id=f"{run}-{tag}"),
                    metadata=auth(channel), timeout=10)
                expect(page.get_by_test_id("offer")).to_be_visible(timeout=30_000)
                page.get_by_test_id("accept").click()
                card = page.get_by_test_id("contact")
                expect(card.get_by_test_id("consult")).to_be_visible(timeout=15_000)
                assert get(call.name).agent_id == ana
                agents.SignIn(s.SignInRequest(name=f"agents/{bob}", available=True), metadata=auth(bob_token), timeout=10)
                return call, card

            def consult_bob(call, card, answer=True):
                # Bob, signed in a moment ago, shows in the directory within its 3 s refresh.
                expect(card.get_by_test_id("transfer-agent").locator(f'option[value="{bob}"]')).to_have_count(
                    1, timeout=15_000)
                card.get_by_test_id("transfer-agent").select_option(bob)
                card.get_by_test_id("consult").click()
                expect(card.get_by_test_id("consulting")).to_be_visible(timeout=15_000)
                held = get(call.name)
                assert held.on_hold and held.consult_leg, held
                leg = held.consult_leg

                def leg_offered():
                    got = get(leg)
                    return got if got.state == s.CONTACT_STATE_OFFERED and got.agent_id == bob else None

                assert wait_for(leg_offered, 30), get(leg)
                if answer:
                    o = leg_offered()
                    contacts.AcceptContact(s.AcceptContactRequest(name=leg, offer_id=o.offer_id),
                                           metadata=auth(bob_token), timeout=10)
                    assert wait_for(lambda: get(leg).state == s.CONTACT_STATE_CONNECTED, 10), get(leg)
                return leg

            # 1. Consult, then conference: Bob joins the customer's contact beside Ana.
            first, card = call_to_ana("1")
            consult_bob(first, card)
            # Another tenant's agent cannot complete A's consult.
            intruder = mint("--tenant", other, "--role", "agent", "--agent-id", ana)
            with pytest.raises(grpc.RpcError) as denied:
                contacts.CompleteConsult(s.CompleteConsultRequest(
                    name=first.name, outcome=s.CompleteConsultRequest.OUTCOME_CONFERENCE), metadata=auth(intruder),
                    timeout=10)
            assert denied.value.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.PERMISSION_DENIED)
            card.get_by_test_id("consult-conference").click()
            expect(card.get_by_test_id("conference-with")).to_contain_text(bob, timeout=15_000)

            def conferenced():
                c = get(first.name)
                on = {p.agent_id for p in c.participants if not p.HasField("leave_time")}
                return c if on == {ana, bob} and not c.on_hold else None

            assert wait_for(conferenced, 15), (lambda c: (list(c.participants), c.on_hold))(get(first.name))
            expect(card.get_by_test_id("consult-conference")).to_have_count(0)
            page.screenshot(path=str(SHOTS / "console-conference.png"), full_page=True)
            # Ana takes Bob off the call and keeps the customer.
            card.get_by_test_id("consult-cancel").click()
            expect(card.get_by_test_id("consulting")).to_have_count(0, timeout=15_000)

            def bob_left():
                c = get(first.name)
                on = {p.agent_id for p in c.participants if not p.HasField("leave_time")}
                return on == {ana} and c.agent_id == ana and not c.consult_leg

            assert wait_for(bob_left, 15), get(first.name)
            card.get_by_test_id("end-contact").click()
            page.get_by_test_id("wrap-up").get_by_test_id("disposition").select_option("resolved")
            page.get_by_test_id("submit-wrap-up").click()
            expect(page.get_by_test_id("no-contacts")).to_be_visible(timeout=15_000)

            # 2. Consult cancelled while the leg still rings: Ana keeps the held customer.
            second, card = call_to_ana("2")
            leg = consult_bob(second, card, answer=False)
            # A transfer before Bob answers is refused by sessions, and the desktop says so.
            card.get_by_test_id("consult-transfer").click()
            expect(page.get_by_test_id("desktop-error")).to_be_visible(timeout=10_000)
            assert get(second.name).agent_id == ana and get(second.name).consult_leg == leg
            card.get_by_test_id("consult-cancel").click()
            expect(card.get_by_test_id("consulting")).to_have_count(0, timeout=15_000)
            assert wait_for(lambda: not get(second.name).consult_leg, 10), get(second.name)
            assert get(leg).state != s.CONTACT_STATE_OFFERED and get(second.name).agent_id == ana
            card.get_by_test_id("resume").click()
            assert wait_for(lambda: not get(second.name).on_hold, 10)

            # 3. Consult, then complete the transfer: the customer goes to Bob, Ana is free.
            card.get_by_test_id("end-contact").click()
            page.get_by_test_id("wrap-up").get_by_test_id("disposition").select_option("resolved")
            page.get_by_test_id("submit-wrap-up").click()
            expect(page.get_by_test_id("no-contacts")).to_be_visible(timeout=15_000)
            third, card = call_to_ana("3")
            consult_bob(third, card)
            card.get_by_test_id("consult-transfer").click()
            expect(page.get_by_test_id("no-contacts")).to_be_visible(timeout=15_000)
            assert wait_for(lambda: get(third.name).agent_id == bob, 10), get(third.name)
            done = get(third.name)
            assert done.state == s.CONTACT_STATE_CONNECTED and ana in done.previous_agents, done
        finally:
            browser.close()


def test_the_script_greets_the_customer_and_the_resolution_answer_lands_in_crm(m, tmp_path):  # noqa: F811
    """The desktop's script is personalised with CRM's profile (name, VIP) and the tenant's
    and queue's names, in the agent's language; at wrap-up the post-resolution question's
    answer is recorded in CRM's timeline for that customer and contact (an empty answer is
    refused in the page). A queue with its own script and question in the tenant manifest
    shows those instead, filled in, and its question is the one recorded. Tenant B's agent
    cannot record an answer on A's customer."""
    from google.protobuf import field_mask_pb2
    from playwright.sync_api import expect, sync_playwright

    s, c = m.s, m.c
    eps = endpoints()
    run = uuid.uuid4().hex[:8]
    tenant, other = f"scr-{run}", f"scr-{run}-b"
    path = tmp_path / "tenants.yaml"
    receipts = ('id: recibos, displayName: Recibos, offerTimeoutSeconds: 60, '
                'script: { es: ["Hola {customer}, le atiende {queue} de {tenant}.", "Pida el número de recibo."], '
                'en: ["Hello {customer}, {queue} at {tenant} here."] }, '
                'resolutionQuestion: { es: "¿Le ha quedado claro el recibo?", en: "Is the receipt clear now?" }, '
                'dispositionCodes: [aclarado, devolucion]')
    path.write_text(tenant_manifest(tenant, "id: claims, displayName: Siniestros, offerTimeoutSeconds: 60 }\n"
                                    f"      - {{ {receipts}", display=f"Acme Seguros {run}", channels="chat")
                    + "---\n" + tenant_manifest(other, "id: claims", display="Other B", channels="chat"))
    cli("admin", "tenant", "apply", "-f", str(path))
    bpo, admin = mint("--role", "bpo_admin"), mint("--tenant", tenant, "--role", "tenant_admin")
    channel = mint("--tenant", tenant, "--role", "channel")
    sessions = grpc.insecure_channel(eps["sessions"])
    agents, contacts = m.sg.AgentServiceStub(sessions), m.sg.ContactServiceStub(sessions)
    crm = m.cg.CustomerServiceStub(grpc.insecure_channel(eps["crm"]))

    def known():
        try:
            contacts.ListQueueStats(s.ListQueueStatsRequest(), metadata=auth(admin), timeout=5)
            crm.FindCustomers(c.FindCustomersRequest(identity=c.Identity(kind=c.IDENTITY_KIND_CHAT, value="x")),
                              metadata=auth(admin), timeout=5)
            return True
        except grpc.RpcError:
            return False

    assert wait_for(known, 60), "sessions or crm never saw the tenant"
    visitor = f"visitor-{run}"
    customer = crm.ResolveCustomer(c.ResolveCustomerRequest(
        identities=[c.Identity(kind=c.IDENTITY_KIND_CHAT, value=visitor)], display_name="Lucía Gil"),
        metadata=auth(channel), timeout=10).customer
    crm.UpdateCustomer(c.UpdateCustomerRequest(customer=c.Customer(name=customer.name, value_tier=c.VALUE_TIER_VIP),
                                               update_field_mask=field_mask_pb2.FieldMask(paths=["value_tier"])),
                       metadata=auth(admin), timeout=10)
    ana = f"ana-{run}"
    agents.UpsertAgent(s.UpsertAgentRequest(agent=s.Agent(
        name=f"agents/{ana}", display_name=ana, capacity=[s.ChannelCapacity(channel=m.t.CHANNEL_CHAT, max_contacts=1)],
        queues=[s.QueueAssignment(tenant=tenant, queue=q) for q in ("claims", "recibos")])),
        metadata=auth(bpo), timeout=10)

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_context(viewport={"width": 1280, "height": 900}, locale="es-ES").new_page()
            sign_in(page, console_url(), tenant, "agent", ana)
            page.get_by_test_id("lang").select_option("es")
            expect(page.get_by_test_id("stream-status")).to_have_text("conectado", timeout=30_000)
            page.get_by_test_id("go-available").click()
            made = contacts.CreateContact(s.CreateContactRequest(contact=s.Contact(
                channel=m.t.CHANNEL_CHAT, queue="claims",
                customer_identities=[c.Identity(kind=c.IDENTITY_KIND_CHAT, value=visitor)]),
                request_id=f"{run}-1"), metadata=auth(channel), timeout=10)
            expect(page.get_by_test_id("offer")).to_be_visible(timeout=30_000)
            page.get_by_test_id("accept").click()
            card = page.get_by_test_id("contact")
            script = card.get_by_test_id("script")
            expect(script).to_contain_text(f"Hola Lucía Gil, gracias por contactar con Acme Seguros {run}", timeout=20_000)
            expect(script).to_contain_text("Atiende la cola Siniestros.")
            expect(script).to_contain_text("Cliente VIP")
            card.get_by_test_id("end-contact").click()
            wrap = page.get_by_test_id("wrap-up")
            expect(wrap.get_by_test_id("resolution")).to_be_visible(timeout=15_000)
            wrap.get_by_test_id("record-answer").click()
            expect(wrap.get_by_test_id("answer-error")).to_have_text("Escriba primero la respuesta del cliente.")
            wrap.get_by_test_id("resolution-answer").fill("Sí, todo resuelto")
            wrap.get_by_test_id("record-answer").click()
            expect(wrap.get_by_test_id("record-answer")).to_have_text("Respuesta registrada", timeout=10_000)
            page.screenshot(path=str(SHOTS / "console-script-answer.png"), full_page=True)
            wrap.get_by_test_id("disposition").select_option("resolved")
            wrap.get_by_test_id("submit-wrap-up").click()
            expect(page.get_by_test_id("no-contacts")).to_be_visible(timeout=15_000)

            # The receipts queue has its own script and question in the manifest.
            second = contacts.CreateContact(s.CreateContactRequest(contact=s.Contact(
                channel=m.t.CHANNEL_CHAT, queue="recibos",
                customer_identities=[c.Identity(kind=c.IDENTITY_KIND_CHAT, value=visitor)]),
                request_id=f"{run}-2"), metadata=auth(channel), timeout=10)
            expect(page.get_by_test_id("offer")).to_be_visible(timeout=30_000)
            page.get_by_test_id("accept").click()
            script = page.get_by_test_id("contact").get_by_test_id("script")
            expect(script).to_contain_text(f"Hola Lucía Gil, le atiende Recibos de Acme Seguros {run}.",
                                           timeout=20_000)
            lines = script.locator("li").all_inner_texts()
            assert lines[1:] == ["Pida el número de recibo.",
                                 "Cliente VIP: ofrezca la línea preferente y no transfiera sin presentarle."], lines
            page.get_by_test_id("contact").get_by_test_id("end-contact").click()
            wrap = page.get_by_test_id("wrap-up")
            expect(wrap.get_by_test_id("resolution")).to_contain_text("¿Le ha quedado claro el recibo?",
                                                                     timeout=15_000)
            wrap.get_by_test_id("resolution-answer").fill("Sí, gracias")
            wrap.get_by_test_id("record-answer").click()
            expect(wrap.get_by_test_id("record-answer")).to_have_text("Respuesta registrada", timeout=10_000)
            # The queue's own disposition codes, not the tenant's; sessions refuses the tenant's.
            codes = wrap.get_by_test_id("disposition").locator("option").evaluate_all("os => os.map(o => o.value)")
            assert [x for x in codes if x] == ["aclarado", "devolucion"], codes
            with pytest.raises(grpc.RpcError) as not_this_queue:
                contacts.WrapUpContact(s.WrapUpContactRequest(name=second.name, disposition="resolved"),
                                       metadata=auth(mint("--tenant", tenant, "--role", "agent", "--agent-id", ana)),
                                       timeout=10)
            assert not_this_queue.value.code() == grpc.StatusCode.INVALID_ARGUMENT, not_this_queue.value
            assert "queue recibos" in not_this_queue.value.details()
            wrap.get_by_test_id("disposition").select_option("aclarado")
            wrap.get_by_test_id("submit-wrap-up").click()
            expect(page.get_by_test_id("no-contacts")).to_be_visible(timeout=15_000)
        finally:
            browser.close()

    timeline = crm.ListTimeline(c.ListTimelineRequest(customer=customer.name, page_size=50), metadata=auth(admin),
                                timeout=10).entries
    answers = [e.answer for e in timeline if e.WhichOneof("entry") == "answer"]
    assert sorted((x.question, x.answer, x.contact, x.asked_by) for x in answers) == sorted([
        ("¿Hemos resuelto hoy el motivo de su contacto?", "Sí, todo resuelto", made.name, ana),
        ("¿Le ha quedado claro el recibo?", "Sí, gracias", second.name, ana)]), answers
    intruder = mint("--tenant", other, "--role", "agent", "--agent-id", ana)
    with pytest.raises(grpc.RpcError) as denied:
        crm.RecordAnswer(c.RecordAnswerRequest(customer=customer.name, contact=made.name, question="q", answer="a"),
                         metadata=auth(intruder), timeout=10)
    assert denied.value.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.PERMISSION_DENIED)
