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

