"""The supervisor's console beyond the wallboard, in a real browser (Debian's Chromium driven
by Playwright) against the services `deploy/local/test.sh` started.

Contacts go through the real services (an agent over gRPC answers one at once and one after
the queue's 2-second service-level threshold), then the supervisor's pages are compared with
the APIs at the same moment: the agent list (state, away reason, the contact held, occupancy)
with sessions' ListAgents and reporting's live agent figures; the wallboard's last-15-minute
columns with GetRealtimeMetrics; the day's service-level chart (a bar per judged interval,
breaching ones marked) with GetSlaCompliance; the CSV the page downloads with
ExportHistoryCsv byte for byte. The Erlang C calculator is checked against the worked example
in the metric definitions (an independent table, not our code's output). Tenant B's queue,
agent and figures appear nowhere, and A's supervisor token is refused B's.
"""
import datetime
import time
import uuid
from zoneinfo import ZoneInfo

import grpc
import pytest
from google.protobuf import timestamp_pb2

from conftest import auth, cli, endpoints, mint, tenant_manifest, wait_for
from test_console import CHROMIUM, SHOTS, console_url, fmt_percent, m, sign_in  # noqa: F401 (m: the module's stubs)

ZONE = "Europe/Madrid"


def pct(msg, field):
    return fmt_percent(getattr(msg, field)) if msg.HasField(field) else "—"


def test_supervisor_agent_list_sla_chart_csv_and_staffing(m, tmp_path):  # noqa: F811
    from playwright.sync_api import expect, sync_playwright

    s, r = m.s, m.r
    eps = endpoints()
    run = uuid.uuid4().hex[:8]
    tenant, other = f"sup-{run}", f"sup-{run}-b"
    queue = "id: support, displayName: Support, serviceLevelSeconds: 2, offerTimeoutSeconds: 60, afterContactWorkSeconds: 300"
    path = tmp_path / "tenants.yaml"
    path.write_text(tenant_manifest(tenant, queue, display=f"Supervisor {tenant}", channels="chat",
                                    time_zone=ZONE, away_reasons="break, training")
                    + "---\n" + tenant_manifest(other, "id: claims, displayName: Claims B", display="Other B",
                                                channels="chat"))
    cli("admin", "tenant", "apply", "-f", str(path))
    bpo, admin = mint("--role", "bpo_admin"), mint("--tenant", tenant, "--role", "tenant_admin")
    channel, supervisor = mint("--tenant", tenant, "--role", "channel"), mint("--tenant", tenant, "--role", "supervisor")
    sessions, rep = grpc.insecure_channel(eps["sessions"]), grpc.insecure_channel(eps["reporting"])
    agents, contacts = m.sg.AgentServiceStub(sessions), m.sg.ContactServiceStub(sessions)
    reporting, staffing = m.rg.ReportingServiceStub(rep), m.rg.StaffingServiceStub(rep)

    def known():
        try:
            for tok in (admin, mint("--tenant", other, "--role", "tenant_admin")):
                contacts.ListQueueStats(s.ListQueueStatsRequest(), metadata=auth(tok), timeout=5)
            reporting.GetRealtimeMetrics(r.GetRealtimeMetricsRequest(), metadata=auth(supervisor), timeout=5)
            return True
        except grpc.RpcError:
            return False

    assert wait_for(known, 60), "sessions or reporting never saw the tenants"
    ana, bea, zed = f"ana-{run}", f"bea-{run}", f"zed-{run}"
    chat = s.ChannelCapacity(channel=m.t.CHANNEL_CHAT, max_contacts=1, exclusive=False)
    for agent, t, q in ((ana, tenant, "support"), (bea, tenant, "support"), (zed, other, "claims")):
        agents.UpsertAgent(s.UpsertAgentRequest(agent=s.Agent(
            name=f"agents/{agent}", display_name=agent.split("-")[0].title(), capacity=[chat],
            queues=[s.QueueAssignment(tenant=t, queue=q)])), metadata=auth(bpo), timeout=10)
    tok = {a: mint("--tenant", t, "--role", "agent", "--agent-id", a) for a, t in ((ana, tenant), (bea, tenant), (zed, other))}
    agents.SignIn(s.SignInRequest(name=f"agents/{ana}", available=True), metadata=auth(tok[ana]), timeout=10)
    agents.SignIn(s.SignInRequest(name=f"agents/{bea}", available=False), metadata=auth(tok[bea]), timeout=10)
    agents.SetAgentState(s.SetAgentStateRequest(name=f"agents/{bea}", state=s.AGENT_STATE_AWAY, away_reason="break"),
                         metadata=auth(tok[bea]), timeout=10)
    agents.SignIn(s.SignInRequest(name=f"agents/{zed}", available=True), metadata=auth(tok[zed]), timeout=10)

    def get(name):
        return contacts.GetContact(s.GetContactRequest(name=name), metadata=auth(admin), timeout=10)

    def create(tag):
        return contacts.CreateContact(s.CreateContactRequest(contact=s.Contact(
            channel=m.t.CHANNEL_CHAT, queue="support",
            customer_identities=[m.c.Identity(kind=m.c.IDENTITY_KIND_CHAT, value=f"v-{run}-{tag}")]),
            request_id=f"{run}-{tag}"), metadata=auth(channel), timeout=10)

    def accept(contact):
        assert wait_for(lambda: get(contact.name).state == s.CONTACT_STATE_OFFERED, 30), get(contact.name)
        offered = get(contact.name)
        assert offered.agent_id == ana, offered
        contacts.AcceptContact(s.AcceptContactRequest(name=contact.name, offer_id=offered.offer_id),
                               metadata=auth(tok[ana]), timeout=10)

    def finish(contact):
        contacts.EndContact(s.EndContactRequest(name=contact.name), metadata=auth(tok[ana]), timeout=10)
        contacts.WrapUpContact(s.WrapUpContactRequest(name=contact.name, disposition="resolved"),
                               metadata=auth(tok[ana]), timeout=10)

    # B's queue gets a contact of its own: none of it may show on A's pages.
    b_contact = contacts.CreateContact(s.CreateContactRequest(contact=s.Contact(
        channel=m.t.CHANNEL_CHAT, queue="claims",
        customer_identities=[m.c.Identity(kind=m.c.IDENTITY_KIND_CHAT, value=f"b-{run}")]),
        request_id=f"{run}-b"), metadata=auth(mint("--tenant", other, "--role", "channel")), timeout=10)
    # B's agent is offered it (never A's) and takes it.
    assert wait_for(lambda: get_b(contacts, s, b_contact, other).state == s.CONTACT_STATE_OFFERED, 30)
    b_offered = get_b(contacts, s, b_contact, other)
    assert b_offered.agent_id == zed, b_offered
    contacts.AcceptContact(s.AcceptContactRequest(name=b_contact.name, offer_id=b_offered.offer_id),
                           metadata=auth(tok[zed]), timeout=10)

    zone = ZoneInfo(ZONE)
    midnight = datetime.datetime.now(zone).replace(hour=0, minute=0, second=0, microsecond=0)
    next_midnight = (midnight + datetime.timedelta(hours=36)).replace(hour=0)
    start, end = timestamp_pb2.Timestamp(), timestamp_pb2.Timestamp()
    start.FromDatetime(midnight.astimezone(datetime.timezone.utc))
    end.FromDatetime(next_midnight.astimezone(datetime.timezone.utc))

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            ctx = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-GB", accept_downloads=True)
            page = ctx.new_page()
            sign_in(page, console_url(), tenant, "supervisor")
            expect(page.get_by_test_id("wallboard")).to_be_visible(timeout=20_000)

            # The agent list: states from the live figures, the held contact from sessions.
            page.get_by_test_id("tab-agents").click()
            row_a, row_b = page.get_by_test_id(f"agent-{ana}"), page.get_by_test_id(f"agent-{bea}")
            expect(row_a.get_by_test_id("activity")).to_have_text("Available", timeout=20_000)
            expect(row_b.get_by_test_id("activity")).to_have_text("Away · break", timeout=20_000)
            first = create("1")
            accept(first)
            first_id = first.name.rsplit("/", 1)[1]
            expect(row_a.get_by_test_id("activity")).to_have_text("Busy", timeout=20_000)
            expect(row_a.get_by_test_id("contacts")).to_have_text(first_id, timeout=10_000)
            listed = {a.name: a for a in agents.ListAgents(s.ListAgentsRequest(page_size=100), metadata=auth(supervisor),
                                                           timeout=10).agents}
            assert listed[f"agents/{ana}"].contacts == [first.name], listed[f"agents/{ana}"]
            assert f"agents/{zed}" not in listed
            page.screenshot(path=str(SHOTS / "console-supervisor-agents.png"), full_page=True)

            # A second customer waits past the 2-second threshold while Ana is busy.
            second = create("2")
            time.sleep(3.5)
            finish(first)
            accept(second)
            finish(second)

            # Occupancy on the page is reporting's, at the same moment.
            def same_occupancy():
                live = reporting.GetRealtimeMetrics(r.GetRealtimeMetricsRequest(), metadata=auth(supervisor), timeout=10)
                mine = [a for a in live.agents if a.agent == ana]
                if not mine or not mine[0].today.HasField("occupancy_percent"):
                    return False
                return (row_a.get_by_test_id("occupancy-today").inner_text().strip(),
                        row_a.get_by_test_id("occupancy-15m").inner_text().strip()) == (
                    pct(mine[0].today, "occupancy_percent"), pct(mine[0].rolling_15m, "occupancy_percent"))

            assert wait_for(same_occupancy, 30, interval=0.5)
            assert zed not in page.content() and "Claims B" not in page.content()

            # The wallboard's last-15-minute columns are reporting's.
            page.get_by_test_id("tab-wallboard").click()
            wb = page.get_by_test_id("wb-support")

            def same_rolling():
                live = reporting.GetRealtimeMetrics(r.GetRealtimeMetricsRequest(), metadata=auth(supervisor), timeout=10)
                q = [x for x in live.queues if x.queue == "support"]
                if not q or q[0].rolling_15m.answered < 2:
                    return False
                return (wb.get_by_test_id("service-level-15m").inner_text().strip(),
                        wb.get_by_test_id("occupancy-15m").inner_text().strip()) == (
                    pct(q[0].rolling_15m, "service_level_percent"), pct(q[0].agents_rolling_15m, "occupancy_percent"))

            assert wait_for(same_rolling, 30, interval=0.5)
            # One answered within 2 s, one after: 50 % against the 80 % target, marked breached.
            expect(wb.get_by_test_id("service-level-15m")).to_have_text("50.0 %")
            assert "sl-breached" in wb.get_by_test_id("service-level-15m").get_attribute("class")

            # The day's chart: one bar per judged interval, breaching ones as reporting says.
            page.get_by_test_id("tab-sla").click()
            chart = page.get_by_test_id("sla-support")

            def sla():
                got = reporting.GetSlaCompliance(r.GetSlaComplianceRequest(start_time=start, end_time=end),
                                                 metadata=auth(supervisor), timeout=10)
                return [q for q in got.queues if q.queue == "support"]

            assert wait_for(lambda: sla() and sla()[0].breaches, 40), sla()
            q = sla()[0]
            judged = [i for i in q.intervals if i.HasField("achieved_percent")]
            expect(chart.get_by_test_id("sla-breaches")).to_have_text(str(len(q.breaches)), timeout=20_000)
            expect(chart.get_by_test_id("bar-breached")).to_have_count(len(q.breaches))
            expect(chart.get_by_test_id("bar-met")).to_have_count(len(judged) - len(q.breaches))
            expect(chart.get_by_test_id("sla-day-achieved")).to_have_text(pct(q.days[0], "achieved_percent"))
            expect(chart.get_by_test_id("sla-target")).to_have_text("80.0 %")
            breached_starts = {b.period_start.ToDatetime().strftime("%Y-%m-%dT%H:%M:%S.000Z") for b in q.breaches}
            shown = {chart.get_by_test_id("bar-breached").nth(i).get_attribute("data-start")
                     for i in range(len(q.breaches))}
            assert shown == breached_starts, (shown, breached_starts)
            assert page.get_by_test_id("sla-claims").count() == 0
            page.screenshot(path=str(SHOTS / "console-supervisor-sla.png"), full_page=True)

            # The CSV the page downloads is the API's export for the same day, byte for byte.
            with page.expect_download() as download:
                page.get_by_test_id("export-csv").click()
            got = open(download.value.path(), encoding="utf-8", newline="").read()
            want = reporting.ExportHistoryCsv(r.ExportHistoryCsvRequest(query=r.QueryHistoryRequest(
                start_time=start, end_time=end, granularity=r.GRANULARITY_INTERVAL, group_by=[r.DIMENSION_QUEUE])),
                metadata=auth(supervisor), timeout=10).csv
            assert got == want, (got, want)
            assert "support" in got and "claims" not in got
            assert download.value.suggested_filename == f"{tenant}-{midnight.astimezone(datetime.timezone.utc):%Y-%m-%d}.csv"

            # Erlang C: the worked example of the metric definitions (λ = 0.2/s, AHT 240 s,
            # 15 s): 55 agents for 80 % (84.6 %, 87.3 % occupancy); an 85 % occupancy cap
            # raises it to 57 (84.2 %).
            page.get_by_test_id("tab-staffing").click()
            for field, value in (("arrivalsPerHour", "720"), ("ahtSeconds", "240"), ("thresholdSeconds", "15"),
                                 ("targetPercent", "80"), ("maxOccupancyPercent", "")):
                page.get_by_test_id(f"st-{field}").fill(value)
            page.get_by_test_id("compute-staffing").click()
            expect(page.get_by_test_id("st-agents")).to_have_text("55", timeout=10_000)
            expect(page.get_by_test_id("st-load")).to_have_text("48.00")
            expect(page.get_by_test_id("st-sl")).to_have_text("84.6 %")
            expect(page.get_by_test_id("st-occupancy")).to_have_text("87.3 %")
            assert page.get_by_test_id("st-capped").count() == 0
            page.get_by_test_id("st-maxOccupancyPercent").fill("85")
            page.get_by_test_id("compute-staffing").click()
            expect(page.get_by_test_id("st-agents")).to_have_text("57", timeout=10_000)
            expect(page.get_by_test_id("st-occupancy")).to_have_text("84.2 %")
            expect(page.get_by_test_id("st-capped")).to_have_text("55 → 57")
            page.screenshot(path=str(SHOTS / "console-supervisor-staffing.png"), full_page=True)
            # A target of 100 % is refused in the page, before any call.
            page.get_by_test_id("st-targetPercent").fill("100")
            page.get_by_test_id("compute-staffing").click()
            expect(page.get_by_test_id("staffing-invalid")).to_be_visible()
            assert page.get_by_test_id("staffing-result").count() == 0

            # Spanish labels on the same pages.
            page.get_by_test_id("lang").select_option("es")
            expect(page.get_by_test_id("tab-agents")).to_have_text("Agentes")
            expect(page.get_by_test_id("tab-staffing")).to_have_text("Dimensionamiento (Erlang C)")
            assert other not in page.content()
        finally:
            browser.close()

    # A's supervisor token (the browser's) reaches none of B's figures.
    for call, req in ((reporting.GetSlaCompliance, r.GetSlaComplianceRequest(tenant=other, start_time=start, end_time=end)),
                      (reporting.ExportHistoryCsv, r.ExportHistoryCsvRequest(query=r.QueryHistoryRequest(
                          tenant=other, start_time=start, end_time=end, granularity=r.GRANULARITY_INTERVAL))),
                      (reporting.GetRealtimeMetrics, r.GetRealtimeMetricsRequest(tenant=other))):
        with pytest.raises(grpc.RpcError) as denied:
            call(req, metadata=auth(supervisor), timeout=10)
        assert denied.value.code() in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.NOT_FOUND), call
    # B's contact stayed with B's agent, and A's supervisor cannot read it.
    assert get_b(contacts, s, b_contact, other).agent_id == zed
    with pytest.raises(grpc.RpcError) as denied:
        contacts.GetContact(s.GetContactRequest(name=b_contact.name), metadata=auth(supervisor), timeout=10)
    assert denied.value.code() in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.NOT_FOUND)


def get_b(contacts, s, contact, other):
    return contacts.GetContact(s.GetContactRequest(name=contact.name),
                               metadata=auth(mint("--tenant", other, "--role", "tenant_admin")), timeout=10)


def test_supervisor_listens_whispers_barges_and_stops_from_the_agent_list(m, tmp_path):  # noqa: F811
    """The supervisor's call controls drive sessions' MonitorContact / StopMonitoring (media's
    side, the supervisor's phone in the call's mixer, is test_voice_conference.py's): on a
    connected voice call only, each click read back from sessions; tenant B's supervisor can
    neither see nor join A's call."""
    from playwright.sync_api import expect, sync_playwright

    s = m.s
    eps = endpoints()
    run = uuid.uuid4().hex[:8]
    tenant, other = f"mon-{run}", f"mon-{run}-b"
    path = tmp_path / "tenants.yaml"
    path.write_text(tenant_manifest(tenant, "id: support, displayName: Support, offerTimeoutSeconds: 60",
                                    display=f"Monitor {tenant}", channels="voice, chat")
                    + "---\n" + tenant_manifest(other, "id: claims, displayName: Claims B", display="Other B"))
    cli("admin", "tenant", "apply", "-f", str(path))
    bpo, admin = mint("--role", "bpo_admin"), mint("--tenant", tenant, "--role", "tenant_admin")
    channel, other_supervisor = mint("--tenant", tenant, "--role", "channel"), mint("--tenant", other, "--role", "supervisor")
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
    ana = f"ana-{run}"
    agents.UpsertAgent(s.UpsertAgentRequest(agent=s.Agent(
        name=f"agents/{ana}", display_name="Ana",
        # Voice not exclusive, so the same agent also holds a chat (which gets no controls).
        capacity=[s.ChannelCapacity(channel=m.t.CHANNEL_VOICE, max_contacts=1, exclusive=False),
                  s.ChannelCapacity(channel=m.t.CHANNEL_CHAT, max_contacts=1)],
        queues=[s.QueueAssignment(tenant=tenant, queue="support")])), metadata=auth(bpo), timeout=10)
    ana_token = mint("--tenant", tenant, "--role", "agent", "--agent-id", ana)
    agents.SignIn(s.SignInRequest(name=f"agents/{ana}", available=True), metadata=auth(ana_token), timeout=10)

    def get(name):
        return contacts.GetContact(s.GetContactRequest(name=name), metadata=auth(admin), timeout=10)

    def take(channel_kind, identity):
        c = contacts.CreateContact(s.CreateContactRequest(contact=s.Contact(
            channel=channel_kind, queue="support", customer_identities=[identity]),
            request_id=f"{run}-{channel_kind}"), metadata=auth(channel), timeout=10)
        assert wait_for(lambda: get(c.name).state == s.CONTACT_STATE_OFFERED, 30), get(c.name)
        offered = get(c.name)
        contacts.AcceptContact(s.AcceptContactRequest(name=c.name, offer_id=offered.offer_id),
                               metadata=auth(ana_token), timeout=10)
        return c

    call = take(m.t.CHANNEL_VOICE, m.c.Identity(kind=m.c.IDENTITY_KIND_PHONE, value=f"+3491{int(run, 16) % 10**7:07d}"))
    chat = take(m.t.CHANNEL_CHAT, m.c.Identity(kind=m.c.IDENTITY_KIND_CHAT, value=f"v-{run}"))
    call_id, chat_id = call.name.rsplit("/", 1)[1], chat.name.rsplit("/", 1)[1]

    # Tenant B's supervisor cannot join A's call.
    with pytest.raises(grpc.RpcError) as denied:
        contacts.MonitorContact(s.MonitorContactRequest(name=call.name, mode=s.MONITOR_MODE_LISTEN),
                                metadata=auth(other_supervisor), timeout=10)
    assert denied.value.code() == grpc.StatusCode.NOT_FOUND, denied.value

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-GB").new_page()
            sign_in(page, console_url(), tenant, "supervisor")
            expect(page.get_by_test_id("wallboard")).to_be_visible(timeout=20_000)
            page.get_by_test_id("tab-agents").click()
            row = page.get_by_test_id(f"agent-{ana}")
            controls = row.get_by_test_id(f"monitor-{call_id}")
            expect(controls.get_by_test_id("monitor-listen")).to_be_visible(timeout=20_000)
            # A chat is not a call: no controls on it.
            expect(row.get_by_text(chat_id)).to_be_visible()
            expect(row.get_by_test_id(f"monitor-{chat_id}")).to_have_count(0)

            seen = {}
            for mode, wanted in (("listen", s.MONITOR_MODE_LISTEN), ("whisper", s.MONITOR_MODE_WHISPER),
                                 ("barge", s.MONITOR_MODE_BARGE)):
                controls.get_by_test_id(f"monitor-{mode}").click()
                expect(controls.get_by_test_id("monitor-mode")).to_have_attribute("data-mode", mode, timeout=10_000)
                monitor = get(call.name).monitor
                assert monitor.mode == wanted, monitor
                seen[mode] = monitor.supervisor
                expect(controls.get_by_test_id("monitor-mode")).to_contain_text(monitor.supervisor)
                if mode == "whisper":
                    page.screenshot(path=str(SHOTS / "console-supervisor-monitor.png"), full_page=True)
            assert len(set(seen.values())) == 1 and seen["listen"], seen
            controls.get_by_test_id("monitor-stop").click()
            expect(controls.get_by_test_id("monitor-mode")).to_have_count(0, timeout=10_000)
            assert not get(call.name).HasField("monitor")
            # Nothing of tenant B on A's page.
            assert "Claims B" not in page.content()
        finally:
            browser.close()
