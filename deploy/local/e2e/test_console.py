"""The web console in a real browser (Debian's Chromium driven by Playwright) against the
services `deploy/local/test.sh` started, `centralita-console` among them.

An agent signs in with the development sign-in, goes available, gets an offer for a contact
created through the API (grpcio) with a visible countdown, keeps it across a dropped
connection (an offer made while the browser is offline appears once it is back), accepts,
sees the customer's profile, notes and earlier contact, ends and wraps up with a disposition
(checked through the API), rejects the next offer and goes away with one of the tenant's
reasons. A supervisor's wallboard shows the figures reporting's API returns. An agent and a
supervisor of tenant A see nothing of tenant B. Screenshots of both screens go to the run's
log folder, or to docs/screenshots/ (shown in the README) with CENTRALITA_SCREENSHOTS=docs, so
a test run leaves the checkout as it was.
"""
import os
import re
import socket
import subprocess
import threading
import time
import uuid

import grpc
import pytest

from conftest import LOGS, REPO, auth, cli, endpoints, mint, tenant_manifest, wait_for

CHROMIUM = "/usr/bin/chromium"
SHOTS = REPO / "docs/screenshots" if os.environ.get("CENTRALITA_SCREENSHOTS") == "docs" else LOGS / "screenshots"
SHOTS.mkdir(parents=True, exist_ok=True)


@pytest.fixture(scope="module")
def m(pb):
    from centralita.crm.v1 import crm_pb2, crm_pb2_grpc
    from centralita.reporting.v1 import reporting_pb2, reporting_pb2_grpc
    from centralita.sessions.v1 import sessions_pb2, sessions_pb2_grpc

    class M:
        c, cg = crm_pb2, crm_pb2_grpc
        r, rg = reporting_pb2, reporting_pb2_grpc
        s, sg = sessions_pb2, sessions_pb2_grpc
        t = pb.tenancy

    return M


class CuttableProxy:
    """A TCP forwarder to `target` that the test can cut: every open connection is closed and
    new ones are refused (accepted and closed at once) until `restore`. The browser reaches
    sessions through it, so its agent stream really drops."""

    def __init__(self, target):
        host, port = target.rsplit(":", 1)
        self.target = (host, int(port))
        self.server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}"
        self.refusing = False
        self.open = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            if self.refusing:
                client.close()
                continue
            upstream = socket.create_connection(self.target)
            with self.lock:
                self.open += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src, dst):
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        for sock in (src, dst):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self):
        self.refusing = True
        with self.lock:
            socks, self.open = self.open, []
        for sock in socks:
            try:
                sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            except OSError:
                pass

    def restore(self):
        self.refusing = False

    def close(self):
        self.cut()
        self.server.close()


def console_url():
    out = subprocess.run([str(REPO / "deploy/local/services.sh"), "console-url"], capture_output=True, text=True,
                         timeout=30, check=True)
    return out.stdout.strip()


def manifest(tenant, queue, display):
    q = f"id: {queue}, displayName: {display}, offerTimeoutSeconds: 60, afterContactWorkSeconds: 300"
    return tenant_manifest(tenant, q, display=f"Console {tenant}", channels="chat", away_reasons="break, training")


# The wallboard's formatting (services/console/src/format.ts), to compare with the API.
def fmt_duration(seconds):
    s = max(0, round(seconds))
    h, m, sec = s // 3600, (s % 3600) // 60, s % 60
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


def fmt_optional(msg, field, f):
    return f(getattr(msg, field)) if msg.HasField(field) else "—"


def fmt_percent(v):
    return f"{v:.1f} %"


def expected_row(q):
    t = q.today
    return {
        "waiting": str(q.waiting),
        "answered": str(t.answered),
        "service-level": fmt_optional(t, "service_level_percent", fmt_percent),
        "asa": fmt_optional(t, "asa_seconds", fmt_duration),
        "aht": fmt_optional(t, "aht_seconds", fmt_duration),
        "abandon-rate": fmt_optional(t, "abandon_rate_percent", fmt_percent),
        "agents-available": str(q.agents.available),
        "agents-busy": str(q.agents.busy),
        "agents-away": str(q.agents.away),
        "agents-offline": str(q.agents.offline),
    }


def shown_row(page, queue):
    row = page.get_by_test_id(f"wb-{queue}")
    out = {}
    for k in ["waiting", "answered", "asa", "aht", "abandon-rate", "agents-available", "agents-busy",
              "agents-away", "agents-offline"]:
        out[k] = row.get_by_test_id(k).inner_text().strip()
    # The service-level cell also shows the target after the figure.
    out["service-level"] = row.get_by_test_id("service-level").inner_text().split("/")[0].strip()
    return out


def sign_in(page, url, tenant, role, agent_id=None):
    """Development sign-in; returns the response of the console's page."""
    response = page.goto(url)
    page.get_by_test_id("tenant").fill(tenant)
    page.get_by_test_id("role").select_option(role)
    if agent_id:
        page.get_by_test_id("agent-id").fill(agent_id)
    page.get_by_test_id("sign-in").click()
    return response


def test_agent_desktop_and_wallboard_in_a_browser(m, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    eps = endpoints()
    url = console_url()
    run = uuid.uuid4().hex[:8]
    tenant, other = f"con-{run}", f"con-{run}-b"
    queue, other_queue = "support", "claims"
    path = tmp_path / "tenants.yaml"
    path.write_text(manifest(tenant, queue, "Support") + "---\n" + manifest(other, other_queue, "Claims B"))
    cli("admin", "tenant", "apply", "-f", str(path))
    s, c, r = m.s, m.c, m.r
    bpo = mint("--role", "bpo_admin")
    admin, channel = mint("--tenant", tenant, "--role", "tenant_admin"), mint("--tenant", tenant, "--role", "channel")
    supervisor = mint("--tenant", tenant, "--role", "supervisor")
    other_channel = mint("--tenant", other, "--role", "channel")
    sessions, crm_ch, rep_ch = (grpc.insecure_channel(eps[n]) for n in ("sessions", "crm", "reporting"))
    agents, contacts = m.sg.AgentServiceStub(sessions), m.sg.ContactServiceStub(sessions)
    crm, reporting = m.cg.CustomerServiceStub(crm_ch), m.rg.ReportingServiceStub(rep_ch)

    def known():
        try:
            for tok in (admin, mint("--tenant", other, "--role", "tenant_admin")):
                contacts.ListQueueStats(s.ListQueueStatsRequest(), metadata=auth(tok), timeout=5)
            reporting.GetRealtimeMetrics(r.GetRealtimeMetricsRequest(), metadata=auth(supervisor), timeout=5)
            crm.FindCustomers(c.FindCustomersRequest(identity=c.Identity(kind=c.IDENTITY_KIND_CHAT, value="x")),
                              metadata=auth(admin), timeout=5)
            return True
        except grpc.RpcError:
            return False

    assert wait_for(known, 60), "sessions, reporting or crm never saw the tenants"

    # A known customer (VIP, with a note) and one agent per tenant.
    visitor = f"visitor-{run}"
    customer = crm.ResolveCustomer(c.ResolveCustomerRequest(
        identities=[c.Identity(kind=c.IDENTITY_KIND_CHAT, value=visitor)], display_name="Lucía Gil"),
        metadata=auth(channel), timeout=10).customer
    from google.protobuf import field_mask_pb2
    crm.UpdateCustomer(c.UpdateCustomerRequest(customer=c.Customer(name=customer.name, value_tier=c.VALUE_TIER_VIP),
                                               update_field_mask=field_mask_pb2.FieldMask(paths=["value_tier"])),
                       metadata=auth(admin), timeout=10)
    crm.AddNote(c.AddNoteRequest(customer=customer.name, text="prefers email follow-ups"), metadata=auth(admin),
                timeout=10)
    agent_id, other_agent = f"ana-{run}", f"bob-{run}"
    chat = s.ChannelCapacity(channel=m.t.CHANNEL_CHAT, max_contacts=1, exclusive=False)
    for a, t, q in ((agent_id, tenant, queue), (other_agent, other, other_queue)):
        agents.UpsertAgent(s.UpsertAgentRequest(agent=s.Agent(
            name=f"agents/{a}", display_name=a, capacity=[chat], queues=[s.QueueAssignment(tenant=t, queue=q)])),
            metadata=auth(bpo), timeout=10)

    # Every event of the agent stream carries the server's clock, which the desktop counts
    # offers down on.
    stream = agents.StreamAgentEvents(s.StreamAgentEventsRequest(name=f"agents/{agent_id}"),
                                      metadata=auth(mint("--tenant", tenant, "--role", "agent", "--agent-id", agent_id)),
                                      timeout=10)
    first_event = next(iter(stream))
    stream.cancel()
    assert first_event.WhichOneof("event") == "agent" and first_event.HasField("send_time")
    assert abs(first_event.send_time.ToMilliseconds() / 1000 - time.time()) < 10, first_event.send_time

    def create(tok, q, ident, request_id):
        return contacts.CreateContact(s.CreateContactRequest(contact=s.Contact(
            channel=m.t.CHANNEL_CHAT, queue=q, customer_identities=[c.Identity(kind=c.IDENTITY_KIND_CHAT, value=ident)]),
            request_id=request_id), metadata=auth(tok), timeout=10)

    # An earlier contact of the same customer, abandoned (the customer hung up in the queue):
    # the screen-pop lists it among the recent interactions.
    earlier = create(channel, queue, visitor, f"{run}-0")
    contacts.EndContact(s.EndContactRequest(name=earlier.name), metadata=auth(channel), timeout=10)

    SHOTS.mkdir(parents=True, exist_ok=True)
    proxy = CuttableProxy(eps["sessions"])
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            # The agent's page calls sessions through the test's proxy, which the console's
            # Content-Security-Policy (connect-src: the configured endpoints) would block; the
            # supervisor's page below runs under the policy.
            ctx = browser.new_context(viewport={"width": 1280, "height": 860}, locale="en-GB", bypass_csp=True)
            page = ctx.new_page()

            # The agent's browser reaches sessions through a proxy the test can cut.
            def via_proxy(route):
                resp = route.fetch()
                body = resp.json()
                body["endpoints"]["sessions"] = proxy.url
                route.fulfill(response=resp, json=body)

            page.route("**/api/config", via_proxy)
            sign_in(page, url, tenant, "agent", agent_id)
            # Shown as what it is.
            expect(page.get_by_text("Development sign-in").first).to_be_visible()
            expect(page.get_by_test_id("stream-status")).to_have_text("connected", timeout=20_000)
            expect(page.get_by_test_id("agent-state")).to_have_text("Signed out")
            expect(page.get_by_test_id("who")).to_contain_text("Europe/Madrid")

            # Spanish, kept for this user across a reload; then back to English.
            page.get_by_test_id("lang").select_option("es")
            expect(page.get_by_test_id("agent-state")).to_have_text("Desconectado")
            page.reload()
            expect(page.get_by_test_id("agent-state")).to_have_text("Desconectado", timeout=20_000)
            # Signing in again (the sign-in page follows the browser: English) brings the user's
            # Spanish back.
            page.get_by_text("Salir de la consola").click()
            sign_in(page, url, tenant, "agent", agent_id)
            expect(page.get_by_test_id("agent-state")).to_have_text("Desconectado", timeout=20_000)
            page.get_by_test_id("lang").select_option("en")
            expect(page.get_by_test_id("agent-state")).to_have_text("Signed out")

            page.get_by_test_id("go-available").click()
            expect(page.get_by_test_id("agent-state")).to_have_text("Available", timeout=10_000)
            assert agents.GetAgent(s.GetAgentRequest(name=f"agents/{agent_id}"), metadata=auth(admin),
                                   timeout=10).state == s.AGENT_STATE_AVAILABLE

            # Tenant B's contact is never offered to tenant A's agent.
            create(other_channel, other_queue, f"b-visitor-{run}", f"{run}-b")
            time.sleep(3)
            expect(page.get_by_test_id("no-contacts")).to_be_visible()
            assert page.get_by_test_id("offer").count() == 0

            # The connection drops; an offer made meanwhile appears once it is back.
            proxy.cut()
            expect(page.get_by_test_id("stream-status")).to_have_text("reconnecting…", timeout=20_000)
            contact = create(channel, queue, visitor, f"{run}-a")
            time.sleep(2)
            proxy.restore()
            expect(page.get_by_test_id("stream-status")).to_have_text("connected", timeout=30_000)
            def offered():
                got = contacts.GetContact(s.GetContactRequest(name=contact.name), metadata=auth(admin), timeout=10)
                return got.state == s.CONTACT_STATE_OFFERED and got.agent_id == agent_id

            assert wait_for(offered, 30), (
                contacts.GetContact(s.GetContactRequest(name=contact.name), metadata=auth(admin), timeout=10),
                agents.GetAgent(s.GetAgentRequest(name=f"agents/{agent_id}"), metadata=auth(admin), timeout=10))
            offer = page.get_by_test_id("offer")
            expect(offer).to_be_visible(timeout=30_000)
            expect(offer.get_by_test_id("offer-queue")).to_have_text(queue)

            # The countdown is visible and counts down (the offer timeout is 60 s).
            countdown = offer.get_by_test_id("offer-countdown")
            first = int(re.fullmatch(r"(\d+) s", countdown.inner_text()).group(1))
            assert 0 < first <= 60, first
            time.sleep(2.2)
            later = int(re.fullmatch(r"(\d+) s", countdown.inner_text()).group(1))
            assert 1 <= first - later <= 4, (first, later)

            page.get_by_test_id("accept").click()
            card = page.get_by_test_id("contact")
            expect(card).to_be_visible(timeout=15_000)
            expect(card.get_by_test_id("customer-name")).to_have_text("Lucía Gil", timeout=15_000)
            expect(card.get_by_test_id("customer-tier")).to_have_text("VIP")
            expect(card.get_by_test_id("customer-notes")).to_contain_text("prefers email follow-ups")
            expect(card.get_by_test_id("interactions")).to_contain_text("abandoned")
            page.screenshot(path=str(SHOTS / "console-agent-desktop.png"), full_page=True)

            card.get_by_test_id("end-contact").click()
            wrap = page.get_by_test_id("wrap-up")
            expect(wrap).to_be_visible(timeout=15_000)
            wrap.get_by_test_id("disposition").select_option("resolved")
            wrap.get_by_test_id("wrap-up-notes").fill("sent the policy by email")
            wrap.get_by_test_id("submit-wrap-up").click()
            expect(page.get_by_test_id("no-contacts")).to_be_visible(timeout=15_000)
            closed = contacts.GetContact(s.GetContactRequest(name=contact.name), metadata=auth(admin), timeout=10)
            assert closed.state == s.CONTACT_STATE_CLOSED and closed.disposition == "resolved"
            assert other not in page.content() and "Claims B" not in page.content()

            # Reject: the offer goes away from the desktop (and back to the queue).
            second = create(channel, queue, visitor, f"{run}-c")
            expect(page.get_by_test_id("offer")).to_be_visible(timeout=30_000)
            first_offer = contacts.GetContact(s.GetContactRequest(name=second.name), metadata=auth(admin),
                                              timeout=10).offer_id
            assert first_offer
            page.get_by_test_id("reject").click()

            def rejected():
                got = contacts.GetContact(s.GetContactRequest(name=second.name), metadata=auth(admin), timeout=10)
                return got.offer_id != first_offer

            assert wait_for(rejected, 15), "the reject did not reach sessions"
            # Away with one of the tenant's reasons (no more offers), then the customer hangs up.
            page.get_by_test_id("away-reason").select_option("training")
            page.get_by_test_id("go-away").click()
            expect(page.get_by_test_id("agent-state")).to_have_text("Away", timeout=10_000)
            me = agents.GetAgent(s.GetAgentRequest(name=f"agents/{agent_id}"), metadata=auth(admin), timeout=10)
            assert (me.state, me.away_reason) == (s.AGENT_STATE_AWAY, "training")
            contacts.EndContact(s.EndContactRequest(name=second.name), metadata=auth(channel), timeout=10)
            expect(page.get_by_test_id("no-contacts")).to_be_visible(timeout=30_000)

            # The supervisor's wallboard shows what reporting's API says.
            sup = browser.new_context(viewport={"width": 1280, "height": 560}, locale="en-GB").new_page()
            csp = sign_in(sup, url, tenant, "supervisor").headers["content-security-policy"]
            assert "connect-src 'self' " in csp and eps["reporting"] in csp and "frame-ancestors 'none'" in csp, csp
            expect(sup.get_by_test_id(f"wb-{queue}")).to_be_visible(timeout=20_000)

            def same_figures():
                metrics = reporting.GetRealtimeMetrics(r.GetRealtimeMetricsRequest(), metadata=auth(supervisor),
                                                       timeout=10)
                api = [q for q in metrics.queues if q.queue == queue]
                if not api or api[0].today.answered < 1:
                    return False
                return shown_row(sup, queue) == expected_row(api[0])

            assert wait_for(same_figures, 30, interval=0.5), (
                shown_row(sup, queue), [expected_row(q) for q in reporting.GetRealtimeMetrics(
                    r.GetRealtimeMetricsRequest(), metadata=auth(supervisor), timeout=10).queues])
            expect(sup.get_by_test_id(f"wb-{queue}").get_by_test_id("sl-target")).to_have_text("80.0 %")
            # Nothing of tenant B: its queue and name are not on A's wallboard.
            assert sup.get_by_test_id(f"wb-{other_queue}").count() == 0
            assert other not in sup.content() and "Claims B" not in sup.content()
            sup.screenshot(path=str(SHOTS / "console-wallboard.png"), full_page=True)
        finally:
            browser.close()
            proxy.close()

    # A's agent token, as the browser holds it, reaches nothing of B through the same APIs.
    a_token = mint("--tenant", tenant, "--role", "agent", "--agent-id", agent_id)
    with pytest.raises(grpc.RpcError) as denied:
        reporting.GetRealtimeMetrics(r.GetRealtimeMetricsRequest(tenant=other), metadata=auth(a_token), timeout=10)
    assert denied.value.code() in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.NOT_FOUND)
